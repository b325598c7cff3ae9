"""Activity-session benchmark: how well SessionTracker (service/analysis/sessions.py) turns noisy per-window labels
into one session per real activity, on long streams made of held-out clips.

Every homesounds clip (10 s = one window) is labelled by a head that never saw it: the bundled encoder's
embeddings, a logistic head fitted on the three other folds (the DCASE 2018 task 5 protocol), so each
window carries the label and probabilities the daemon would give an unseen recording. A stream is a run
of true segments: a class (never the previous one) held for 3-8 clips of that class from one fold,
back to back. The tracker sees the windows in order with their held-out labels; its sessions are
compared with the true segments:

- a session *matches* a segment when the activity is the same and they overlap by at least half of the
  longer of the two (greedy one-to-one, longest overlap first);
- segments found = matched segments / true segments; session precision = matched / sessions;
- spurious switches per hour = sessions that match no segment, per hour of stream (what Home Assistant
  would see as an activity wrongly turning on); window label changes per hour = the raw `activity_changed`
  spam the sessions replace;
- start error = |session start - segment start| of matched pairs, median seconds.

Each stream is run twice: with the head's most probable class per window, and with the daemon's own
activity decision (service/analysis/activity.py: `quiet` below the level floor, `unknown` when the head is unsure,
both ignored by sessions; `quiet_ambience` segments, homesounds' stand-in for absence, then expect no
session and are left out of the true segments).

Two streams with different seeds: "tune" to choose settings, "report" to measure them. The clips repeat
across a long stream (320 clips, 53 min in all), in new orders.

    .venv/bin/python -m bench.sessions                   # grid of min_duration_s x gap_tolerance_s, both streams
    .venv/bin/python -m bench.sessions --hours 4 --json  # one JSON object per setting

Takes about a minute on 2 CPU cores (embedding the 320 clips once).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.config import SessionConfig
from service.records import WindowResult
from service.analysis.sessions import SessionTracker
from service.daemon_vocabulary import RESERVED_LABELS

REPO = Path(__file__).resolve().parents[1]

HOP_MS = 10_000
MIN_DURATIONS = (0.0, 10.0, 20.0, 30.0)
GAPS = (0.0, 10.0, 20.0, 30.0, 60.0)
#: homesounds' stand-in for SINS "absence": with the daemon's decision it should read quiet, not a session.
ABSENCE = ("quiet_ambience",)


@dataclass(frozen=True)
class Clip:
    label: str
    fold: int
    predicted: str  # the head's most probable class
    probabilities: dict[str, float]
    decided: str  # the daemon's activity decision (service/analysis/activity.py): a class, quiet or unknown


def held_out_clips(data: Path, model: Path) -> list[Clip]:
    """Every clip of ``data`` with the label a head fitted on the other folds gives it."""
    import torch

    from encoder.audio import load_audio
    from encoder.recording_embeddings import embed_windows
    from encoder.head import fit_head
    from encoder.model_file import load_model
    from service.analysis.activity import decide_activity
    from service.analysis.result_builder import rms_dbfs

    bundle = load_model(model, device="cpu")
    with open(data / "meta.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    waves = [load_audio(data / row["path"], mono=True)[0][0] for row in rows]
    length = min(w.shape[-1] for w in waves)
    embeddings = embed_windows(bundle, torch.stack([w[:length] for w in waves]))
    levels = [rms_dbfs(w[:length].numpy()[None, :]) for w in waves]
    labels = np.array([row["label"] for row in rows])
    folds = np.array([int(row["fold"]) for row in rows])
    clips: list[Clip | None] = [None] * len(rows)
    for fold in sorted(set(folds)):
        head = fit_head(embeddings[folds != fold], list(labels[folds != fold]))
        test = np.flatnonzero(folds == fold)
        proba = head.predict_proba(embeddings[test])
        for i, row in zip(test, proba):
            probs = {name: float(p) for name, p in zip(head.class_names, row)}
            clips[i] = Clip(labels[i], int(fold), head.class_names[int(row.argmax())], probs,
                            decide_activity(probs, levels[i], "ok"))
    return [c for c in clips if c is not None]


def make_stream(clips: list[Clip], hours: float, seed: int) -> tuple[list[Clip], list[tuple[str, int, int]]]:
    """Windows of a stream and its true segments (activity, start ms, end ms)."""
    rng = np.random.default_rng(seed)
    by_class_fold: dict[tuple[str, int], list[Clip]] = {}
    for clip in clips:
        by_class_fold.setdefault((clip.label, clip.fold), []).append(clip)
    classes = sorted({c.label for c in clips})
    windows: list[Clip] = []
    segments: list[tuple[str, int, int]] = []
    previous = None
    while len(windows) * HOP_MS < hours * 3_600_000:
        label = rng.choice([c for c in classes if c != previous])
        fold = int(rng.integers(1, 5))
        pool = by_class_fold[(label, fold)]
        count = int(rng.integers(3, 9))
        picked = [pool[i] for i in rng.choice(len(pool), size=min(count, len(pool)), replace=False)]
        start = len(windows) * HOP_MS
        windows += picked
        segments.append((str(label), start, len(windows) * HOP_MS))
        previous = label
    return windows, segments


def evaluate(windows: list[Clip], segments: list[tuple[str, int, int]], config: SessionConfig,
             decided: bool = False) -> dict:
    """Sessions of the tracker over the stream against the true segments; ``decided``: windows carry the
    daemon's decision (quiet/unknown are ignored labels, and absence segments expect no session)."""
    tracker = SessionTracker(config)
    sessions = []
    if decided:
        segments = [s for s in segments if s[0] not in ABSENCE]
    for i, clip in enumerate(windows):
        label = clip.decided if decided else clip.predicted
        window = WindowResult("bench", i * HOP_MS, (i + 1) * HOP_MS, label, clip.probabilities, "ok", (), {}, -30.0)
        sessions += [e.session for e in tracker.update(window) if e.kind == "session_ended"]
    sessions += [e.session for e in tracker.close_all()]
    pairs = []
    for si, s in enumerate(sessions):
        for gi, (label, start, end) in enumerate(segments):
            if s.activity != label:
                continue
            overlap = min(s.end_unix_ms, end) - max(s.start_unix_ms, start)
            if overlap >= 0.5 * max(s.end_unix_ms - s.start_unix_ms, end - start):
                pairs.append((overlap, si, gi))
    matched_s, matched_g, start_errors = set(), set(), []
    for overlap, si, gi in sorted(pairs, reverse=True):
        if si in matched_s or gi in matched_g:
            continue
        matched_s.add(si)
        matched_g.add(gi)
        start_errors.append(abs(sessions[si].start_unix_ms - segments[gi][1]) / 1000)
    hours = len(windows) * HOP_MS / 3_600_000
    labels = [c.decided if decided else c.predicted for c in windows]
    label_changes = sum(1 for a, b in zip(labels, labels[1:]) if a != b)
    return {
        "min_duration_s": config.min_duration_s, "gap_tolerance_s": config.gap_tolerance_s,
        "hours": round(hours, 2), "true_segments": len(segments), "sessions": len(sessions),
        "segments_found": round(len(matched_g) / len(segments), 3),
        "session_precision": round(len(matched_s) / max(len(sessions), 1), 3),
        "spurious_per_hour": round((len(sessions) - len(matched_s)) / hours, 1),
        "label_changes_per_hour": round(label_changes / hours, 1),
        "start_error_median_s": float(np.median(start_errors)) if start_errors else None,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the grid on both streams and print a Markdown table (or JSON lines)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "homesounds")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "roomtone.pt")
    parser.add_argument("--hours", type=float, default=10.0, help="length of each stream")
    parser.add_argument("--json", action="store_true", help="one JSON object per setting and stream")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    clips = held_out_clips(args.data, args.model)
    accuracy = np.mean([c.predicted == c.label for c in clips])
    print(f"held-out window accuracy {accuracy:.3f} over {len(clips)} clips "
          f"(embedding + 4 heads: {time.perf_counter() - started:.0f} s)")
    decided_share = np.mean([c.decided in RESERVED_LABELS for c in clips])
    print(f"daemon decision: {decided_share:.3f} of clips quiet/unknown "
          f"(quiet_ambience clips quiet: {np.mean([c.decided == 'quiet' for c in clips if c.label in ABSENCE]):.3f})")
    for decided in (False, True):
        for name, seed in (("tune", 0), ("report", 1)):
            windows, segments = make_stream(clips, args.hours, seed)
            if not args.json:
                what = "daemon decision (quiet/unknown ignored, absence expects none)" if decided else "head labels"
                expected = len([s for s in segments if not decided or s[0] not in ABSENCE])
                print(f"\n### {what}, {name} stream (seed {seed}): {len(windows) * HOP_MS / 3_600_000:.1f} h, "
                      f"{expected} true segments\n")
                print("| min_duration_s | gap_tolerance_s | sessions | segments found | session precision | "
                      "spurious switches / h | window label changes / h | median start error (s) |")
                print("|---|---|---|---|---|---|---|---|")
            for min_duration in MIN_DURATIONS:
                for gap in GAPS:
                    ignored = RESERVED_LABELS if decided else ()
                    r = evaluate(windows, segments, SessionConfig(min_duration_s=min_duration, gap_tolerance_s=gap,
                                                                  ignored_labels=ignored), decided)
                    if args.json:
                        print(json.dumps({"stream": name, "decided": decided, **r}))
                    else:
                        print(f"| {min_duration:g} | {gap:g} | {r['sessions']} | {r['segments_found']:.3f} | "
                              f"{r['session_precision']:.3f} | {r['spurious_per_hour']} | "
                              f"{r['label_changes_per_hour']} | {r['start_error_median_s']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
