"""gRPC ListEvents (100 rows) and FindSimilar (k=10) latency with 10^4 and 10^6 stored windows.

    .venv/bin/python -m bench.api_latency                                   # 10^4 and 10^6 windows
    .venv/bin/python -m bench.api_latency --windows 10000 --keep /tmp/rt-api  # keep the stores for reruns
    .venv/bin/python -m bench.api_latency --windows 1000000 --exact-below 2000000  # the exact scan at 10^6

For each size it fills an `EventStore` (in ``--keep`` or a temporary folder; a kept store of the right
size is reused) with windows of 4 microphones, 10 s apart, 256-d float16 embeddings drawn around 500
random "sound" centres (so neighbours exist, as in real recordings), one state change per 10 windows;
then starts the real gRPC server (`start_server`, loopback, the bundled model as backend) and times,
from a gRPC client in this process:

- ListEvents, newest page of 100 (windows and events), and the same filtered to one microphone;
- FindSimilar by a stored window id, k=10: the first call (loads the store's similarity index from
  SQLite, training the faiss IVF index when the store is above ``--exact-below``), the following ones
  (median / p99), the same restricted to one microphone, which index answered (exact or IVF), its
  recall@10 against an exact scan of the stored float16 vectors (computed after the timings, streaming
  the store in chunks), the memory the index holds and the growth of resident memory over the first
  call (higher: it includes what loading and training allocated and the allocator kept).

``--exact-below``, ``--nlist``, ``--nprobe`` and ``--rerank`` are the daemon's ``[similarity]`` keys
(service/store/similarity_index.py). Prints a markdown table with machine, date and load average. Speed
targets live here, not in tests.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import grpc
import numpy as np
from tqdm import tqdm

from bench.host import load_average, machine
from service.config import GrpcConfig, StoreConfig
from service.store.event_store import EventStore
from service.records import StateChange, WindowResult
from service.config import SimilarityIndexConfig
from service.store.similarity_index import unit_rows
from service.rpc import roomtone_pb2 as pb
from service.rpc import roomtone_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[1]

DIM = 256
MICS = 4
LABELS = ("speech", "music", "kitchen", "silence")


def clustered_unit_vectors(rng: np.random.Generator, count: int, centres: np.ndarray) -> np.ndarray:
    """``count`` unit vectors, each a random centre plus noise."""
    picks = rng.integers(0, len(centres), size=count)
    vectors = centres[picks] + rng.normal(scale=0.6 / np.sqrt(DIM), size=(count, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def fill(store: EventStore, total: int, seed: int = 0) -> None:
    """Add windows (and a state change per 10 windows) until the store holds ``total`` windows."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(500, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    have, _ = store.counts()
    batch = 5_000
    with tqdm(total=total, initial=have, desc="fill store", unit="window") as bar:
        for begin in range(have, total, batch):
            count = min(batch, total - begin)
            vectors = clustered_unit_vectors(rng, count, centres)
            windows, changes = [], []
            for i, vector in enumerate(vectors):
                n = begin + i
                start = 1_700_000_000_000 + (n // MICS) * 10_000
                label = LABELS[(n // 40) % len(LABELS)]
                windows.append(WindowResult(f"mic{n % MICS}", start, start + 10_000, label, {label: 0.9, "other": 0.1},
                                            "ok", (), {"clipping": 0.0, "hum": -60.0}, -35.0, vector))
                if n % 10 == 0:
                    changes.append(StateChange("activity_changed", f"mic{n % MICS}", start, "other", label))
            store.add_results(windows, changes)
            bar.update(count)


def timed(call, repeats: int) -> list[float]:
    """Milliseconds of each of ``repeats`` calls."""
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        out.append((time.perf_counter() - start) * 1000)
    return out


def rss_mib() -> float:
    """This process's resident memory."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def exact_neighbours(db_path: Path, query_ids: list[int], k: int = 10, chunk: int = 100_000) -> list[list[int]]:
    """The true k nearest window ids of each query window (itself left out), by an exact scan of the
    stored float16 embeddings read in chunks, so the whole store is never in memory at once."""
    connection = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        marks = ",".join("?" * len(set(query_ids)))
        rows = dict(connection.execute(f"SELECT id, embedding FROM windows WHERE id IN ({marks})", list(set(query_ids))))
        queries = unit_rows(np.stack([np.frombuffer(rows[i], dtype="<f2") for i in query_ids]))
        best_ids = np.zeros((len(query_ids), 0), dtype=np.int64)
        best_scores = np.zeros((len(query_ids), 0), dtype=np.float32)
        cursor = connection.execute("SELECT id, embedding FROM windows WHERE embedding_dim = ? ORDER BY id", (DIM,))
        while part := cursor.fetchmany(chunk):
            ids = np.asarray([row[0] for row in part], dtype=np.int64)
            scores = queries @ unit_rows(np.frombuffer(b"".join(row[1] for row in part), dtype="<f2").reshape(len(part), DIM)).T
            scores[ids[None, :] == np.asarray(query_ids)[:, None]] = -np.inf  # FindSimilar leaves the query out
            best_ids = np.concatenate([best_ids, np.broadcast_to(ids, scores.shape)], axis=1)
            best_scores = np.concatenate([best_scores, scores], axis=1)
            order = np.lexsort((best_ids, -best_scores), axis=1)[:, :k]  # highest score first, ties by id
            best_ids, best_scores = np.take_along_axis(best_ids, order, 1), np.take_along_axis(best_scores, order, 1)
        return [row.tolist() for row in best_ids]
    finally:
        connection.close()


def measure(folder: Path, total: int, repeats: int, model: str, similarity: SimilarityIndexConfig) -> dict:
    """Fill (or reuse) a store of ``total`` windows, serve it, time the calls."""
    from encoder.model_file import load_model
    from service.analysis.analyser import Analyser
    from service.api.daemon_backend import DaemonBackend
    from service.api.event_bus import EventBus
    from service.api.grpc_server import start_server, stop_server

    path = folder / f"api-{total}.db"
    store = EventStore(path, StoreConfig(max_age_days=float("inf"), max_size_mb=1e7), similarity)
    fill(store, total)
    server = start_server(store, EventBus(), DaemonBackend(Analyser(load_model(model))),
                          GrpcConfig(address="127.0.0.1:0"))
    try:
        with grpc.insecure_channel(server.roomtone_address) as channel:
            stub = pb_grpc.RoomtoneStub(channel)
            newest = stub.ListEvents(pb.ListEventsRequest(limit=100))
            assert len(newest.events) == 100, len(newest.events)
            list_all = timed(lambda: stub.ListEvents(pb.ListEventsRequest(limit=100)), repeats)
            one_mic = pb.EventFilter(mic_ids=["mic1"])
            list_mic = timed(lambda: stub.ListEvents(pb.ListEventsRequest(filter=one_mic, limit=100)), repeats)
            rng = np.random.default_rng(1)
            ids = [int(i) for i in rng.integers(1, total + 1, size=repeats + 1)]
            before = rss_mib()
            first = timed(lambda: stub.FindSimilar(pb.FindSimilarRequest(window_id=ids[0], k=10)), 1)[0]
            index_mib = rss_mib() - before
            queue, replies = iter(ids[1:]), []
            similar = timed(lambda: replies.append(stub.FindSimilar(pb.FindSimilarRequest(window_id=next(queue), k=10))),
                            repeats)
            queue = iter(ids[1:])
            similar_mic = timed(lambda: stub.FindSimilar(pb.FindSimilarRequest(window_id=next(queue), k=10, mic_ids=["mic1"])),
                                repeats)
            reply = stub.FindSimilar(pb.FindSimilarRequest(window_id=ids[0], k=10, mic_ids=["mic1"]))
            assert len(reply.neighbors) == 10 and {n.window.mic_id for n in reply.neighbors} == {"mic1"}
            reply = stub.FindSimilar(pb.FindSimilarRequest(window_id=ids[0], k=10))
            assert len(reply.neighbors) == 10 and reply.searched >= total - 1, reply.searched
        summary = store.similarity_indexes()[DIM]
    finally:
        stop_server(server)
        store.close()
    truth = exact_neighbours(path, ids[1:])
    found = [[n.window.window_id for n in r.neighbors] for r in replies]
    recall = float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))

    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.1f} / {np.percentile(values, 99):.1f}"

    index = "exact scan" if summary.kind == "exact" else (f"IVF{similarity.nlist},SQ8 nprobe {similarity.nprobe}, "
                                                  f"rerank {similarity.rerank}")
    return {"windows": total, "list": cell(list_all), "list_mic": cell(list_mic), "first": f"{first:.0f}",
            "similar": cell(similar), "similar_mic": cell(similar_mic), "recall": f"{recall:.3f}", "index": index,
            "index_mib": f"{summary.nbytes / 2**20:.0f}", "rss_mib": f"{index_mib:.0f}"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--keep", help="folder to keep the filled stores in (reused when run again)")
    parser.add_argument("--model", default=str(REPO / "models" / "roomtone.pt"))
    defaults = SimilarityIndexConfig()
    parser.add_argument("--exact-below", type=int, default=defaults.exact_below,
                        help="stored windows from which FindSimilar uses the faiss IVF index")
    parser.add_argument("--nlist", type=int, default=defaults.nlist, help="IVF lists")
    parser.add_argument("--nprobe", type=int, default=defaults.nprobe, help="IVF lists visited per query")
    parser.add_argument("--rerank", type=int, default=defaults.rerank, help="candidates per neighbour re-scored exactly")
    args = parser.parse_args()
    similarity = SimilarityIndexConfig(exact_below=args.exact_below, nlist=args.nlist, nprobe=args.nprobe,
                                       rerank=args.rerank, train_rows=max(defaults.train_rows, 39 * args.nlist))
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="roomtone-api-"))
    folder.mkdir(parents=True, exist_ok=True)
    rows = [measure(folder, total, args.repeats, args.model, similarity) for total in args.windows]
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; {machine()}; load average {load_average()}; "
          f"{args.repeats} calls each, client and server in one process over loopback gRPC; similarity index "
          f"exact below {similarity.exact_below:,} windows, else IVF{similarity.nlist},SQ8 nprobe {similarity.nprobe} "
          f"rerank {similarity.rerank}, {similarity.threads} faiss thread")
    print("\n| stored windows | ListEvents 100, median / p99 ms | ListEvents 100 of one mic | "
          "FindSimilar k=10 first call ms | FindSimilar k=10, median / p99 ms | FindSimilar k=10 of one mic | "
          "recall@10 | index | index MiB | RSS growth, first call MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['windows']:,} | {r['list']} | {r['list_mic']} | {r['first']} | {r['similar']} | {r['similar_mic']} | "
              f"{r['recall']} | {r['index']} | {r['index_mib']} | {r['rss_mib']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
