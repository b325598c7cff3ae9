"""Custom sounds from a few examples (encoder/few_shot.py): detection rate and false alarms per hour with
1, 3 and 5 examples, and the choice of detector.

Sounds:
- leave-one-class-out on homesounds (8 classes) and music (7 styles): each class in turn is the custom
  sound. Examples are n clips of it from one fold; the positives are its clips in the other three folds
  (homesounds folds share no source recording; music folds share no track).
- two kinds of sound in neither set (bench/sounds/README.md: an alarm clock ringing and a camera shutter,
  real recordings from the Debian package sound-theme-freedesktop, CC-BY-SA-3.0), each mixed at a random
  offset and level (event RMS 0..+12 dB over the window's) into 10 s windows of the shared sets' audio;
  examples and positives never share a background clip.

False alarms: every 10 s window of the other audio of both sets played as one continuous stream (clips in
a seeded order, windows cut 5 s off the clip grid so each holds the end of one clip and the start of the
next, bench/clip_embeddings.py), excluding windows that contain the sound itself. That is about 2 h.

Threshold: as the daemon calibrates it (encoder.few_shot.calibrate_threshold) with the store's history
played by half of the stream (every other window) and the false alarms counted on the other half, then
the halves swapped. Also reported: the detection an oracle threshold would give at <= 1 false alarm per
hour on the test half (what the embedding allows), and the examples-only calibration (no history).

    .venv/bin/python -m bench.custom_sounds                  # prints the tables
    .venv/bin/python -m bench.custom_sounds --write-docs     # also writes them into docs/sounds.md

Takes about 2 minutes on 2 CPU cores the first time (embedding 724 clips, 722 stream windows and the
mixes), well under a minute afterwards (bench/.cache).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.clip_embeddings import DATA, load_set, stream_windows
from bench.doc_sections import write_marked_section
from encoder.few_shot import calibrate_threshold, nearest_example_scores, unit_rows

REPO = Path(__file__).resolve().parents[1]

DOCS = REPO / "docs" / "sounds.md"
SOUNDS = REPO / "bench" / "sounds"
EXAMPLE_COUNTS = (1, 3, 5)
DRAWS = 4  # example sets per sound and count (one per fold for the classes)
MIXES = 40  # windows per neither-set sound
TARGET_DETECTION, TARGET_ALARMS = 0.90, 1.0


@dataclass
class Sound:
    """One custom sound of the bench: its example pool per draw, its positives, and which stream windows hold it."""

    name: str
    kind: str  # "homesounds", "music" or "neither"
    draws: list[tuple[np.ndarray, np.ndarray]]  # per draw: (example pool [k, D], positives [m, D])
    in_stream: np.ndarray  # bool per stream window: the window contains this sound


def class_sounds(sets: dict, stream_labels: list[tuple[str, str, str]]) -> list[Sound]:
    """Every class of homesounds and music as a custom sound (examples from one fold, positives from the others)."""
    out = []
    for set_name, clips in sets.items():
        labels, folds = clips.labels, clips.folds
        for cls in sorted(set(labels.tolist())):
            draws = []
            for fold in (1, 2, 3, 4)[:DRAWS]:
                pool = clips.embeddings[(labels == cls) & (folds == fold)]
                draws.append((pool, clips.embeddings[(labels == cls) & (folds != fold)]))
            in_stream = np.array([s == set_name and cls in (a, b) for s, a, b in stream_labels])
            out.append(Sound(cls, set_name, draws, in_stream))
    return out


def neither_sounds(model: Path, sets: dict, seed: int = 0) -> list[Sound]:
    """The alarm clock and the camera shutter mixed into windows of the shared sets' audio."""
    from encoder.audio import load_audio
    from encoder.recording_embeddings import embed_windows
    from encoder.model_file import load_model

    bundle = load_model(model)
    rate = bundle.feature_config.sample_rate
    records = [r for clips in sets.values() for r in clips.records]
    out = []
    for k, path in enumerate(sorted(SOUNDS.glob("*.flac"))):
        rng = np.random.default_rng(seed + k)
        event = load_audio(path, rate, mono=True)[0][0].numpy()
        chosen = rng.choice(len(records), size=MIXES, replace=False)  # distinct background clips
        windows = []
        for index in chosen:
            background = load_audio(records[index].path, rate, mono=True)[0][0].numpy()[: 10 * rate]
            start = int(rng.integers(0, len(background) - len(event)))
            bg_rms = float(np.sqrt(np.mean(background ** 2))) + 1e-6
            ev_rms = float(np.sqrt(np.mean(event ** 2))) + 1e-9
            gain = bg_rms / ev_rms * 10 ** (rng.uniform(0.0, 12.0) / 20)
            mixed = background.copy()
            mixed[start:start + len(event)] += gain * event
            windows.append(mixed / max(1.0, float(np.abs(mixed).max())))
        import torch

        embeddings = embed_windows(bundle, torch.from_numpy(np.stack(windows).astype(np.float32)))
        # draw d: examples from mixes [10d, 10d + 10), positives = the other 30
        draws = []
        for d in range(DRAWS):
            pool = np.arange(10 * d, 10 * d + 10)
            draws.append((embeddings[pool], embeddings[np.setdiff1d(np.arange(MIXES), pool)]))
        out.append(Sound(path.stem, "neither", draws, np.zeros(0, dtype=bool)))
    return out


