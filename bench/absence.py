"""Measures the two defaults of the activity decision (service/analysis/activity.py): the level floor below which a
window is `quiet`, and the top-probability threshold below which the head's answer is `unknown`.

Level floor: RMS levels of the quiet recordings (homesounds `quiet_ambience`, empty-room ambiences at
-58..-45 dBFS) against every clip with an activity (the other homesounds classes and all music).

Open set: for each held-out fold and each class left out of the head's training (fit on the other three
folds without it), the held-out fold's clips of the left-out class are "novel" and the other clips
"known". Per threshold t: how often novel clips are called unknown (top probability < t) against how
often known clips are, and the known clips' accuracy among those still labelled.

    .venv/bin/python -m bench.absence                    # prints both tables
    .venv/bin/python -m bench.absence --write-docs       # also writes them into docs/sounds.md

About a minute on 2 CPU cores the first time (embedding 724 clips), seconds afterwards (bench/.cache).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.clip_embeddings import DATA, load_set
from bench.doc_sections import write_marked_section
from encoder.head import fit_head

REPO = Path(__file__).resolve().parents[1]

DOCS = REPO / "docs" / "sounds.md"
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98)
QUIET_CLASS = "quiet_ambience"


def level_table(homesounds, music) -> tuple[str, dict[str, float]]:
    """Markdown of the level distributions and the floor they suggest."""
    quiet = homesounds.rms_dbfs[homesounds.labels == QUIET_CLASS]
    active = np.concatenate([homesounds.rms_dbfs[homesounds.labels != QUIET_CLASS], music.rms_dbfs])
    rows = ["| clips | n | min | 5th pct | median | 95th pct | max |", "|---|---|---|---|---|---|---|"]
    for name, values in (("quiet recordings (homesounds quiet_ambience)", quiet),
                         ("with activity (other homesounds classes + music)", active)):
        p = np.percentile(values, [5, 50, 95])
        rows.append(f"| {name} | {len(values)} | {values.min():.1f} | {p[0]:.1f} | {p[1]:.1f} | {p[2]:.1f} | "
                    f"{values.max():.1f} |")
    figures = {"quiet_max": float(quiet.max()), "quiet_median": float(np.median(quiet)),
               "active_min": float(active.min()), "active_p1": float(np.percentile(active, 1))}
    return "\n".join(rows), figures


def open_set(homesounds) -> dict[float, dict[str, float]]:
    """Per threshold: novel called unknown, known called unknown, known accuracy when labelled (pooled)."""
    labels, folds, x = homesounds.labels, homesounds.folds, homesounds.embeddings
    tops_novel, tops_known, correct_known = [], [], []
    for fold in sorted(set(folds.tolist())):
        for left_out in sorted(set(labels.tolist())):
            train = (folds != fold) & (labels != left_out)
            test = folds == fold
            head = fit_head(x[train], labels[train])
            proba = head.predict_proba(x[test])
            top = proba.max(axis=1)
            predicted = np.asarray(head.class_names)[proba.argmax(axis=1)]
            novel = labels[test] == left_out
            tops_novel.append(top[novel])
            tops_known.append(top[~novel])
            correct_known.append(predicted[~novel] == labels[test][~novel])
    novel, known, correct = np.concatenate(tops_novel), np.concatenate(tops_known), np.concatenate(correct_known)
    result = {}
    for t in THRESHOLDS:
        kept = known >= t
        result[t] = {
            "novel_unknown": float(np.mean(novel < t)),
            "known_unknown": float(np.mean(known < t)),
            "known_accuracy_labelled": float(np.mean(correct[kept])) if kept.any() else float("nan"),
            "known_wrong_labelled": float(np.mean(~correct & kept)),
        }
    return result


def open_set_table(curve: dict[float, dict[str, float]], chosen: float) -> str:
    """Markdown of the trade-off curve, the chosen threshold marked."""
    rows = ["| threshold | novel-class clips called unknown | known-class clips called unknown | "
            "known clips labelled wrongly | accuracy of the known clips still labelled |",
            "|---|---|---|---|---|"]
    for t, r in curve.items():
        mark = " **(default)**" if abs(t - chosen) < 1e-9 else ""
        rows.append(f"| {t:.2f}{mark} | {100 * r['novel_unknown']:.1f} % | {100 * r['known_unknown']:.1f} % | "
                    f"{100 * r['known_wrong_labelled']:.1f} % | {100 * r['known_accuracy_labelled']:.1f} % |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "roomtone.pt")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--chosen", type=float, default=None,
                        help="threshold to mark as the default (default: service.analysis.activity's)")
    parser.add_argument("--write-docs", action="store_true", help="write the tables into docs/sounds.md")
    args = parser.parse_args(argv)
    from service.analysis.activity import ActivityConfig

    chosen = args.chosen if args.chosen is not None else ActivityConfig().unknown_below
    homesounds, music = load_set("homesounds", args.model, args.data), load_set("music", args.model, args.data)
    levels, figures = level_table(homesounds, music)
    curve = open_set(homesounds)
    text = (f"Level floor (RMS dBFS per 10 s clip; model-independent):\n\n{levels}\n\n"
            f"quiet max {figures['quiet_max']:.1f}, active min {figures['active_min']:.1f}, "
            f"active 1st percentile {figures['active_p1']:.1f} dBFS\n\n"
            f"Open set (homesounds, 8 classes x 4 folds, each class left out of the head in turn; model "
            f"{args.model.name}):\n\n{open_set_table(curve, chosen)}\n")
    print(text)
    if args.write_docs:
        write_marked_section(DOCS, "absence", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
