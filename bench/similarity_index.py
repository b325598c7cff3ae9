"""FindSimilar at 10^6 windows: the store's exact numpy scan against approximate indexes (faiss IVF).

    .venv/bin/python -m bench.similarity_index                      # 10^6 vectors
    .venv/bin/python -m bench.similarity_index --windows 200000 --nlist 512

bench/api_latency.py times FindSimilar through gRPC on a real store; this one isolates the search
itself on the same kind of vectors (256-d unit vectors around 500 random centres, as api_latency
stores) so index choices can be compared: build time, ms per k=10 query (median / p99 of
``--queries``), recall@10 against the exact answer, and the memory each holds. The store uses the
exact scan below ``similarity.exact_below`` windows and IVF-SQ8 above (service/store/similarity_index.py);
when ``import faiss`` fails only the exact scan is measured.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench.api_latency import DIM, clustered_unit_vectors
from bench.host import load_average, machine

REPO = Path(__file__).resolve().parents[1]

K = 10


def exact_top_k(matrix: np.ndarray, query: np.ndarray, k: int = K) -> np.ndarray:
    """Row indices of the k largest inner products (what `EventStore.nearest` computes, as cosine)."""
    scores = matrix @ query
    top = np.argpartition(-scores, k)[:k]
    return top[np.argsort(-scores[top])]


def timed_queries(search, queries: np.ndarray) -> tuple[list[float], list[np.ndarray]]:
    """Milliseconds and answers of ``search(query)`` for every query."""
    times, answers = [], []
    for query in queries:
        start = time.perf_counter()
        answers.append(search(query))
        times.append((time.perf_counter() - start) * 1000)
    return times, answers


def recall(answers: list[np.ndarray], truth: list[np.ndarray]) -> float:
    """Mean fraction of the true k nearest found."""
    return float(np.mean([len(set(a.tolist()) & set(t.tolist())) / len(t) for a, t in zip(answers, truth)]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--nlist", type=int, default=1024, help="IVF lists (about sqrt(windows))")
    parser.add_argument("--threads", type=int, default=1, help="faiss threads (the daemon's search is one request)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(500, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    matrix = np.concatenate([clustered_unit_vectors(rng, min(100_000, args.windows - b), centres)
                             for b in range(0, args.windows, 100_000)]).astype(np.float32)
    queries = clustered_unit_vectors(rng, args.queries, centres).astype(np.float32)
    rows = []
    times, truth = timed_queries(lambda q: exact_top_k(matrix, q), queries)
    rows.append(("exact numpy scan, float32 (the store below its threshold)", 0.0, times, 1.0, matrix.nbytes))
    try:
        import faiss
    except ImportError:
        faiss = None
    if faiss is not None:
        faiss.omp_set_num_threads(args.threads)

        def faiss_search(index, nprobe: int | None = None):
            if nprobe is not None:
                index.nprobe = nprobe
            return lambda q: index.search(q[None], K)[1][0]

        def build(factory: str):
            start = time.perf_counter()
            index = faiss.index_factory(DIM, factory, faiss.METRIC_INNER_PRODUCT)
            if not index.is_trained:
                index.train(matrix[rng.choice(len(matrix), size=min(len(matrix), 40 * args.nlist), replace=False)])
            index.add(matrix)
            return index, time.perf_counter() - start

        def size_of(index) -> int:
            return int(faiss.serialize_index(index).nbytes)

        flat, seconds = build("Flat")
        times, answers = timed_queries(faiss_search(flat), queries)
        rows.append(("faiss Flat (exact)", seconds, times, recall(answers, truth), size_of(flat)))
        del flat
        for factory, probes in ((f"IVF{args.nlist},Flat", (8, 32)), (f"IVF{args.nlist},SQ8", (8, 32))):
            index, seconds = build(factory)
            for nprobe in probes:
                times, answers = timed_queries(faiss_search(index, nprobe), queries)
                rows.append((f"faiss {factory}, nprobe {nprobe}", seconds, times, recall(answers, truth), size_of(index)))
            del index
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; {machine()}; load average {load_average()}; "
          f"{args.windows:,} vectors of {DIM} dims, {args.queries} queries, k={K}, faiss threads {args.threads}"
          + ("" if faiss is not None else "; faiss not importable: exact scan only"))
    print("\n| search | build s | query median / p99 ms | recall@10 | memory MB |\n|---|---|---|---|---|")
    for name, seconds, times, hit, size in rows:
        print(f"| {name} | {seconds:.1f} | {statistics.median(times):.2f} / {np.percentile(times, 99):.2f} | "
              f"{hit:.3f} | {size / 1e6:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
