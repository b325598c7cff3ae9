"""Nearest-neighbour search over the stored embeddings of one dimension (FindSimilar): an exact float32
scan for small stores, a faiss IVF index with 8-bit scalar quantisation (IVF-SQ8) for large ones.

The exact scan answers in ~0.3 s per 10^6 windows and holds 1 KiB per 256-d window; the IVF index
answers in milliseconds at 10^6 windows, at the price of approximate results (a true neighbour can be
missed). Its lists (SQ8 codes and ids, ~272 B per 256-d window) are kept in a file beside the store
(`similarity_list_file.py`) so the daemon holds ~2 B per window (`similarity_mics.py`) plus the list
centroids; with ``lists_in_file = false`` they are in memory. Product quantisation (IVF-PQ16/PQ32, 16-32 B
per window) was measured and not kept: recall@10 0.27-0.76 even with 20x exact re-ranking on embeddings
shaped like the bundled model's. docs/performance.md has the measurements.
faiss is imported only when a dimension first reaches `SimilarityIndexConfig.exact_below` rows.
`SimilarityCache` keeps one index per dimension filled from the event store and answers `EventStore.nearest`.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from service.config import SimilarityIndexConfig
from service.records import WindowResult
from service.store import similarity_saved
from service.store.similarity_list_file import ListFile, list_file_path, remove_stale_list_files
from service.store.similarity_mics import MicsById
from service.store.similarity_saved import Marker, SavedIndexError, embedding_digest

log = logging.getLogger("roomtone.store")


@dataclass(frozen=True)
class IndexSummary:
    """What one dimension's index holds."""

    kind: str  # "exact" or "ivf"
    rows: int
    nbytes: int  # memory held by the index, approximately
    file_bytes: int = 0  # size of its list file beside the store (`similarity.lists_in_file`), 0 if none


def import_faiss() -> Any:
    """The faiss module, or ImportError saying why it is needed and how to get it."""
    try:
        import faiss
    except ImportError as exc:
        raise ImportError(
            "the approximate similarity index needs faiss-cpu (a roomtone dependency): install it with "
            "`.venv/bin/pip install -c requirements.lock faiss-cpu==1.15.1`, or raise similarity.exact_below "
            f"to keep the exact scan ({exc})") from exc
    return faiss


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """float32 copies of the rows (e.g. stored float16 vectors) scaled to unit length."""
    rows = np.array(vectors, dtype=np.float32)  # one copy; the norms without a temporary of the rows' size
    rows /= np.maximum(np.sqrt(np.einsum("ij,ij->i", rows, rows)), 1e-12)[:, None]
    return rows


