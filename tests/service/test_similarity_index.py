"""Specification of the similarity index behind FindSimilar: exact below a row threshold, faiss IVF-SQ8
above it (its lists in memory or in a file beside the store), with the mic filter, exclusions and retention
honoured either way. Small thresholds
(exact_below=1000, nlist=16) stand in for the daemon's 10^5 rows and 1024 lists."""

from __future__ import annotations

import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from service.config import StoreConfig
from service.store.event_store import EventStore
from service.records import WindowResult
from service.config import SimilarityIndexConfig
from service.store.similarity_index import SimilarityCache, SimilarityIndex, import_faiss, rescored, unit_rows

DIM = 32
SMALL = SimilarityIndexConfig(exact_below=1000, nlist=16, nprobe=4, train_rows=1000)


def clustered(rng: np.random.Generator, count: int, centres: np.ndarray) -> np.ndarray:
    """float16 rows (as the store keeps them) around random centres, like recordings of recurring sounds."""
    rows = centres[rng.integers(0, len(centres), size=count)] + rng.normal(scale=0.35, size=(count, DIM))
    return rows.astype(np.float16)


def brute_force(ids: np.ndarray, mics: np.ndarray, vectors16: np.ndarray, query: np.ndarray, k: int,
                mic_ids: list[str] | None = None, exclude: set[int] = frozenset()) -> list[int]:
    """The true k nearest window ids by cosine distance, ties by id."""
    distances = 1.0 - unit_rows(vectors16) @ query
    keep = np.array([(not mic_ids or m in mic_ids) and int(i) not in exclude for i, m in zip(ids, mics)])
    order = np.lexsort((ids[keep], distances[keep]))
    return [int(i) for i in ids[keep][order][:k]]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """3000 rows with sparse, unordered-looking window ids, 3 mics of which "attic" holds 2%, and queries."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(40, DIM))
    ids = 1000 + 3 * np.arange(3000, dtype=np.int64)
    mics = np.array(["hall" if r < 0.49 else "kitchen" if r < 0.98 else "attic" for r in rng.random(3000)], dtype=object)
    queries = unit_rows(clustered(rng, 40, centres))
    return ids, mics, clustered(rng, 3000, centres), queries


def filled(data, config: SimilarityIndexConfig = SMALL, rows: int = 3000, block: int = 500,
           list_path: Path | None = None) -> SimilarityIndex:
    """An index given the first ``rows`` rows in blocks, as the store loads them."""
    ids, mics, vectors, _ = data
    index = SimilarityIndex(DIM, config, list_path)
    for begin in range(0, rows, block):
        end = min(begin + block, rows)
        index.add(ids[begin:end], mics[begin:end], vectors[begin:end])
        index.switch_if_due()
    return index


def test_below_the_threshold_the_search_is_exact_with_mic_filter_and_exclusions(data) -> None:
    ids, mics, vectors, queries = data
    index = filled(data, rows=900)
    assert index.kind == "exact" and len(index) == 900
    for query in queries[:10]:
        exclude = set(brute_force(ids[:900], mics[:900], vectors[:900], query, 3))
        for mic_ids in (None, ["hall"], ["attic", "kitchen"]):
            hits, searched = index.search(query, 10, mic_ids, exclude)
            assert [i for i, _ in hits] == brute_force(ids[:900], mics[:900], vectors[:900], query, 10, mic_ids, exclude)
            eligible = sum((not mic_ids or m in mic_ids) and int(i) not in exclude for i, m in zip(ids[:900], mics[:900]))
            assert searched == eligible


def test_reaching_the_threshold_switches_to_ivf_and_drops_the_float32_copy(data) -> None:
    index = filled(data, rows=999)
    index.search(data[3][0], 1)  # merges the queued float16 rows into the float32 matrix
    exact_bytes_per_row = index.nbytes / len(index)
    assert index.kind == "exact"
    index = filled(data)
    assert index.kind == "ivf" and not index.is_exact and len(index) == 3000
    assert index.nbytes / len(index) < 0.5 * exact_bytes_per_row


def test_rows_added_before_and_after_the_switch_stay_searchable(data) -> None:
    ids, mics, vectors, _ = data
    index = filled(data)
    for row in range(0, 3000, 97):  # each row, searched by its own vector, finds itself first
        (nearest, distance), = index.search(unit_rows(vectors[row:row + 1])[0], 1)[0]
        assert nearest == ids[row] and distance == pytest.approx(0.0, abs=0.02)


def test_ivf_recall_at_10_against_brute_force_is_at_least_0_9(data) -> None:
    ids, mics, vectors, queries = data
    index = filled(data)
    found = [{i for i, _ in index.search(q, 10)[0]} for q in queries]
    recall = np.mean([len(f & set(brute_force(ids, mics, vectors, q, 10))) / 10 for f, q in zip(found, queries)])
    assert recall >= 0.9


def test_ivf_results_are_stored_window_ids_never_excluded_ids_or_other_mics(data) -> None:
    ids, mics, vectors, queries = data
    index = filled(data)
    attic = int(np.sum(mics == "attic"))
    for query in queries[:10]:
        exclude = set(brute_force(ids, mics, vectors, query, 20))
        exclude |= set(brute_force(ids, mics, vectors, query, 5, ["attic"]))
        for mic_ids in (None, ["attic"], ["hall", "attic"]):
            hits, searched = index.search(query, 10, mic_ids, exclude)
            found = [i for i, _ in hits]
            assert len(found) == 10 and set(found) <= set(ids.tolist()) and not set(found) & exclude
            assert all(mics[(i - 1000) // 3] in (mic_ids or ("hall", "kitchen", "attic")) for i in found)
            assert [d for _, d in hits] == sorted(d for _, d in hits) and all(0.0 <= d <= 2.0 for _, d in hits)
        excluded_attic = sum(mics[(i - 1000) // 3] == "attic" for i in exclude)
        assert index.search(query, 10, ["attic"], exclude)[1] == attic - excluded_attic
    # a mic too rare to fill k: all of its rows come back (the search widens to every list)
    hits, searched = index.search(queries[0], attic + 10, ["attic"])
    assert searched == attic and sorted(i for i, _ in hits) == sorted(ids[mics == "attic"].tolist())
    assert index.search(queries[0], 10, ["garage"]) == ([], 0)


def test_remove_drops_rows_from_the_ivf_index_for_retention(data) -> None:
    ids, mics, vectors, queries = data
    index = filled(data)
    gone = set(brute_force(ids, mics, vectors, queries[0], 10)) | set(ids[:500].tolist())
    index.remove(np.asarray(sorted(gone), dtype=np.int64))
    assert len(index) == 3000 - len(gone) and index.kind == "ivf"
    hits, searched = index.search(queries[0], 10)
    assert searched == 3000 - len(gone) and len(hits) == 10 and not {i for i, _ in hits} & gone
    hits, _ = index.search(queries[0], 3000)
    assert len(hits) == 3000 - len(gone) and not {i for i, _ in hits} & gone


def test_rescored_gives_exact_cosine_distances_nearest_first_ties_by_id() -> None:
    query = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    vectors = np.array([[0.0, 2.0, 0.0], [3.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]], dtype=np.float16)
    assert rescored(query, [40, 30, 20, 10], vectors, 3) == [(30, 0.0), (20, 1.0), (40, 1.0)]


def test_without_faiss_the_switch_fails_clearly_and_leaves_the_exact_index_whole(data, monkeypatch) -> None:
    ids, mics, vectors, queries = data
    import_faiss()  # loaded once for real: faiss cannot be imported a second time in one process
    index = SimilarityIndex(DIM, SMALL)
    index.add(ids, mics, vectors)
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError
        with pytest.raises(ImportError, match="faiss-cpu.*exact_below"):
            index.search(queries[0], 10)
        assert index.kind == "exact" and len(index) == 3000
    assert index.search(queries[0], 10)[1] == 3000 and index.kind == "ivf"


def test_config_rejects_bad_values_and_unknown_keys_by_name() -> None:
    for bad, name in (({"nprobe": 2000}, "nprobe"), ({"nlist": 16, "exact_below": 100}, "exact_below"),
                      ({"rerank": -1}, "rerank"), ({"threads": 0}, "threads"), ({"exact": 5}, "exact"),
                      ({"lists_in_file": "maybe"}, "lists_in_file")):
        with pytest.raises(ValueError, match=name):
            SimilarityIndexConfig.model_validate(bad)
    assert SimilarityIndexConfig.model_validate(SMALL.model_dump()) == SMALL


def test_a_large_store_answers_from_the_ivf_index_with_exact_distances_and_forgets_deleted_windows(tmp_path: Path, data) -> None:
    ids, mics, vectors, queries = data
    with EventStore(tmp_path / "ivf.db", StoreConfig(max_age_days=1), SMALL) as store:
        stored, _ = store.add_results([WindowResult(str(m), i * 10_000, i * 10_000 + 10_000, None, {}, "ok", (), {}, -30.0,
                                                    v.astype(np.float32)) for i, (m, v) in enumerate(zip(mics, vectors))])
        store_ids = np.array([w.window_id for w in stored])
        result = store.nearest(queries[0], k=5, mic_id="hall", exclude_ids=[int(store_ids[0])])
        assert store.similarity_indexes()[DIM].kind == "ivf" and store.similarity_indexes()[DIM].rows == 3000
        expected = brute_force(store_ids, mics, vectors, queries[0], 5, ["hall"], {int(store_ids[0])})
        assert [w.window_id for w, _ in result.neighbors] == expected
        truth = 1.0 - unit_rows(np.stack([w.embedding for w in store.get_windows(expected, include_embedding=True)])) @ queries[0]
        np.testing.assert_allclose([d for _, d in result.neighbors], truth, atol=1e-6)
        assert all(w.embedding is None for w, _ in result.neighbors)
        store.enforce_retention(now_unix_ms=1500 * 10_000 + 86_400_000)  # deletes windows starting before row 1500
        after = store.nearest(queries[0], k=3000)
        assert after.searched == 1500 and min(w.window_id for w, _ in after.neighbors) == stored[1500].window_id


def test_warming_the_store_builds_the_index_before_any_query_and_later_rows_still_join(tmp_path: Path, data) -> None:
    ids, mics, vectors, queries = data
    def window(i: int) -> WindowResult:
        return WindowResult(str(mics[i]), i * 10_000, i * 10_000 + 10_000, None, {}, "ok", (), {}, -30.0, vectors[i].astype(np.float32))

    with EventStore(tmp_path / "warm.db", StoreConfig(max_age_days=float("inf")), SMALL) as store:
        store.add_results([window(i) for i in range(2000)])
        assert store.similarity_indexes() == {}
        warmed = store.warm_similarity()
        assert warmed[DIM].kind == "ivf" and warmed[DIM].rows == 2000
        store.add_results([window(i) for i in range(2000, 2100)])
        assert store.nearest(queries[0], k=5).searched == 2100



def resident_kib(path: Path) -> int:
    """KiB of ``path``'s mapping resident in this process (/proc/self/smaps), 0 if not mapped."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line[:1].isalnum() and "-" in line.split(" ", 1)[0]:
            inside = line.endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_ivf_lists_in_a_file_answer_as_lists_in_memory_and_stay_out_of_resident_memory(tmp_path: Path, data) -> None:
    ids, mics, vectors, queries = data
    path = tmp_path / "roomtone.db.similarity-32-1-0.ivf"
    in_memory, in_file = filled(data), filled(data, list_path=path)
    assert in_file.kind == "ivf" and path.exists() and in_file.summary().file_bytes == path.stat().st_size > 0
    assert in_file.nbytes * 5 < in_memory.nbytes  # the codes and ids are in the file
    gone = np.asarray(ids[:500], dtype=np.int64)
    for removed in (False, True):
        if removed:
            in_memory.remove(gone)
            in_file.remove(gone)
        for query in queries[:10]:
            exclude = set(brute_force(ids, mics, vectors, query, 5))
            for mic_ids in (None, ["attic"], ["hall", "kitchen"]):
                assert in_file.search(query, 10, mic_ids, exclude) == in_memory.search(query, 10, mic_ids, exclude)
        assert resident_kib(path) == 0  # searched, added to and removed from, yet none of its pages held
    in_file.close()
    assert not path.exists()