def prototype_scores(x: np.ndarray, examples: np.ndarray) -> np.ndarray:
    """Cosine similarity to the examples' mean (the prototype alternative)."""
    centre = unit_rows(examples).mean(axis=0)
    return unit_rows(x) @ (centre / max(float(np.linalg.norm(centre)), 1e-9))


def logistic_scorer(examples: np.ndarray, background: np.ndarray):
    """A small per-sound model: logistic regression of the examples against background windows."""
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([examples, background])
    y = np.r_[np.ones(len(examples)), np.zeros(len(background))]
    model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000).fit(unit_rows(x), y)
    return lambda z: model.decision_function(unit_rows(z))


def oracle_detection(positive: np.ndarray, negative: np.ndarray, hours: float) -> float:
    """Detection at the best threshold that gives at most one false alarm per hour on ``negative``."""
    allowed = int(np.floor(TARGET_ALARMS * hours))
    ranked = np.sort(negative)[::-1]
    threshold = ranked[allowed] if allowed < len(ranked) else -np.inf
    return float(np.mean(positive > threshold))


def evaluate(sounds: list[Sound], stream: np.ndarray, counts=EXAMPLE_COUNTS, seed: int = 0) -> dict:
    """Per sound and example count: calibrated detection and false alarms/h, examples-only ones, oracle per detector."""
    rng = np.random.default_rng(seed)
    halves = [np.arange(len(stream)) % 2 == 0, np.arange(len(stream)) % 2 == 1]
    window_hours = 10.0 / 3600
    results: dict = {}
    for sound in sounds:
        holds = sound.in_stream if sound.in_stream.size else np.zeros(len(stream), dtype=bool)
        for n in counts:
            rows = []
            for pool, positives in sound.draws:
                examples = pool[rng.choice(len(pool), size=min(n, len(pool)), replace=False)]
                for history, test in (halves, halves[::-1]):
                    negatives = stream[test & ~holds]
                    hours = len(negatives) * window_hours
                    background = stream[history]  # the store's history holds the sound too, as a home's would
                    calibrated = calibrate_threshold(examples, background, len(background) * window_hours)
                    alone = calibrate_threshold(examples)
                    pos, neg = nearest_example_scores(positives, examples), nearest_example_scores(negatives, examples)
                    row = {
                        "detection": float(np.mean(pos >= calibrated.threshold)),
                        "alarms_per_hour": float(np.sum(neg >= calibrated.threshold)) / hours,
                        "detection_examples_only": float(np.mean(pos >= alone.threshold)),
                        "alarms_examples_only": float(np.sum(neg >= alone.threshold)) / hours,
                        "oracle_nearest": oracle_detection(pos, neg, hours),
                        "oracle_prototype": oracle_detection(prototype_scores(positives, examples),
                                                             prototype_scores(negatives, examples), hours),
                    }
                    scorer = logistic_scorer(examples, background[~holds[history]] if holds.any() else background)
                    row["oracle_logistic"] = oracle_detection(scorer(positives), scorer(negatives), hours)
                    rows.append(row)
            results[(sound.kind, sound.name, n)] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    return results


