"""FindSimilar's IVF index is saved beside the store when it closes and read back at the next start, which
then adds only the windows stored since; a saved index that is missing, damaged or not of this store is
rebuilt from the store, and the log says why (service/store/similarity_saved.py)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from service.config import SimilarityIndexConfig, StoreConfig
from service.records import WindowResult
from service.store.event_store import EventStore
from service.store.similarity_saved import saved_paths

DIM = 32
SMALL = SimilarityIndexConfig(exact_below=1000, nlist=16, nprobe=4, train_rows=1000)
KEEP = StoreConfig(max_age_days=float("inf"))


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    """3,200 float16 rows around 40 centres, as the store keeps embeddings."""
    rng = np.random.default_rng(11)
    centres = rng.normal(size=(40, DIM))
    return (centres[rng.integers(0, 40, 3200)] + rng.normal(scale=0.35, size=(3200, DIM))).astype(np.float16)


def windows(vectors: np.ndarray, begin: int, end: int) -> list[WindowResult]:
    """Windows ``begin`` .. ``end`` - 1, one every 10 s, on two microphones."""
    return [WindowResult("hall" if i % 2 else "kitchen", i * 10_000, i * 10_000 + 10_000, None, {}, "ok", (), {}, -30.0,
                         vectors[i].astype(np.float32)) for i in range(begin, end)]


def saved_store(tmp_path: Path, vectors: np.ndarray, name: str = "roomtone.db", rows: int = 3000) -> Path:
    """A store of ``rows`` windows whose index was built and then saved when it closed."""
    path = tmp_path / name
    with EventStore(path, KEEP, SMALL) as store:
        store.add_results(windows(vectors, 0, rows))
        assert store.warm_similarity()[DIM].kind == "ivf"
    assert all(p.exists() for p in saved_paths(path, DIM))
    return path


def reads_of(store: EventStore) -> list[tuple[int, int]]:
    """(after window id, at most rows) of every read the similarity cache makes of the stored embeddings."""
    calls: list[tuple[int, int]] = []
    read = store._embeddings_after  # noqa: SLF001 - the test watches what the cache reads
    store._similar._read_rows = lambda after, limit: calls.append((after, limit)) or read(after, limit)  # noqa: SLF001
    return calls


def test_a_restart_reads_the_saved_index_back_and_adds_only_the_windows_stored_since(tmp_path, vectors, caplog) -> None:
    path = saved_store(tmp_path, vectors)
    with EventStore(path, KEEP, SMALL) as store:
        stored, _ = store.add_results(windows(vectors, 3000, 3200))
        reads = reads_of(store)
        with caplog.at_level(logging.INFO, logger="roomtone.store"):
            summary = store.warm_similarity()[DIM]
        assert any(r.message == "similarity index read back" for r in caplog.records)
        assert summary.kind == "ivf" and summary.rows == 3200  # the 3,000 saved once, not again
        # every read of rows in bulk starts after the saved marker (window 3000); single rows check it
        assert [after for after, limit in reads if limit > 1] == [3000]
        assert not saved_paths(path, DIM)[1].exists()  # taken: a crash from now on leaves nothing to misread
        newest = stored[-1]
        found = store.nearest(newest.embedding, k=1).neighbors
        assert found[0][0].window_id == newest.window_id and found[0][1] == pytest.approx(0.0, abs=1e-5)
    with EventStore(path, KEEP, SMALL) as store:  # saved again at that close, with the new rows
        assert store.warm_similarity()[DIM].rows == 3200


def test_windows_retention_deleted_while_the_index_was_saved_are_left_out_of_it(tmp_path, vectors) -> None:
    path = saved_store(tmp_path, vectors)
    with EventStore(path, StoreConfig(max_age_days=1.0), SMALL) as store:  # never searched: the index stays saved
        assert store.enforce_retention(now_unix_ms=1000 * 10_000 + 86_400_000).windows_deleted == 1000
    with EventStore(path, KEEP, SMALL) as store:
        assert store.warm_similarity()[DIM].rows == 2000
        ids = [w.window_id for w, _ in store.nearest(vectors[1500].astype(np.float32), k=2000).neighbors]
        assert len(ids) == 2000 and min(ids) == 1001


def damage_index_file(path: Path, other: Path) -> None:
    saved_paths(path, DIM)[1].write_bytes(b"PK\x03\x04 not what was saved")


def truncate_lists_file(path: Path, other: Path) -> None:
    lists = saved_paths(path, DIM)[0]
    with open(lists, "r+b") as f:
        f.truncate(lists.stat().st_size // 2)


def lose_index_file_as_a_crash_does(path: Path, other: Path) -> None:
    saved_paths(path, DIM)[1].unlink()


def crash_while_saving(path: Path, other: Path) -> None:
    index = saved_paths(path, DIM)[1]
    index.rename(index.with_name(f"{index.name}.4242.tmp"))  # written, never renamed into place


def put_another_store_under_the_index(path: Path, other: Path) -> None:
    shutil.copyfile(other, path)  # the same window ids, other embeddings


@pytest.mark.parametrize("damage, reason", [
    (damage_index_file, "damaged"), (truncate_lists_file, "not the one it was saved with"),
    (lose_index_file_as_a_crash_does, "no saved index"), (crash_while_saving, "no saved index"),
    (put_another_store_under_the_index, "does not hold window"),
], ids=["garbage_index_file", "truncated_lists_file", "crash", "crash_while_saving", "another_store"])
def test_a_saved_index_that_cannot_be_used_is_rebuilt_from_the_store_and_the_log_says_why(
        tmp_path, vectors, caplog, damage, reason) -> None:
    path = saved_store(tmp_path, vectors)
    other = saved_store(tmp_path, vectors[::-1].copy(), "other.db", rows=3000)
    damage(path, other)
    with EventStore(path, KEEP, SMALL) as store:
        with caplog.at_level(logging.INFO, logger="roomtone.store"):
            summary = store.warm_similarity()[DIM]
        rebuilt = [r for r in caplog.records if r.message == "similarity index rebuilt from the store"]
        assert rebuilt and reason in rebuilt[0].reason
        assert summary.kind == "ivf" and summary.rows == 3000
        assert store.nearest(store.get_window(1).embedding, k=1).neighbors[0][0].window_id == 1  # its own windows
    assert sorted(p.name for p in tmp_path.glob("roomtone.db.similarity-*")) == [
        "roomtone.db.similarity-32.index", "roomtone.db.similarity-32.lists"]  # no working or temporary file left