def test_a_store_keeps_ivf_lists_beside_it_removes_them_at_close_and_clears_those_of_dead_processes(tmp_path: Path, data) -> None:
    ids, mics, vectors, queries = data
    stale = tmp_path / "lists.db.similarity-32-999999999-0.ivf"  # no such process
    live = tmp_path / f"lists.db.similarity-32-{os.getpid()}-999999.ivf"  # another store object of this process
    stale.write_bytes(b"left by a crash")
    live.write_bytes(b"in use")
    with EventStore(tmp_path / "lists.db", StoreConfig(max_age_days=float("inf")), SMALL) as store:
        assert not stale.exists() and live.exists()
        store.add_results([WindowResult(str(m), i * 10_000, i * 10_000 + 10_000, None, {}, "ok", (), {}, -30.0,
                                        v.astype(np.float32)) for i, (m, v) in enumerate(zip(mics, vectors))])
        summary = store.warm_similarity()[DIM]
        made = set(tmp_path.glob("lists.db.similarity-*.ivf")) - {live}
        assert summary.kind == "ivf" and len(made) == 1 and summary.file_bytes == next(iter(made)).stat().st_size
        assert len(store.nearest(queries[0], k=5).neighbors) == 5
    assert set(tmp_path.glob("lists.db.similarity-*.ivf")) == {live}


