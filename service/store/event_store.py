"""The event store: windows, state changes, sessions and corrections in one SQLite file, and the one face
(`EventStore`) the daemon uses for them: durable writes, filtered pages, recent history, retention and
nearest-neighbour search over the stored embeddings. The work lives in the modules beside it: the file and
its schema steps (store_schema.py), rows and records (window_rows.py), ListEvents and its page tokens
(event_queries.py), recent history (window_history.py), retention (retention.py), the similarity cache
(similarity_index.py), sessions (session_store.py) and corrections (correction_store.py).

Durability: WAL journal with ``synchronous=FULL``, so a transaction is on disk when `add_results`
returns; a crash (process or power) loses nothing that was acknowledged, only batches still in flight.
One connection guarded by a lock makes the store safe to share between the pipeline, the retention
thread and the gRPC servicers (writes are one small batch per window hop, so contention is low).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from service.analysis.sessions import ActivitySession, SessionEvent
from service.config import SimilarityIndexConfig, StoreConfig
from service.records import StateChange, WindowMap, WindowResult
from service.store import correction_store, retention, session_store, window_history, window_rows
from service.store.correction_store import Correction
from service.store.event_queries import EventPage, EventQuery, LabelBucket, label_buckets, list_events
from service.store.retention import RetentionReport
from service.store.session_store import SessionPage, SessionQuery
from service.store.similarity_index import IndexSummary, NearestResult, SimilarityCache
from service.store.store_guard import StoreGuard
from service.store.store_schema import StoreError, in_transaction, migrate, open_connection
from service.daemon_vocabulary import SOUND_DETECTED

#: The types of EventStore's methods, importable from the face with it.
__all__ = ["EventPage", "EventQuery", "EventStore", "LabelBucket", "NearestResult", "RetentionReport", "StoreError"]

log = logging.getLogger("roomtone.store")


class EventStore:
    """Windows and state changes in one SQLite file (WAL); safe to share between threads."""

    def __init__(self, path: str | Path, config: StoreConfig = StoreConfig(),
                 similarity: SimilarityIndexConfig = SimilarityIndexConfig(), guard: StoreGuard | None = None) -> None:
        self.path = Path(path)
        self.config = config
        self.guard = guard  # the daemon's lock file: told every acknowledged window id (service/store/store_guard.py)
        self.similarity = similarity
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._connection: sqlite3.Connection | None = open_connection(self.path)
        try:
            migrate(self._connection)
        except sqlite3.DatabaseError as exc:
            self._connection.close()
            raise StoreError(f"{self.path}: cannot read or upgrade the schema ({exc})") from None
        except BaseException:
            self._connection.close()
            raise
        # Filled on the first `nearest` and topped up by later ones; its lock is taken before `_lock`, never inside it.
        self._similar = SimilarityCache(similarity, self._embeddings_after, self.get_windows, self.path)
        # Queries read on a connection of their own thread (WAL: readers and the one writer never wait for
        # each other), so heavy ListEvents pages cannot hold up the pipeline's writes.
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        """Checkpoint the WAL into the main file and close; later calls raise StoreError."""
        self._similar.close()  # its list files beside the store; before the store lock, as the cache's lock always is
        with self._lock:
            if self._connection is None:
                return
            with self._readers_lock:
                readers, self._readers = self._readers, []
            for reader in readers:
                reader.close()
            try:
                self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.OperationalError as exc:  # a full disk: the WAL keeps every committed write
                log.warning("store closed without folding its write-ahead log into the file (kept beside it, "
                            "read at the next start)", extra={"store": str(self.path), "error": str(exc)})
            finally:
                self._connection.close()
                self._connection = None

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            raise StoreError(f"{self.path}: store is closed")
        return self._connection

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """This thread's read-only connection, inside one read transaction (a consistent snapshot even while
        the writer commits or retention deletes)."""
        self._db()  # StoreError once closed
        reader = getattr(self._local, "connection", None)
        if reader is None or reader not in self._readers:
            reader = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30.0)
            reader.execute("PRAGMA query_only = ON")
            with self._readers_lock:
                self._readers.append(reader)
            self._local.connection = reader
        if reader.in_transaction:  # nested in this thread: the outer snapshot holds
            yield reader
            return
        reader.execute("BEGIN")
        try:
            yield reader
        finally:
            if reader.in_transaction:
                reader.execute("COMMIT")

    def schema_version(self) -> int:
        """PRAGMA user_version of the open file."""
        with self._lock:
            return int(self._db().execute("PRAGMA user_version").fetchone()[0])

    # -- writing ---------------------------------------------------------------------------------
    def add_results(
        self, windows: Sequence[WindowResult], changes: Sequence[StateChange] = ()
    ) -> tuple[list[WindowResult], list[StateChange]]:
        """Store windows and state changes in ONE transaction, durable on return; returns copies with ids.

        A change whose ``window_id`` is None is linked to the window of this batch with the same mic
        and ``start_unix_ms == change.time_unix_ms`` (if any).
        """
        rows = [window_rows.window_row(w) for w in windows]
        window_rows.check_changes(changes)
        with self._lock:
            stored_windows, stored_changes = self._write(
                lambda db: window_rows.insert_results(db, windows, rows, changes))
            if self.guard is not None and stored_windows:
                self.guard.record(stored_windows[-1].window_id)
        return stored_windows, stored_changes

    def highest_assigned_window_id(self) -> int:
        """The highest window id this store ever assigned (AUTOINCREMENT keeps it after retention deletes)."""
        with self._lock:
            row = self._db().execute("SELECT seq FROM sqlite_sequence WHERE name = 'windows'").fetchone()
        return int(row[0]) if row else 0

    def _write(self, work):
        """``work(connection)`` in one IMMEDIATE transaction under the store lock; its result."""
        with self._lock:
            return in_transaction(self._db(), work)

    # -- reading ---------------------------------------------------------------------------------
    def get_window(self, window_id: int, include_embedding: bool = True) -> WindowResult | None:
        """One stored window by id (with its embedding by default), or None."""
        found = self.get_windows([window_id], include_embedding)
        return found[0] if found else None

    def get_windows(self, window_ids: Sequence[int], include_embedding: bool = False) -> list[WindowResult]:
        """Stored windows by id, in the order asked; missing ids are skipped."""
        if not window_ids:
            return []
        with self._reading() as db:
            return window_rows.read_windows(db, window_ids, include_embedding)

    def list_events(self, query: EventQuery = EventQuery(), limit: int = 100, page_token: str = "") -> EventPage:
        """Windows and state changes matching ``query``, newest first (a window before its changes), paged.

        Raises ValueError for a bad limit or page token.
        """
        with self._reading() as db:
            return list_events(db, query, limit, page_token)

    def list_windows(self, query: EventQuery = EventQuery(), limit: int = 100, page_token: str = "") -> EventPage:
        """Like `list_events` restricted to window records."""
        return self.list_events(replace(query, kinds=("window",)), limit, page_token)

    def label_buckets(self, query: EventQuery, origin_unix_ms: int, bucket_ms: int) -> list[LabelBucket]:
        """The windows matching ``query`` counted per microphone, time bucket and label
        (`event_queries.label_buckets`)."""
        with self._reading() as db:
            return label_buckets(db, query, origin_unix_ms, bucket_ms)

    def get_event(self, event_id: int) -> StateChange | None:
        """One stored state change (or sound detection) by id, or None."""
        with self._reading() as db:
            return window_rows.read_changes(db, [int(event_id)]).get(int(event_id))

    def sound_detections(self, window_id: int) -> list[StateChange]:
        """The sound_detected events of one stored window, in id order."""
        with self._reading() as db:
            # the literal kind lets SQLite use the partial index events_sound_window
            ids = [row[0] for row in db.execute(f"SELECT id FROM events WHERE window_id = ? AND kind = '{SOUND_DETECTED}' "
                                                "ORDER BY id", (int(window_id),))]
            changes = window_rows.read_changes(db, ids)
        return [changes[i] for i in ids if i in changes]

    # -- recent history (SQL in service/store/window_history.py) ----------------------------------
    def recent_embeddings(self, dim: int, hours: float, exclude_ids: Sequence[int] = (),
                          now_unix_ms: int | None = None, since_unix_ms: int = 0) -> tuple[np.ndarray, float]:
        """Embeddings ``[n, dim]`` of the windows that started in the last ``hours`` (and not before
        ``since_unix_ms``, e.g. when the current model was loaded) and the hours of audio they cover (sum of
        window lengths, all microphones): a home's own background, e.g. to calibrate a custom sound's threshold."""
        start = window_history.recent_start(hours, now_unix_ms, since_unix_ms)
        with self._lock:
            return window_history.recent_embeddings(self._db(), dim, start, {int(i) for i in exclude_ids})

    def recent_window_hours(self, dim: int, hours: float, exclude_ids: Sequence[int] = (),
                            now_unix_ms: int | None = None, since_unix_ms: int = 0) -> float:
        """Hours of audio `recent_window_maps` covers (sum of window lengths, all microphones)."""
        start = window_history.recent_start(hours, now_unix_ms, since_unix_ms)
        with self._lock:
            return window_history.recent_window_hours(self._db(), dim, start, {int(i) for i in exclude_ids})

    def recent_window_maps(self, dim: int, hours: float, exclude_ids: Sequence[int] = (),
                           now_unix_ms: int | None = None, since_unix_ms: int = 0,
                           chunk: int = 128) -> Iterator[list[WindowMap]]:
        """`recent_embeddings` as maps, ``chunk`` windows at a time (128 log-Mel patch maps: 16 MB as float32):
        each window's map where still kept (of whatever size it was stored with), else its pooled embedding
        (one row), each with its pooled embedding. Custom sounds calibrate against these."""
        start = window_history.recent_start(hours, now_unix_ms, since_unix_ms)
        excluded = {int(i) for i in exclude_ids}
        last = 0
        while True:
            with self._lock:
                found = window_history.window_maps_after(self._db(), dim, start, last, chunk, excluded)
            if found is None:
                return
            last, maps = found
            yield maps

    def window_map(self, window_id: int) -> WindowMap | None:
        """A stored window's column map, or None when it was not kept or is pruned."""
        with self._lock:
            return window_history.window_map(self._db(), window_id)

    def prune_window_maps(self, before_unix_ms: int) -> int:
        """Drop the column maps of windows that started before ``before_unix_ms``; returns how many."""
        with self._lock:
            return window_history.prune_window_maps(self._db(), before_unix_ms)

    def recent_levels(self, hours: float, now_unix_ms: int | None = None) -> dict[str, list[float]]:
        """RMS levels (dBFS) of every microphone's windows that started in the last ``hours``, oldest first:
        the level history a microphone's noise floor is learnt from (`window_history.recent_levels`)."""
        with self._reading() as db:
            return window_history.recent_levels(db, window_history.recent_start(hours, now_unix_ms))

    def latest_windows(self) -> dict[str, WindowResult]:
        """The most recent stored window of every microphone (e.g. to resume state after a restart)."""
        with self._reading() as db:
            ids = [row[0] for row in db.execute(
                "SELECT (SELECT id FROM windows w2 WHERE w2.mic_id = m.mic_id ORDER BY start_unix_ms DESC, id DESC LIMIT 1) "
                "FROM (SELECT DISTINCT mic_id FROM windows) m")]
            return {w.mic_id: w for w in window_rows.read_windows(db, ids, False)}

    def counts(self) -> tuple[int, int]:
        """(stored windows, stored state changes)."""
        with self._lock:
            db = self._db()
            return (db.execute("SELECT count(*) FROM windows").fetchone()[0],
                    db.execute("SELECT count(*) FROM events").fetchone()[0])

    # -- activity corrections (SQL in service/store/correction_store.py) -------------------------
    def add_correction(self, correction: Correction) -> Correction:
        """Store what a window really was (replacing an earlier correction of it), durable on return."""
        if correction.embedding is None:
            raise ValueError(f"a correction keeps its window's embedding; window {correction.window_id} has none")
        self._write(lambda db: correction_store.write_correction(db, correction))
        return correction

    def remove_correction(self, window_id: int) -> bool:
        """Forget the correction of a window; False when it had none."""
        return self._write(lambda db: correction_store.delete_correction(db, window_id))

    def list_corrections(self, window_ids: Sequence[int] = (), mic_ids: Sequence[str] = (), labels: Sequence[str] = (),
                         include_embedding: bool = False) -> list[Correction]:
        """Corrections newest first, filtered by window, microphone and corrected label (empty = all)."""
        with self._reading() as db:
            return correction_store.read_corrections(db, tuple(int(i) for i in window_ids), tuple(mic_ids), tuple(labels),
                                                     include_embedding)

    def record_model_run(self, model_sha256: str, started_unix_ms: int | None = None) -> None:
        """Note that from now (or ``started_unix_ms``) on the daemon embeds windows with this model."""
        started = int(time.time() * 1000) if started_unix_ms is None else int(started_unix_ms)
        self._write(lambda db: correction_store.record_model_run(db, model_sha256, started))

    def model_at(self, time_unix_ms: int) -> str | None:
        """The model the daemon ran at ``time_unix_ms``; None before the first recorded run."""
        with self._reading() as db:
            return correction_store.model_at(db, time_unix_ms)

    # -- activity sessions (SQL in service/store/session_store.py) -------------------------------
    def add_session_events(self, events: Sequence[SessionEvent]) -> list[SessionEvent]:
        """Store session starts and ends in one transaction, durable on return; returns them with ids."""
        return self._write(lambda db: [replace(e, session=replace(e.session, session_id=session_store.write_session_event(db, e)))
                                       for e in events])

    def close_open_sessions(self) -> list[ActivitySession]:
        """End the sessions a crashed daemon left open (at their last stored window); returns them."""
        return self._write(session_store.close_open_sessions)

    def list_sessions(self, query: SessionQuery = SessionQuery(), limit: int = 100, page_token: str = "") -> SessionPage:
        """Sessions newest start first, filtered and paged; ValueError for a bad limit or token."""
        with self._reading() as db:
            return session_store.list_sessions(db, query, limit, page_token)

    # -- similarity (the cache and its indexes: service/store/similarity_index.py) ---------------
    def _embeddings_after(self, window_id: int, limit: int) -> list[tuple[int, str, bytes, int]]:
        """What the similarity cache loads: stored embeddings above ``window_id`` (`window_rows.embeddings_after`)."""
        with self._reading() as db:
            return window_rows.embeddings_after(db, window_id, limit)

    def nearest(
        self, embedding: np.ndarray, k: int = 10, mic_id: str | Sequence[str] | None = None, exclude_ids: Sequence[int] = ()
    ) -> NearestResult:
        """The ``k`` stored windows nearest to ``embedding`` by cosine distance.

        Exact while the query's dimension has fewer than ``similarity.exact_below`` stored rows; above,
        approximate (faiss IVF-SQ8): a true neighbour can be missed, and the ``k * similarity.rerank``
        candidates are re-scored from their stored float16 vectors so distances stay exact (with
        ``rerank = 0`` they are 8-bit approximations). Only rows of the same embedding dimension are
        compared; ``mic_id`` restricts the search to one or several microphones, ``exclude_ids`` leaves
        windows out (e.g. the query window).
        """
        return self._similar.nearest(embedding, k, mic_id, exclude_ids)

    def warm_similarity(self) -> dict[int, IndexSummary]:
        """Load every stored embedding into the similarity indexes now (training the IVF index when due), so
        the first `nearest` after a start does not pay for it; returns `similarity_indexes()`."""
        return self._similar.warm()

    def similarity_indexes(self) -> dict[int, IndexSummary]:
        """Kind ("exact" or "ivf"), rows, bytes held in memory and list-file bytes of the similarity index of
        each embedding dimension; empty before the first `nearest`."""
        return self._similar.summaries()

    # -- retention (service/store/retention.py) --------------------------------------------------
    def bytes_in_use(self) -> int:
        """Database pages in use (excludes free pages and the WAL file), in bytes."""
        with self._lock:
            return retention.bytes_in_use(self._db())

    def enforce_retention(self, now_unix_ms: int | None = None) -> RetentionReport:
        """Delete what is older than ``config.max_age_days``, then the oldest windows/events until the pages in
        use fit ``config.max_size_mb``; frees the pages and truncates the WAL. Safe to call from any thread."""
        now = int(time.time() * 1000) if now_unix_ms is None else int(now_unix_ms)
        windows_deleted = events_deleted = 0
        cutoff = retention.age_cutoff(self.config, now)
        if cutoff is not None:  # inf = keep forever; the size limit below still holds
            w, e = self._delete_before(cutoff, inclusive=False)
            windows_deleted, events_deleted = windows_deleted + w, events_deleted + e
        for _ in range(50):  # each pass removes a proportional share; a few passes always suffice
            used = self.bytes_in_use()
            if used <= self.config.max_bytes:
                break
            with self._lock:
                cutoff = retention.size_cutoff(self._db(), self.config, used)
            if cutoff is None:
                break
            w, e = self._delete_before(cutoff, inclusive=True)
            windows_deleted, events_deleted = windows_deleted + w, events_deleted + e
        return RetentionReport(windows_deleted, events_deleted, self.bytes_in_use())

    def _delete_before(self, cutoff_unix_ms: int, inclusive: bool) -> tuple[int, int]:
        """Delete windows starting and changes happening before (or at) the cutoff; release pages."""
        with self._lock:
            ids, events = self._write(lambda db: retention.delete_before(db, cutoff_unix_ms, inclusive))
            if ids or events:
                retention.release_pages(self._db())
        self._similar.remove(ids)  # after the store lock: the cache lock is never taken inside it
        return len(ids), events