def tables(results: dict, sounds: list[Sound]) -> str:
    """Markdown: summary per example count, detector comparison, per-sound table at 3 examples."""
    lines = ["| examples | mean detection (calibrated) | mean false alarms/h | sounds meeting >= 90 % at <= 1/h | "
             "mean detection (examples-only threshold) | its false alarms/h |", "|---|---|---|---|---|---|"]
    for n in EXAMPLE_COUNTS:
        rows = [results[(s.kind, s.name, n)] for s in sounds]
        met = sum(r["detection"] >= TARGET_DETECTION and r["alarms_per_hour"] <= TARGET_ALARMS for r in rows)
        lines.append(f"| {n} | {100 * np.mean([r['detection'] for r in rows]):.1f} % | "
                     f"{np.mean([r['alarms_per_hour'] for r in rows]):.2f} | {met} / {len(rows)} | "
                     f"{100 * np.mean([r['detection_examples_only'] for r in rows]):.1f} % | "
                     f"{np.mean([r['alarms_examples_only'] for r in rows]):.1f} |")
    lines += ["", "Detector choice: detection at the best threshold for <= 1 false alarm/h (oracle), mean over sounds:",
              "", "| examples | nearest example (chosen) | prototype (mean of examples) | per-sound logistic model |",
              "|---|---|---|---|"]
    for n in EXAMPLE_COUNTS:
        rows = [results[(s.kind, s.name, n)] for s in sounds]
        lines.append(f"| {n} | " + " | ".join(f"{100 * np.mean([r[k] for r in rows]):.1f} %"
                                             for k in ("oracle_nearest", "oracle_prototype", "oracle_logistic")) + " |")
    lines += ["", "Per sound, 3 examples:", "", "| set | sound | detection (calibrated) | false alarms/h | "
              "target | oracle detection at <= 1/h |", "|---|---|---|---|---|---|"]
    for s in sounds:
        r = results[(s.kind, s.name, 3)]
        met = r["detection"] >= TARGET_DETECTION and r["alarms_per_hour"] <= TARGET_ALARMS
        lines.append(f"| {s.kind} | {s.name} | {100 * r['detection']:.1f} % | {r['alarms_per_hour']:.2f} | "
                     f"{'met' if met else 'missed'} | {100 * r['oracle_nearest']:.1f} % |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "roomtone.pt")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-docs", action="store_true", help="write the tables into docs/sounds.md")
    args = parser.parse_args(argv)
    sets = {name: load_set(name, args.model, args.data) for name in ("homesounds", "music")}
    parts, stream_labels = [], []
    for name, clips in sets.items():
        embeddings, first, second = stream_windows(name, args.model, data=args.data)
        parts.append(embeddings)
        stream_labels += [(name, clips.labels[a], clips.labels[b]) for a, b in zip(first, second)]
    stream = np.concatenate(parts)
    sounds = class_sounds(sets, stream_labels) + neither_sounds(args.model, sets, args.seed)
    results = evaluate(sounds, stream, seed=args.seed)
    text = (f"Model {args.model.name}; stream {len(stream)} windows ({len(stream) * 10 / 3600:.2f} h), "
            f"{DRAWS} example draws per sound and count, each scored on both stream halves.\n\n"
            f"{tables(results, sounds)}\n")
    print(text)
    if args.write_docs:
        write_marked_section(DOCS, "custom-sounds", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
