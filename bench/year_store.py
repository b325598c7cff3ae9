"""A year of windows in one store: build it, then time what a user does with it.

Builds a store of ``--windows`` rows (default 12.6 M: four microphones, one 10 s window every 10 s each, for a
year ending now) through the store's own schema (`EventStore` creates it, rows go in with executemany in
transactions of ``--chunk`` rows, synchronous off while building): labels in runs (a Markov chain per
microphone over the bundled head's eight classes, quiet at night), probabilities and health scores as the
daemon writes them, 256-d float16 embeddings shaped like the bundled model's (`SHARE`), ~1.5 % degraded and ~0.3 % faulty windows,
an activity_changed event at every label change, a health_changed event at every health change, and an
activity session for every run of two or more windows. Then, in a fresh process (so peak RSS is the serving
side's, not the builder's), it measures:

- start to serving: opening the store (schema check) and answering the first ListEvents page, and
  ``roomtone run --store`` to its "roomtone running" line and a first gRPC ListEvents; the integrity check
  runs in the background (its duration is reported separately); ``--cold-start`` drops the store's pages from
  the page cache first (a year's 18 GB store does not stay in the page cache of a 24 GB machine);
- ListEvents (100) first page and a deep page (a page token half-way back), and ``--since 7d`` for one
  microphone (every page of it, MAX_PAGE rows each, as ``roomtone events --since 7d --mic`` reads them);
- FindSimilar k = 10: the exact scan (streamed from SQLite) against the index FindSimilar builds, recall@10;
- ListSessions first page; the web timeline's 7-day request (the same /api calls the page makes);
- one retention pass (the oldest day deleted: 365 days kept of a year; it changes the store, so measure a copy
  to keep the store whole), the size on disk, peak RSS.
tests/service/test_query_plans.py keeps these queries on indexes (EXPLAIN QUERY PLAN).

Usage (the year takes ~13 GB; check ``df -h`` first; the build is the slow part):

    nice -n 19 .venv/bin/python -m bench.year_store --windows 1000000 --path /work/tmp/year1m/roomtone.db
    nice -n 19 .venv/bin/python -m bench.year_store --path P --measure-only        # reuse a built store
    nice -n 19 .venv/bin/python -m bench.year_store --path P --measure-only --no-daemon --parts timeline
    nice -n 19 .venv/bin/python -m bench.year_store --windows 12600000 --path P --skip-exact

Prints one JSON object per phase. Figures on a loaded machine are upper bounds (the load is printed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from bench.host import load_average

REPO = Path(__file__).resolve().parents[1]

CLASSES = ("animals", "footsteps_doors", "motor_machine", "quiet_ambience", "speech", "tv_speech_music", "typing",
           "water")
CHECKS = ("non_finite", "clipping", "dropout", "dead_channel", "dc_offset", "hum", "stuck", "drift")
HOP_MS = 10_000
DAY_MS = 86_400_000
DIM = 256
PARTS = ("list_events", "since_7d", "sessions", "timeline", "integrity", "similar", "retention")


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib(field: str = "VmRSS") -> float:
    """This process's resident memory now, MiB (``field``: VmRSS, or its RssAnon / RssFile parts)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def report(phase: str, **figures) -> dict:
    """Print one phase's figures as a JSON line (with the load average and RSS) and return them."""
    entry = {"phase": phase, **figures, "rss_mib": round(rss_mib(), 1), "peak_rss_mib": round(peak_rss_mib(), 1),
             "load_average": load_average()}
    print(json.dumps(entry), flush=True)
    return entry


# --- building -----------------------------------------------------------------------------------------

def label_runs(rng: np.random.Generator, n: int, hour_of_day: np.ndarray) -> np.ndarray:
    """Class index per window of one microphone: runs of mean length ~30 windows (5 min), quiet at night."""
    change = rng.random(n) < 1 / 30
    change[0] = True
    picks = rng.integers(0, len(CLASSES), n)
    night = (hour_of_day < 6) | (hour_of_day >= 23)
    picks = np.where(night & (rng.random(n) < 0.85), CLASSES.index("quiet_ambience"), picks)
    run_id = np.cumsum(change) - 1
    return picks[np.flatnonzero(change)][run_id]