def nearest_first(ids: np.ndarray, distances: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The ``k`` smallest distances as [(window id, distance)], ties broken by the smaller id."""
    count = min(k, ids.size)
    if count == 0:
        return []
    top = np.argpartition(distances, count - 1)[:count] if count < ids.size else np.arange(ids.size)
    top = top[np.lexsort((ids[top], distances[top]))]
    return [(int(ids[i]), float(distances[i])) for i in top]


def rescored(query: np.ndarray, ids: Sequence[int], vectors: np.ndarray, k: int) -> list[tuple[int, float]]:
    """Exact cosine distances of candidate rows to a unit ``query``, the ``k`` nearest first (ties by id)."""
    if len(ids) == 0:
        return []
    distances = np.clip(1.0 - unit_rows(vectors) @ query, 0.0, 2.0)
    return nearest_first(np.asarray(ids, dtype=np.int64), distances, k)


class ExactIndex:
    """In-memory copy of the stored embeddings of one dimension, appended incrementally.

    Rows are the stored float16 values widened to float32 and scaled to unit length once, so a query
    is one matrix-vector product (converting float16 per query would cost ~10x more time).
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.ids = np.zeros(0, dtype=np.int64)
        self.mics = np.zeros(0, dtype=object)
        self.matrix = np.zeros((0, dim), dtype=np.float32)
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def __len__(self) -> int:
        return len(self.ids) + sum(len(ids) for ids, _, _ in self._pending)

    @property
    def nbytes(self) -> int:
        """Memory held: the float32 matrix, ids and mic references, and queued float16 rows."""
        return (self.matrix.nbytes + self.ids.nbytes + self.mics.nbytes
                + sum(i.nbytes + m.nbytes + v.nbytes for i, m, v in self._pending))

    def add(self, ids: np.ndarray, mics: np.ndarray, vectors16: np.ndarray) -> None:
        """Queue rows; merged into the matrix at the next search."""
        self._pending.append((ids, mics, vectors16))

    def remove(self, ids: np.ndarray) -> None:
        """Drop rows by window id (after retention)."""
        self._flush()
        keep = ~np.isin(self.ids, ids)
        self.ids, self.mics, self.matrix = self.ids[keep], self.mics[keep], self.matrix[keep]

    def chunks(self, size: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(window ids, mic ids, unit float32 rows) of every row in order, ``size`` rows at a time, the queued
        float16 rows widened chunk by chunk (not merged: at the switch to IVF that would hold every row as
        float32 at once, 100 MB at 10^5 rows, on top of the training)."""
        for begin in range(0, len(self.ids), size):
            yield self.ids[begin:begin + size], self.mics[begin:begin + size], self.matrix[begin:begin + size]
        for ids, mics, vectors16 in self._pending:
            for begin in range(0, len(ids), size):
                yield ids[begin:begin + size], mics[begin:begin + size], unit_rows(vectors16[begin:begin + size])

    def _flush(self) -> None:
        if not self._pending:
            return
        ids, mics, blocks = zip(*self._pending)
        self.ids = np.concatenate([self.ids, *ids])
        self.mics = np.concatenate([self.mics, *mics])
        self.matrix = np.concatenate([self.matrix, unit_rows(np.concatenate(blocks))])
        self._pending.clear()

    def search(self, query: np.ndarray, k: int, mic_ids: Sequence[str] | None, exclude: set[int]) -> tuple[list[tuple[int, float]], int]:
        """Exact top-k by cosine distance to a unit ``query``: ([(window id, distance)], rows compared)."""
        self._flush()
        distances = np.clip(1.0 - self.matrix @ query, 0.0, 2.0)  # rounding can step just outside
        mask = np.ones(len(self.ids), dtype=bool)
        if mic_ids:
            mask &= np.isin(self.mics, list(mic_ids))
        if exclude:
            mask &= ~np.isin(self.ids, list(exclude))
        candidates = np.flatnonzero(mask)
        return nearest_first(self.ids[candidates], distances[candidates], k), int(candidates.size)


class IvfIndex:
    """Approximate index of one dimension: faiss IVF lists of 8-bit scalar-quantised unit vectors, searched
    by inner product, keyed by window id; the mic of each window in a `MicsById` beside it. The lists live
    in a `ListFile` beside the store when ``list_path`` is given (memory ~2 B per window), else in memory
    (~274 B per window).

    Distances it reports are 1 - the SQ8-approximated inner product (clipped to [0, 2]), not exact.
    """

    def __init__(self, dim: int, config: SimilarityIndexConfig, training: np.ndarray, list_path: Path | None = None) -> None:
        self.dim, self.config = dim, config
        self._faiss = import_faiss()
        self._faiss.omp_set_num_threads(config.threads)  # per calling thread: repeated before every faiss call
        self.index = self._faiss.index_factory(dim, f"IVF{config.nlist},SQ8", self._faiss.METRIC_INNER_PRODUCT)
        self.index.train(np.ascontiguousarray(training, dtype=np.float32))
        self.list_file = ListFile(self._faiss, self.index, list_path) if list_path is not None else None
        self.mics = MicsById()
        self._stage: tuple[Any, Any] | None = None  # `_staging`

    @classmethod
    def restored(cls, dim: int, config: SimilarityIndexConfig, arrays: dict[str, np.ndarray], list_path: Path) -> IvfIndex:
        """The index saved as ``arrays`` (`similarity_saved.claim`) with its lists in the file at ``list_path``;
        SavedIndexError when they do not fit together."""
        self = cls.__new__(cls)
        self.dim, self.config = dim, config
        self._faiss = import_faiss()
        self._faiss.omp_set_num_threads(config.threads)
        try:
            self.index = self._faiss.deserialize_index(arrays["faiss"], self._faiss.IO_FLAG_SKIP_IVF_DATA)
            self.mics = MicsById.from_state(arrays)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise SavedIndexError(f"the saved index does not read back ({type(exc).__name__}: {exc})") from None
        ivf = self._faiss.extract_index_ivf(self.index)
        lists = self._faiss.downcast_InvertedLists(ivf.invlists)
        if (self.index.d, ivf.nlist, self.index.ntotal) != (dim, config.nlist, len(self.mics)) or not hasattr(lists, "do_mmap"):
            raise SavedIndexError(f"the saved index holds {self.index.ntotal} rows of dimension {self.index.d} in "
                                  f"{ivf.nlist} lists, its microphones {len(self.mics)} rows")
        if int(lists.totsize) > list_path.stat().st_size:  # mapping past the end would crash on the first read
            raise SavedIndexError(f"its lists file is shorter ({list_path.stat().st_size} B) than its lists ({int(lists.totsize)} B)")
        self.list_file = ListFile.adopted(self._faiss, self.index, list_path)
        self._stage = None
        self._release()
        return self

    def serialized(self) -> np.ndarray:
        """The faiss index as bytes (with its lists in a file: their places in it, not their contents)."""
        return self._faiss.serialize_index(self.index)

    def remove_below(self, window_id: int) -> None:
        """Drop every row below ``window_id`` (windows retention deleted while the index was saved)."""
        if window_id > self.mics.first:
            self.remove(np.arange(self.mics.first, window_id, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.mics)

    @property
    def nbytes(self) -> int:
        """Memory held: the list centroids, the mic of each window, and the lists' codes and ids unless in a file."""
        in_memory = 0 if self.list_file is not None else self.index.ntotal * (self.index.code_size + 8)
        return in_memory + self.config.nlist * self.dim * 4 + self.mics.nbytes

    @property
    def file_bytes(self) -> int:
        """Size of the list file (0 with the lists in memory)."""
        return self.list_file.file_bytes if self.list_file is not None else 0

    def _release(self) -> None:
        if self.list_file is not None:
            self.list_file.release()

    def add(self, ids: np.ndarray, mics: np.ndarray, unit_vectors: np.ndarray, chunk: int = 1_000) -> None:
        """Add unit float32 rows under their window ids (not held yet), ``chunk`` rows per faiss call (with the
        lists in a file: `_add_list_by_list`)."""
        if ids.size == 0:
            return
        self._faiss.omp_set_num_threads(self.config.threads)
        if self.list_file is not None:
            self._add_list_by_list(np.ascontiguousarray(ids, dtype=np.int64), unit_vectors)
        else:
            for begin in range(0, ids.size, chunk):
                self.index.add_with_ids(np.ascontiguousarray(unit_vectors[begin:begin + chunk], dtype=np.float32),
                                        np.ascontiguousarray(ids[begin:begin + chunk], dtype=np.int64))
        self.mics.add(np.asarray(ids, dtype=np.int64), mics)

    def _add_list_by_list(self, ids: np.ndarray, unit_vectors: np.ndarray, block: int = 100_000) -> None:
        """Encode the rows into an empty in-memory copy of the index, then append them to the file's lists one
        list at a time, releasing the file's pages after each. A list that outgrows its room is copied whole
        into a new place, and lists of one size outgrow it together: adding 1,000 rows at a time through faiss
        held up to 576 MiB of file pages (RssFile) at 2 M windows (250 MB of the file at 12.6 M); one list at a
        time touches at most one list's move. faiss cannot presize the lists instead: a list at or below half
        its room is moved into a smaller one at its next add."""
        staging, staged = self._staging()
        lists = self.list_file.lists
        for begin in range(0, ids.size, block):
            end = min(begin + block, ids.size)
            staging.add_with_ids(np.ascontiguousarray(unit_vectors[begin:end], dtype=np.float32), ids[begin:end])
            for list_no in range(self.config.nlist):
                count = staged.list_size(list_no)
                if count:
                    lists.add_entries(list_no, count, staged.get_ids(list_no), staged.get_codes(list_no))
                    self._release()
            self.index.ntotal = self.index.ntotal + (end - begin)
            staging.reset()

    def _staging(self) -> tuple[Any, Any]:
        """(an empty copy of this trained index with its lists in memory, those lists), made once."""
        if self._stage is None:
            staging = self._faiss.deserialize_index(self.serialized(), self._faiss.IO_FLAG_SKIP_IVF_DATA)
            staged = self._faiss.ArrayInvertedLists(self.config.nlist, self.index.code_size)
            self._faiss.extract_index_ivf(staging).replace_invlists(staged, False)  # kept alive by this object
            staging.ntotal = 0
            self._stage = (staging, staged)
        return self._stage

    def remove(self, ids: np.ndarray) -> None:
        """Drop rows by window id (after retention)."""
        gone = self.mics.remove(np.asarray(ids, dtype=np.int64))
        if gone.size == 0:
            return
        self._faiss.omp_set_num_threads(self.config.threads)  # retention's thread would otherwise use every core
        self.index.remove_ids(np.ascontiguousarray(gone))
        self._release()

    def close(self) -> None:
        """Delete the list file, if any (the index must not be used after)."""
        if self.list_file is not None:
            self.list_file.remove()

    def search(self, query: np.ndarray, k: int, mic_ids: Sequence[str] | None, exclude: set[int]) -> tuple[list[tuple[int, float]], int]:
        """Approximate top-k by cosine distance to a unit ``query``: ([(window id, SQ8 distance)], rows eligible).

        The mic filter and the exclusions are applied to an over-fetched candidate list, not inside faiss:
        window ids of one microphone are spread over the whole id range, so a faiss IDSelector would need
        a per-query set of every id of the wanted mics (IDSelectorBatch: ~24 ms for 250k ids, 100x the
        search itself). Instead the fetch is sized by the wanted mics' share of the rows and doubled
        (then nprobe doubled, up to every list) until k rows pass or the whole index was returned.
        """
        wanted = self.mics.wanted(mic_ids)
        excluded_ids = np.fromiter(exclude, dtype=np.int64, count=len(exclude))
        excluded_ids = excluded_ids[wanted[self.mics.index_of(self.mics.codes_of(excluded_ids), wanted)]]
        matching = int(self.mics.rows[wanted[:-1]].sum())
        eligible = matching - excluded_ids.size
        if eligible <= 0:
            return [], 0
        count = min(k, eligible)
        total = len(self)
        fetch = min(total, math.ceil((count + excluded_ids.size) * total / matching * 1.25))
        nprobe = self.config.nprobe
        self._faiss.omp_set_num_threads(self.config.threads)
        try:
            while True:
                params = self._faiss.SearchParametersIVF(nprobe=nprobe)
                similarity, found = self.index.search(query.reshape(1, -1).astype(np.float32), fetch, params=params)
                similarity, found = similarity[0], found[0]
                returned = found >= 0  # -1: the probed lists held fewer than `fetch` rows
                similarity, found = similarity[returned], found[returned]
                keep = wanted[self.mics.index_of(self.mics.codes_of(found), wanted)] & ~np.isin(found, excluded_ids)
                if keep.sum() >= count or found.size == total:  # enough, or every row came back
                    break
                if found.size < fetch:  # the probed lists ran out (with every list probed, found.size == fetch)
                    nprobe = min(self.config.nlist, nprobe * 2)
                else:
                    fetch = min(total, fetch * 2)
        finally:
            self._release()
        distances = np.clip(1.0 - similarity[keep], 0.0, 2.0)
        return nearest_first(found[keep], distances, k), eligible


class SimilarityIndex:
    """The stored embeddings of one dimension: an `ExactIndex` below ``config.exact_below`` rows, then an
    `IvfIndex` trained once on a seeded sample of the rows present at the switch (the exact float32 copy is
    dropped then). Once approximate it stays so, even if retention takes it back under the threshold."""

    def __init__(self, dim: int, config: SimilarityIndexConfig = SimilarityIndexConfig(), list_path: Path | None = None) -> None:
        self.dim, self.config, self.list_path = dim, config, list_path  # list_path: where an IvfIndex keeps its lists
        self._exact: ExactIndex | None = ExactIndex(dim)
        self._ivf: IvfIndex | None = None

    @classmethod
    def of_ivf(cls, ivf: IvfIndex) -> SimilarityIndex:
        """An index that answers from ``ivf`` (e.g. one read back from a saved index)."""
        index = cls(ivf.dim, ivf.config, ivf.list_file.path if ivf.list_file is not None else None)
        index._exact, index._ivf = None, ivf
        return index

    @property
    def ivf(self) -> IvfIndex | None:
        """The IVF index once it answers, else None."""
        return self._ivf

    @property
    def kind(self) -> str:
        """Which search answers: "exact" or "ivf"."""
        return "exact" if self._ivf is None else "ivf"

    @property
    def is_exact(self) -> bool:
        """Whether searches are exact (results and distances)."""
        return self._ivf is None

    @property
    def nbytes(self) -> int:
        """Memory held by the index, approximately."""
        return self._ivf.nbytes if self._ivf is not None else self._exact.nbytes

    def __len__(self) -> int:
        return len(self._ivf) if self._ivf is not None else len(self._exact)

    def summary(self) -> IndexSummary:
        """Kind, rows and bytes held, e.g. for benchmarks and logs."""
        return IndexSummary(self.kind, len(self), self.nbytes, self._ivf.file_bytes if self._ivf is not None else 0)

    def add(self, ids: np.ndarray, mics: np.ndarray, vectors16: np.ndarray) -> None:
        """Take rows (stored float16 vectors, ascending window ids); never trains, so it cannot fail for want of faiss."""
        if self._ivf is not None:
            self._ivf.add(ids, mics, unit_rows(vectors16))
        else:
            self._exact.add(ids, mics, vectors16)

    def switch_if_due(self) -> None:
        """Replace the exact scan by a trained IVF index once it holds ``exact_below`` rows (imports faiss);
        if that fails the exact scan is left whole and the next call tries again."""
        if self._ivf is not None or len(self._exact) < self.config.exact_below:
            return
        total = len(self._exact)
        picked = (np.arange(total) if self.config.train_rows >= total
                  else np.sort(np.random.default_rng(0).choice(total, size=self.config.train_rows, replace=False)))
        training, offset = np.empty((picked.size, self.dim), dtype=np.float32), 0
        for ids, _, rows in self._exact.chunks():
            inside = picked[(picked >= offset) & (picked < offset + len(ids))]
            training[np.searchsorted(picked, inside)] = rows[inside - offset]
            offset += len(ids)
        ivf = IvfIndex(self.dim, self.config, training, self.list_path)
        del training
        try:
            for ids, mics, rows in self._exact.chunks():
                ivf.add(ids, mics, rows)
        except BaseException:
            ivf.close()
            raise
        self._ivf, self._exact = ivf, None

    def remove(self, ids: np.ndarray) -> None:
        """Drop rows by window id (after retention)."""
        (self._ivf if self._ivf is not None else self._exact).remove(ids)

    def close(self) -> None:
        """Delete the IVF index's list file, if any; the index answers nothing after."""
        if self._ivf is not None:
            self._ivf.close()

    def search(self, query: np.ndarray, k: int, mic_ids: Sequence[str] | None = None,
               exclude: set[int] | frozenset[int] = frozenset()) -> tuple[list[tuple[int, float]], int]:
        """Top-k by cosine distance to a unit ``query``: ([(window id, distance)], rows eligible).

        Exact below the threshold. Above it approximate: a true neighbour can be missed and distances
        are SQ8 approximations (`rescored` makes them exact). Never returns an excluded id or another mic.
        """
        self.switch_if_due()
        index = self._ivf if self._ivf is not None else self._exact
        return index.search(query, k, mic_ids, set(exclude))


@dataclass(frozen=True)
class NearestResult:
    """Stored windows nearest to a query embedding, nearest first, with cosine distances."""

    neighbors: list[tuple[WindowResult, float]]
    searched: int  # stored embeddings the search ran over (same dimension and mics, not excluded)


#: (above this window id, at most this many) -> [(window id, mic id, float16 embedding blob, dimension)], by id.
EmbeddingRows = Callable[[int, int], list[tuple[int, str, bytes, int]]]
#: (window ids, with embeddings?) -> the stored windows among them, in that order.
WindowsById = Callable[[list[int], bool], list[WindowResult]]


class SimilarityCache:
    """The stored embeddings in memory, one `SimilarityIndex` per dimension: read back from the index saved
    at the last close, if any (`similarity_saved.py`), and filled on the first search, topped up by later ones
    from ``read_rows``, trimmed after retention; saved again at close. Its own lock (always taken before the
    store's, never inside it) keeps searches from blocking the store's writers."""

    def __init__(self, config: SimilarityIndexConfig, read_rows: EmbeddingRows, read_windows: WindowsById,
                 store_path: Path | None = None) -> None:
        self.config = config
        # IVF lists go in files beside the store (`similarity.lists_in_file`); ones a crashed process left are removed
        self._store_path = store_path if config.lists_in_file else None
        if self._store_path is not None:
            remove_stale_list_files(self._store_path)
        self._read_rows = read_rows
        self._read_windows = read_windows
        self._lock = threading.Lock()
        self._indexes: dict[int, SimilarityIndex] = {}
        self._loaded_up_to = 0  # highest window id already in the indexes
        self._marker_digest = ""  # digest of that window's stored embedding (`similarity_saved.Marker`)
        self._restore_due = self._store_path is not None  # read back a saved index before the first load
        self._closing = False  # set (without the lock) by `close`: a load in progress stops at its next batch

    def _restore(self) -> None:
        """Read back the indexes saved beside the store at its last close (own lock held), the rows retention
        deleted since dropped; when there are none, or they cannot be used, log why: the load rebuilds them."""
        store = self._store_path
        similarity_saved.remove_unfinished(store)
        dims = similarity_saved.saved_dims(store)
        restored: dict[int, tuple[IvfIndex, Marker, list[int]]] = {}
        try:
            if not dims:
                raise SavedIndexError("no saved index (the last run did not close the store, or never built one)")
            for dim in dims:
                working = list_file_path(store, dim)
                try:
                    header, arrays = similarity_saved.claim(store, dim, working)
                    similarity_saved.check_header(header, dim, self.config, working)
                    restored[dim] = (IvfIndex.restored(dim, self.config, arrays, working),
                                     Marker(int(header["marker"]), str(header["digest"])), list(header.get("dims", [])))
                except BaseException:
                    working.unlink(missing_ok=True)
                    raise
            if any(set(saved_with) != set(restored) for _, _, saved_with in restored.values()):
                raise SavedIndexError(f"saved indexes of dimensions {sorted(restored)} are not the set saved together")
            markers = {marker for _, marker, _ in restored.values()}
            marker = markers.pop()
            if markers:
                raise SavedIndexError("the saved indexes hold the store up to different windows")
            at = self._read_rows(marker.window_id - 1, 1)
            if not at or at[0][0] != marker.window_id or embedding_digest(at[0][2]) != marker.digest:
                raise SavedIndexError(f"the store does not hold window {marker.window_id} as the index saw it "
                                      "(another store, or one restored from a backup)")
            lowest = self._read_rows(0, 1)[0][0]
            for ivf, _, _ in restored.values():
                ivf.remove_below(lowest)
        except (SavedIndexError, OSError, RuntimeError, ImportError, KeyError, ValueError, TypeError) as exc:  # faiss: RuntimeError
            for ivf, _, _ in restored.values():
                ivf.close()
            log.info("similarity index rebuilt from the store", extra={"store": str(store), "reason": str(exc)})
            return
        self._indexes = {dim: SimilarityIndex.of_ivf(ivf) for dim, (ivf, _, _) in restored.items()}
        self._loaded_up_to, self._marker_digest = marker.window_id, marker.digest
        log.info("similarity index read back", extra={"store": str(store), "up_to_window_id": marker.window_id,
                                                       "rows": {str(d): len(i) for d, i in self._indexes.items()}})

    def _save(self) -> bool:
        """Save every index beside the store (own lock held) if every one is an IVF index with its lists in a
        file; whether they were saved (their list files are then moved: the indexes must be dropped)."""
        ivfs = {dim: index.ivf for dim, index in self._indexes.items()}
        if self._store_path is None or not ivfs or any(i is None or i.list_file is None for i in ivfs.values()):
            return False
        marker = Marker(self._loaded_up_to, self._marker_digest)
        try:
            for ivf in ivfs.values():
                similarity_saved.save(ivf, self._store_path, marker, dims=sorted(ivfs))
        except OSError as exc:  # e.g. a full disk: the next start rebuilds
            for dim, ivf in ivfs.items():
                similarity_saved.discard(self._store_path, dim)
                ivf.close()
            log.warning("similarity index not saved; the next start rebuilds it",
                        extra={"store": str(self._store_path), "error": str(exc)})
        return True

    def _load_new_rows(self, batch: int = 20_000) -> None:
        """Load rows above the high-water mark into the indexes (own lock held), in batches that take the
        store's lock only briefly so writers are not held up by a first large load; first reads back a
        saved index, if any."""
        if self._restore_due:
            self._restore_due = False
            self._restore()
        while not self._closing:
            rows = self._read_rows(self._loaded_up_to, batch)
            if not rows:
                return
            for dim in {row[3] for row in rows}:
                part = [row for row in rows if row[3] == dim]
                vectors = np.frombuffer(b"".join(row[2] for row in part), dtype="<f2").reshape(len(part), dim)
                if dim not in self._indexes:
                    self._indexes[dim] = SimilarityIndex(dim, self.config, None if self._store_path is None
                                                         else list_file_path(self._store_path, dim))
                self._indexes[dim].add(
                    np.asarray([row[0] for row in part], dtype=np.int64), np.asarray([row[1] for row in part], dtype=object), vectors)
            self._loaded_up_to, self._marker_digest = rows[-1][0], embedding_digest(rows[-1][2])
            for index in self._indexes.values():
                index.switch_if_due()  # while loading, so a first load of 10^6 rows never holds them all as float32
            if len(rows) < batch:
                return

    def nearest(self, embedding: np.ndarray, k: int = 10, mic_id: str | Sequence[str] | None = None,
                exclude_ids: Sequence[int] = ()) -> NearestResult:
        """The ``k`` stored windows nearest to ``embedding`` by cosine distance (`EventStore.nearest` says how)."""
        query = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        norm = float(np.linalg.norm(query))
        if not math.isfinite(norm) or norm == 0.0:
            raise ValueError("query embedding must be finite and non-zero")
        mic_ids = [mic_id] if isinstance(mic_id, str) else (list(mic_id) if mic_id else None)
        with self._lock:
            self._load_new_rows()
            index = self._indexes.get(query.size)
            if index is None:
                return NearestResult([], 0)
            rescore = not index.is_exact and self.config.rerank > 0
            hits, searched = index.search(query / norm, k * self.config.rerank if rescore else k, mic_ids,
                                          set(int(i) for i in exclude_ids))
        # A window deleted by retention since the search is skipped (the store leaves missing ids out).
        windows = {w.window_id: w for w in self._read_windows([i for i, _ in hits], rescore)}
        if rescore:
            ids = [i for i, _ in hits if i in windows]
            vectors = np.stack([windows[i].embedding for i in ids]) if ids else np.zeros((0, query.size), np.float32)
            hits = rescored(query / norm, ids, vectors, k)
            windows = {i: replace(windows[i], embedding=None) for i, _ in hits}
        return NearestResult([(windows[i], d) for i, d in hits if i in windows], searched)

    def warm(self) -> dict[int, IndexSummary]:
        """Load every stored embedding now (training the IVF index when due); returns `summaries()`."""
        with self._lock:
            self._load_new_rows()
        return self.summaries()

    def summaries(self) -> dict[int, IndexSummary]:
        """Kind, rows and bytes of each dimension's index; empty before the first search."""
        with self._lock:
            return {dim: index.summary() for dim, index in self._indexes.items()}

    def remove(self, window_ids: Sequence[int]) -> None:
        """Drop windows the store deleted (retention) from every index."""
        if not window_ids:
            return
        removed = np.asarray(window_ids, dtype=np.int64)
        with self._lock:
            for index in self._indexes.values():
                index.remove(removed)

    def close(self) -> None:
        """Save every index beside the store (IVF indexes with their lists in a file, `similarity_saved.py`),
        else delete their list files, and drop them (`EventStore.close`), stopping a load in progress at its
        next batch; a later search reads them back or loads them anew."""
        self._closing = True
        with self._lock:
            if not self._save():
                for index in self._indexes.values():
                    index.close()
            self._indexes.clear()
            self._loaded_up_to, self._marker_digest = 0, ""
            self._restore_due = self._store_path is not None
            self._closing = False