def test_an_index_built_with_its_lists_in_memory_is_rebuilt_with_a_list_file_at_the_next_open(tmp_path: Path, data) -> None:
    _, mics, vectors, queries = data
    in_memory = SMALL.model_copy(update={"lists_in_file": False})  # as every store's index was before the list file
    with EventStore(tmp_path / "old.db", StoreConfig(max_age_days=float("inf")), in_memory) as store:
        store.add_results([WindowResult(str(m), i * 10_000, i * 10_000 + 10_000, None, {}, "ok", (), {}, -30.0,
                                        v.astype(np.float32)) for i, (m, v) in enumerate(zip(mics, vectors))])
        before = [[(w.window_id, d) for w, d in store.nearest(q, k=10, mic_id=["hall", "attic"]).neighbors] for q in queries[:10]]
        assert store.similarity_indexes()[DIM].file_bytes == 0 and not list(tmp_path.glob("*.ivf"))
    with EventStore(tmp_path / "old.db", StoreConfig(max_age_days=float("inf")), SMALL) as store:
        after = [[(w.window_id, d) for w, d in store.nearest(q, k=10, mic_id=["hall", "attic"]).neighbors] for q in queries[:10]]
        assert store.similarity_indexes()[DIM].file_bytes > 0 and len(list(tmp_path.glob("*.ivf"))) == 1
    assert after == before