def json_pools(rng: np.random.Generator) -> tuple[list[list[str]], list[str], list[str]]:
    """Pre-rendered probabilities JSON per class (64 variants each), health scores JSON (64 variants) and the
    reasons JSON of a degraded and a faulty window, as `window_rows.window_row` renders them."""
    probabilities = []
    for c in range(len(CLASSES)):
        variants = []
        for _ in range(64):
            p = rng.dirichlet(np.ones(len(CLASSES)) * 0.3)
            p[c] += 2.0
            p /= p.sum()
            variants.append(json.dumps({name: float(v) for name, v in zip(CLASSES, p)}))
        probabilities.append(variants)
    scores = [json.dumps({name: float(v) for name, v in zip(CHECKS, rng.random(len(CHECKS)) * 0.3)}) for _ in range(64)]
    reasons = [json.dumps([]), json.dumps(["hum: a 50 Hz mains line 14.2 dB over its background"]),
               json.dumps(["dropout: 3.1 s of digital silence (samples exactly 0)"])]
    return probabilities, scores, reasons


#: How a synthetic embedding is made, as square roots of shares of its power: a direction all windows share,
#: its class's direction, one of 64 sub-centres of the class, and noise (all random unit vectors, so nearly
#: orthogonal in 256-d). The shares give what the bundled model gives the 320 homesounds clips (2026-12-07):
#: cosine 0.73 between classes, 0.88 within a class, ~0.99 to the nearest clip. (Before: a unit centre plus
#: N(0, 0.35) per dimension, i.e. cosines near 0: isotropic noise, a worst case no real store looks like.)
SHARE = {"common": 0.73 ** 0.5, "class": 0.15 ** 0.5, "centre": 0.105 ** 0.5, "noise": 0.015 ** 0.5}


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random unit vectors of DIM float32."""
    rows = rng.standard_normal((n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def build(path: Path, windows: int, mics: int, chunk: int, seed: int) -> dict:
    """Write ``windows`` rows (and their events and sessions) into a new store at ``path``; returns figures."""
    from service.store.event_store import EventStore

    if path.exists():
        raise SystemExit(f"{path} exists: pass --measure-only to measure it, or remove it to build anew")
    path.parent.mkdir(parents=True, exist_ok=True)
    EventStore(path).close()  # the schema, through the store's own migrations
    rng = np.random.default_rng(seed)
    common, classes, centres = (unit_rows(rng, n) for n in (1, len(CLASSES), 512))
    probabilities, scores, reasons = json_pools(rng)
    per_mic = math.ceil(windows / mics)
    end_ms = int(time.time() * 1000) // HOP_MS * HOP_MS
    first_ms = end_ms - per_mic * HOP_MS
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -262144")  # 256 MiB of page cache while building
    started = time.perf_counter()
    written = events = sessions = 0
    last_label = [-1] * mics
    last_health = ["ok"] * mics
    open_session: list[list | None] = [None] * mics  # [start, end, windows, probability sum, class]
    per_chunk = max(1, chunk // mics)
    next_print = 0.0
    for block in range(0, per_mic, per_chunk):
        steps = min(per_chunk, per_mic - block)
        times = first_ms + (block + np.arange(steps)) * HOP_MS
        hours = (times // 3_600_000) % 24
        window_rows, event_rows, session_rows = [], [], []
        for m in range(mics):
            labels = label_runs(rng, steps, hours)
            if last_label[m] >= 0:  # the run going at the end of the last block goes on
                labels[: np.argmax(labels != labels[0]) or steps] = last_label[m]
            health_roll = rng.random(steps)
            health = np.where(health_roll < 0.003, 2, np.where(health_roll < 0.018, 1, 0))
            centre = labels * 64 + rng.integers(0, 64, steps)
            noise = unit_rows(rng, steps)
            vectors = (SHARE["common"] * common + SHARE["class"] * classes[labels] + SHARE["centre"] * centres[centre]
                       + SHARE["noise"] * noise)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            blobs = vectors.astype("<f2")
            rms = rng.normal(-48.0, 9.0, steps)
            variant = rng.integers(0, 64, steps)
            for i in range(steps):
                t = int(times[i])
                c = int(labels[i])
                h = ("ok", "degraded", "faulty")[health[i]]
                window_id = block * mics + i * mics + m + 1
                window_rows.append((window_id, f"mic{m}", t, t + HOP_MS, None if h == "faulty" else CLASSES[c],
                                    probabilities[c][variant[i]], h, reasons[health[i]], scores[variant[i]],
                                    float(rms[i]), None if h == "faulty" else blobs[i].tobytes(),
                                    None if h == "faulty" else DIM))
                if c != last_label[m]:
                    event_rows.append(("activity_changed", f"mic{m}", t, None if last_label[m] < 0 else CLASSES[last_label[m]],
                                       CLASSES[c], window_id, "[]"))
                    run = open_session[m]
                    if run is not None and run[2] >= 2 and run[4] != CLASSES.index("quiet_ambience"):
                        session_rows.append((f"mic{m}", CLASSES[run[4]], run[0], run[1], run[2], run[3] / run[2]))
                    open_session[m] = [t, t + HOP_MS, 0, 0.0, c]
                    last_label[m] = c
                run = open_session[m]
                run[1], run[2], run[3] = t + HOP_MS, run[2] + 1, run[3] + 0.8
                if h != last_health[m]:
                    event_rows.append(("health_changed", f"mic{m}", t, last_health[m], h, window_id,
                                       reasons[health[i]]))
                    last_health[m] = h
        window_rows.sort(key=lambda row: row[0])
        db.execute("BEGIN")
        db.executemany("INSERT INTO windows (id, mic_id, start_unix_ms, end_unix_ms, label, probabilities_json, "
                       "health_state, health_reasons_json, health_scores_json, rms_dbfs, embedding, embedding_dim) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", window_rows)
        db.executemany("INSERT INTO events (kind, mic_id, time_unix_ms, previous, current, window_id, reasons_json) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", event_rows)
        db.executemany("INSERT INTO sessions (mic_id, activity, start_unix_ms, end_unix_ms, windows, mean_probability) "
                       "VALUES (?, ?, ?, ?, ?, ?)", session_rows)
        db.execute("COMMIT")
        written += len(window_rows)
        events += len(event_rows)
        sessions += len(session_rows)
        elapsed = time.perf_counter() - started
        if elapsed >= next_print:
            next_print = elapsed + 30.0
            rate = written / elapsed
            print(f"build: {written:,} / {per_mic * mics:,} windows, {rate:,.0f}/s, "
                  f"~{(per_mic * mics - written) / rate / 60:.1f} min left", file=sys.stderr, flush=True)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("ANALYZE")
    db.close()
    seconds = time.perf_counter() - started
    return report("build", windows=written, events=events, sessions=sessions, mics=mics, seconds=round(seconds, 1),
                  windows_per_s=round(written / seconds), bytes_on_disk=path.stat().st_size,
                  bytes_per_window=round(path.stat().st_size / written), first_unix_ms=first_ms, end_unix_ms=end_ms)


# --- measuring ----------------------------------------------------------------------------------------

def timed(fn, repeats: int = 1):
    """(result of the last call, median seconds over ``repeats`` calls, all seconds)."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return result, float(np.median(times)), times


