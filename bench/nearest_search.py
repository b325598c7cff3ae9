"""Speed of the similarity search of the event store (FindSimilar) and of durable writes.

Usage: .venv/bin/python -m bench.nearest_search [--windows 200000] [--dim 256]
Prints the time of one `nearest` query over N stored windows (exact scan below the store's
`similarity.exact_below`, 10^5 by default, faiss IVF above; the kind is printed) and of one
`add_results` batch."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from service.config import StoreConfig
from service.store.event_store import EventStore
from service.records import WindowResult


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--windows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=256)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        store = EventStore(Path(folder) / "bench.db", StoreConfig(max_age_days=float("inf"), max_size_mb=1e7))
        batch = 10_000
        for begin in range(0, args.windows, batch):
            vectors = rng.normal(size=(min(batch, args.windows - begin), args.dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            store.add_results([WindowResult(f"mic{i % 4}", (begin + i) * 10_000, (begin + i) * 10_000 + 10_000, "speech",
                                            {"speech": 1.0}, "ok", (), {}, -30.0, v) for i, v in enumerate(vectors)])
        started = time.perf_counter()
        store.nearest(vectors[0], k=10)
        print(f"first nearest (loads the cache from SQLite): {time.perf_counter() - started:.3f} s")
        times = []
        for _ in range(5):
            started = time.perf_counter()
            result = store.nearest(rng.normal(size=args.dim), k=10)
            times.append(time.perf_counter() - started)
        kind = store.similarity_indexes()[args.dim].kind
        print(f"nearest k=10 over {result.searched} windows of dim {args.dim} ({kind} index): "
              f"median {np.median(times) * 1000:.1f} ms")
        one = [WindowResult("mic0", 0, 10_000, "speech", {"speech": 1.0}, "ok", (), {}, -30.0, vectors[0])] * 4
        times = []
        for _ in range(20):
            started = time.perf_counter()
            store.add_results(one)
            times.append(time.perf_counter() - started)
        print(f"add_results of 4 windows (one fsync'd transaction): median {np.median(times) * 1000:.1f} ms")
        print(f"database pages in use: {store.bytes_in_use() / 1e6:.1f} MB ({store.bytes_in_use() / args.windows:.0f} bytes/window)")
        store.close()


if __name__ == "__main__":
    main()