def test_closing_stops_a_load_in_progress_at_its_next_batch_and_drops_the_indexes() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(60_000, DIM)).astype(np.float16)  # three of the cache's 20,000-row batches
    calls = []

    def read_rows(after: int, limit: int) -> list[tuple[int, str, bytes, int]]:
        calls.append(after)
        if len(calls) == 2:  # the store closes while the second batch is read
            closer.start()
            deadline = time.monotonic() + 10
            while not cache._closing and time.monotonic() < deadline:  # noqa: SLF001 - wait for close() to ask
                time.sleep(0.01)
        return [(i + 1, "hall", vectors[i].tobytes(), DIM) for i in range(after, min(after + limit, len(vectors)))]

    cache = SimilarityCache(SMALL, read_rows, lambda ids, embeddings: [])
    closer = threading.Thread(target=cache.close)
    cache.warm()
    closer.join(30)
    assert not closer.is_alive() and len(calls) == 2 and cache.summaries() == {}


def test_switching_to_ivf_never_holds_every_row_as_float32(data) -> None:
    ids, mics, vectors, _ = data
    rows = np.tile(vectors, (34, 1))  # 102,000 rows queued as the store's float16, as a first load leaves them
    index = SimilarityIndex(DIM, SMALL.model_copy(update={"exact_below": len(rows)}))
    index.add(np.arange(1, len(rows) + 1, dtype=np.int64), np.tile(mics, 34), rows)
    tracemalloc.start()
    index.switch_if_due()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert index.kind == "ivf" and len(index) == len(rows)
    assert peak < 0.5 * rows.size * 4  # the training sample and a chunk of 20,000 rows, not a float32 copy of all