def ms(seconds: float) -> float:
    """Seconds as ms, 2 decimals."""
    return round(seconds * 1000, 2)


def exact_neighbours(path: Path, queries: np.ndarray, k: int, batch: int = 200_000) -> tuple[np.ndarray, float]:
    """Ids ``[q, k]`` of the exact cosine nearest stored windows of every query (a streamed scan of every
    stored embedding; what FindSimilar's exact mode computes), and the seconds the scan took."""
    started = time.perf_counter()
    best_ids = np.full((len(queries), k), -1, np.int64)
    best = np.full((len(queries), k), -np.inf, np.float32)
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    last = 0
    while True:
        rows = db.execute("SELECT id, embedding FROM windows WHERE id > ? AND embedding IS NOT NULL ORDER BY id "
                          "LIMIT ?", (last, batch)).fetchall()
        if not rows:
            break
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        vectors = np.frombuffer(b"".join(r[1] for r in rows), "<f2").reshape(len(rows), DIM).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        sims = queries @ vectors.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        cand = np.concatenate([best, np.take_along_axis(sims, top, 1)], axis=1)
        cand_ids = np.concatenate([best_ids, ids[top]], axis=1)
        order = np.argsort(-cand, axis=1)[:, :k]
        best, best_ids = np.take_along_axis(cand, order, 1), np.take_along_axis(cand_ids, order, 1)
        last = int(ids[-1])
    db.close()
    return best_ids, time.perf_counter() - started


def measure(path: Path, args) -> dict:
    """Every figure of the module docstring, on the store at ``path``."""
    from service.config import StoreConfig
    from service.store.event_store import EventQuery, EventStore
    from service.store.session_store import SessionQuery
    from service.store.store_guard import table_checks

    out = {}
    size = path.stat().st_size
    out["size"] = report("size", bytes_on_disk=size, gib=round(size / 2**30, 2))
    t0 = time.perf_counter()
    store = EventStore(path, StoreConfig(max_age_days=math.inf, max_size_mb=1e7))
    opened = time.perf_counter() - t0
    first_page = store.list_events(EventQuery(), 100)
    serving = time.perf_counter() - t0
    windows = store.highest_assigned_window_id()
    out["open"] = report("store_open_to_first_page", open_ms=ms(opened), first_page_served_ms=ms(serving),
                         items=len(first_page.items), windows=windows)
    newest = max(i.start_unix_ms if hasattr(i, "start_unix_ms") else i.time_unix_ms for i in first_page.items)

    parts = set(args.parts)
    if "list_events" in parts:
        out["list_events"] = report("list_events", **list_events_pages(store, newest, windows))
    if "since_7d" in parts:
        out["since_7d"] = report("since_7d_one_mic", **since_7d(store, newest))
    if "sessions" in parts:
        _, sessions_first, _ = timed(lambda: store.list_sessions(SessionQuery(), 100), 20)
        _, sessions_7d, _ = timed(lambda: store.list_sessions(SessionQuery(since_unix_ms=newest - 7 * DAY_MS), 100), 5)
        out["sessions"] = report("list_sessions", first_page_median_ms=ms(sessions_first),
                                 since_7d_first_page_median_ms=ms(sessions_7d))
    if "timeline" in parts:
        out["timeline"] = report("web_timeline_7d", **web_timeline(store, newest))
    if "integrity" in parts:
        t0 = time.perf_counter()
        checked = list(table_checks(path))
        out["integrity"] = report("integrity_check_background", seconds=round(time.perf_counter() - t0, 1),
                                  ok=all(p.ok for p in checked), per_table_s=[round(p.seconds, 1) for p in checked])
    if "similar" in parts:
        out["similar"] = report("find_similar", **find_similar(store, path, args))
    if "retention" in parts:
        with store._reading() as db:  # noqa: SLF001 - the bench asks the store's span
            oldest = db.execute("SELECT min(start_unix_ms) FROM windows").fetchone()[0]
        keep_days = max(1.0, (newest - oldest) / DAY_MS - 1)  # a year: 365 days kept; always the oldest day goes
        t0, c0 = time.perf_counter(), time.process_time()
        retention_store = EventStore(path, StoreConfig(max_age_days=keep_days, max_size_mb=1e7))
        result = retention_store.enforce_retention(now_unix_ms=newest + HOP_MS)
        retention_store.close()
        out["retention"] = report("retention_pass", kept_days=round(keep_days, 2), seconds=round(time.perf_counter() - t0, 2),
                                  cpu_seconds=round(time.process_time() - c0, 2),
                                  windows_deleted=result.windows_deleted, events_deleted=result.events_deleted,
                                  bytes_in_use=result.bytes_in_use, bytes_on_disk=path.stat().st_size)
    store.close()
    return out


def list_events_pages(store, newest: int, windows: int) -> dict:
    """ListEvents (100): first page, a deep page half-way back, one microphone's first page."""
    from service.store.event_queries import EventQuery, encode_page_token

    _, first, times = timed(lambda: store.list_events(EventQuery(), 100), 20)
    with store._reading() as db:  # noqa: SLF001 - the bench places its deep page in the middle of the store
        oldest = db.execute("SELECT min(start_unix_ms) FROM windows").fetchone()[0]
    deep_token = encode_page_token(((oldest + newest) // 2, 1, windows // 2))  # what paging there would hold
    _, deep, deep_times = timed(lambda: store.list_events(EventQuery(), 100, deep_token), 20)
    one_mic = EventQuery(mic_ids=("mic1",))
    _, mic_first, _ = timed(lambda: store.list_events(one_mic, 100), 20)
    return {"first_page_median_ms": ms(first), "first_page_max_ms": ms(max(times)), "deep_page_median_ms": ms(deep),
            "deep_page_max_ms": ms(max(deep_times)), "one_mic_first_page_median_ms": ms(mic_first)}


def since_7d(store, newest: int) -> dict:
    """``roomtone events --since 7d --mic mic1``: every page of it, MAX_PAGE rows each."""
    from service.cli.events_command import MAX_PAGE
    from service.store.event_store import EventQuery

    def read_all():
        query = EventQuery(mic_ids=("mic1",), since_unix_ms=newest - 7 * DAY_MS)
        token, rows, pages = "", 0, 0
        while True:
            page = store.list_events(query, MAX_PAGE, token)
            rows, pages, token = rows + len(page.items), pages + 1, page.next_page_token
            if not token:
                return rows, pages
    (rows, pages), seconds, _ = timed(read_all, 1)
    first_page = timed(lambda: store.list_events(EventQuery(mic_ids=("mic1",), since_unix_ms=newest - 7 * DAY_MS),
                                                 MAX_PAGE), 3)[1]
    return {"rows": rows, "pages": pages, "seconds": round(seconds, 3), "first_page_ms": ms(first_page)}


def web_timeline(store, newest: int) -> dict:
    """The web page's 7-day timeline: every /api call `timeline.js` makes (the run summary, health changes,
    sessions), over HTTP, against the real web server on this store; and, for comparison, every window of the
    week as the page fetched it before the summary (at most its 10 pages of 10,000). Wall seconds and the CPU
    seconds of this process (client and server both live in it)."""
    from encoder.windows import WindowSpec
    from service.config import WebConfig
    from service.web.live import LiveFeed
    from service.web.server import WebBackend, WebServer

    backend = WebBackend(store=store, feed=LiveFeed(floor_db=-100.0), microphones=lambda: [], windows=WindowSpec(),
                         sessions_enabled=True)
    server = WebServer(WebConfig(port=0), backend)
    port = server.start()
    base = f"http://127.0.0.1:{port}"
    since, until = newest + HOP_MS - 7 * DAY_MS, newest + HOP_MS

    def get(url: str) -> dict:
        with urllib.request.urlopen(f"{base}{url}", timeout=600) as response:
            return json.loads(response.read())

    def fetch_all(url: str, key: str, max_pages: int | None = None) -> int:
        items, page, pages = 0, "", 0
        while True:
            body = get(f"{url}&page={page}")
            items, pages, page = items + len(body[key]), pages + 1, body.get("next_page", "")
            if not page or pages == max_pages:
                return items

    try:
        t0, c0 = time.perf_counter(), time.process_time()
        summary = get(f"/api/timeline?since_ms={since}&until_ms={until}&buckets=1000")
        t_summary, c_summary = time.perf_counter() - t0, time.process_time() - c0
        changes = fetch_all(f"/api/changes?kind=health_changed&since_ms={since}&limit=10000", "changes")
        sessions = fetch_all(f"/api/sessions?since_ms={since}&limit=10000", "sessions")
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        t1, c1 = time.perf_counter(), time.process_time()
        windows = fetch_all(f"/api/windows?since_ms={since}&limit=10000", "windows", max_pages=10)
        t_windows, c_windows = time.perf_counter() - t1, time.process_time() - c1
    finally:
        server.stop()
    return {"seconds": round(total, 2), "cpu_seconds": round(cpu, 2), "summary_seconds": round(t_summary, 2),
            "summary_cpu_seconds": round(c_summary, 2), "summary_windows": summary["windows"],
            "summary_runs": len(summary["runs"]), "health_changes": changes, "sessions": sessions,
            "before_every_window_seconds": round(t_windows, 2), "before_every_window_cpu_seconds": round(c_windows, 2),
            "before_windows_fetched": windows}


def find_similar(store, path: Path, args) -> dict:
    """FindSimilar k=10 through the store's index against the exact scan: latency, recall@10, index memory."""
    rng = np.random.default_rng(7)
    top = store.highest_assigned_window_id()
    query_ids = sorted({int(i) for i in rng.integers(1, top, args.queries * 2)})
    found = [w for w in store.get_windows(query_ids, include_embedding=True) if w.embedding is not None][:args.queries]
    queries = np.stack([w.embedding for w in found]).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    rss_before = rss_mib()
    t0 = time.perf_counter()
    store.nearest(queries[0], k=10)  # loads (and trains) the index
    build_s = time.perf_counter() - t0
    summary = {dim: s for dim, s in store.similarity_indexes().items()}
    latencies, index_ids = [], []
    for q in queries:
        t0 = time.perf_counter()
        result = store.nearest(q, k=10)
        latencies.append(time.perf_counter() - t0)
        index_ids.append([w.window_id for w, _ in result.neighbors])
    figures = {"queries": len(queries), "index": {str(d): {"kind": s.kind, "rows": s.rows, "mib": round(s.nbytes / 2**20),
                                                           "list_file_mib": round(s.file_bytes / 2**20)}
                                                  for d, s in summary.items()},
               "index_load_s": round(build_s, 1), "index_median_ms": ms(float(np.median(latencies))),
               "index_p95_ms": ms(float(np.percentile(latencies, 95))),
               "rss_grew_by_index_mib": round(rss_mib() - rss_before),
               # the serving side's figures: taken before the bench's own exact scan below, which the daemon never runs
               "rss_mib_after_index_queries": round(rss_mib(), 1), "rss_anon_mib": round(rss_mib("RssAnon"), 1),
               "rss_file_mib": round(rss_mib("RssFile"), 1), "peak_rss_mib_before_exact_scan": round(peak_rss_mib(), 1)}
    if not args.skip_exact:
        exact, scan_s = exact_neighbours(path, queries, 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(index_ids, exact.tolist())])
        figures.update(exact_scan_s_for_all_queries=round(scan_s, 1), recall_at_10=round(float(recall), 3))
    return figures


def drop_from_page_cache(path: Path) -> None:
    """Drop the file's clean pages from the page cache (as after a reboot, or as a store larger than the page
    cache is read); only this file's, so nothing else on the machine is touched."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def daemon_start(path: Path, model: str, cold: bool = False) -> dict:
    """`roomtone run --store` on the built store: seconds to its 'roomtone running' line and a first gRPC
    ListEvents (``cold``: the store's pages dropped from the page cache first)."""
    import grpc

    from bench.daemon_process import Daemon
    from service.rpc import roomtone_pb2 as pb
    from service.rpc import roomtone_pb2_grpc as pb_grpc

    data = Path(tempfile.mkdtemp(prefix="roomtone-year-"))
    if cold:
        drop_from_page_cache(path)
    t0 = time.monotonic()
    daemon = Daemon(["--store", str(path), "--model", model, "--file", f"mic0={REPO / 'service/assets/demo.flac'}",
                     "--web-port", "0"], data, timeout=600,
                    env={"ROOMTONE_STORE__MAX_SIZE_MB": "10000000", "ROOMTONE_STORE__MAX_AGE_DAYS": "inf"})
    running = time.monotonic() - t0
    try:
        with grpc.insecure_channel(daemon.grpc_address) as channel:
            reply = pb_grpc.RoomtoneStub(channel).ListEvents(pb.ListEventsRequest(limit=100), timeout=60)
        served = time.monotonic() - t0
        rss = daemon.rss_mib()
        time.sleep(20)
        rss_later = daemon.rss_mib()
        checked = next((e for e in daemon.lines if e.get("message") == "store integrity checked"), None)
    finally:
        daemon.stop(300)
        shutil.rmtree(data, ignore_errors=True)
    return {"to_running_s": round(running, 2), "to_first_list_events_s": round(served, 2),
            "first_page_items": len(reply.events), "rss_mib_at_serving": round(rss, 1),
            "rss_mib_20s_later": round(rss_later, 1),
            "integrity_check_done_within_20s": checked is not None, "store_cold": cold}


def main(argv: list[str] | None = None) -> int:
    """Build (unless --measure-only), then measure in a fresh process."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=12_600_000, help="windows to build (all microphones)")
    parser.add_argument("--mics", type=int, default=4, help="microphones the windows are spread over")
    parser.add_argument("--path", type=Path, required=True, help="where the store goes (a new file)")
    parser.add_argument("--chunk", type=int, default=200_000, help="windows per build transaction")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--queries", type=int, default=20, help="FindSimilar queries timed and checked for recall")
    parser.add_argument("--skip-exact", action="store_true", help="no exact scan (no recall@10)")
    parser.add_argument("--measure-only", action="store_true", help="measure the store at --path as it is")
    parser.add_argument("--no-daemon", action="store_true", help="skip the `roomtone run --store` start-up")
    parser.add_argument("--cold-start", action="store_true",
                        help="drop the store's pages from the page cache before `roomtone run --store` starts")
    parser.add_argument("--model", default=str(REPO / "models" / "roomtone.pt"))
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS,
                        help="what to measure (the store is always opened and its first page read)")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)  # the measuring child
    args = parser.parse_args(argv)
    if args.in_process:
        measure(args.path, args)
        return 0
    free = shutil.disk_usage(args.path.parent if args.path.parent.exists() else Path("/")).free
    print(json.dumps({"phase": "disk", "free_gib": round(free / 2**30, 1), "load_average": load_average()}), flush=True)
    if not args.measure_only:
        need = args.windows * 1150
        if need > free * 0.9:
            raise SystemExit(f"{args.windows:,} windows need about {need / 2**30:.1f} GiB; "
                             f"{free / 2**30:.1f} GiB free under {args.path.parent}")
        build(args.path, args.windows, args.mics, args.chunk, args.seed)
    if not args.no_daemon:
        report("daemon_start", **daemon_start(args.path, args.model, args.cold_start))
    child = [sys.executable, "-m", "bench.year_store", "--path", str(args.path), "--in-process",
             "--queries", str(args.queries), "--parts", *args.parts]
    child += ["--skip-exact"] if args.skip_exact else []
    return subprocess.call(child, cwd=REPO)


if __name__ == "__main__":
    sys.exit(main())
