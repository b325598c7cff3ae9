"""Checkpoint curves of a training run: every model-file snapshot (``snapshot_every_minutes`` in the
training config) probed by the never-heard protocols of `bench.ablation_probe` (P1, P1-lpo, P2 on
homesounds and music), plotted against the run's CPU minutes, and the snapshot the combined criterion
picks: the highest mean of the six figures among snapshots at least as good as ``--baseline`` on P1-lpo
and P2 of both sets (when none is, the highest mean, flagged).

    nice -n 19 .venv/bin/python -m bench.checkpoint_curves runs/r3/roomtone-r3.snapshots \\
        --baseline models/roomtone-p1.pt --plot docs/img/checkpoint-curves.png

Scores are kept in ``--results`` (JSON, keyed by file, size and modification time) so that a rerun while
training goes on only probes the new snapshots. Only the encoder is read: labels are used by the probe.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from bench.ablation_probe import COLUMNS, clip_features, DATASETS, never_heard_scores
from bench.host import load_average
from encoder.model_file import load_model

#: The figures a pick may not lose against the baseline (generalisation across packages and rooms).
GUARDED = ("homesounds_lpo", "homesounds_p2", "music_lpo", "music_p2")


def model_files(paths: list[str]) -> list[Path]:
    """The model files named, with every ``*.pt`` of a named folder, in name order (mNNN.N.pt sorts by minute)."""
    files = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files += sorted(path.glob("*.pt"))
        elif path.is_file():
            files.append(path)
        else:
            raise SystemExit(f"checkpoint_curves: {path}: no such file or folder")
    return files


def file_key(path: Path) -> str:
    """Cache key of a model file: its path, size and modification time."""
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{int(stat.st_mtime)}"


def combined(scores: dict[str, float]) -> float:
    """The selection criterion: the mean of the six never-heard figures."""
    return float(np.mean([scores[c] for c in COLUMNS]))


def pick(rows: list[dict], baseline: dict[str, float] | None) -> tuple[dict, bool]:
    """The row with the best `combined` among those no worse than ``baseline`` on every `GUARDED` figure;
    returns (row, True), or (best row overall, False) when no row holds the guard."""
    guarded = [r for r in rows if baseline is None or all(r["scores"][c] >= baseline[c] for c in GUARDED)]
    pool = guarded or rows
    return max(pool, key=lambda r: combined(r["scores"])), bool(guarded)


def probe_files(files: list[Path], results: Path, cache: Path) -> list[dict]:
    """Scores of each file (from ``results`` when cached there), with the steps and CPU minutes it records."""
    known = json.loads(results.read_text()) if results.is_file() else {}
    data = None
    rows = []
    for path in files:
        key = file_key(path)
        bundle = load_model(path)
        training = bundle.metadata.get("training", {})
        if key not in known:
            data = data or {name: clip_features(name, cache) for name in DATASETS}
            known[key] = {"scores": never_heard_scores(bundle.encoder, data), "load_average": load_average()}
            results.parent.mkdir(parents=True, exist_ok=True)
            results.write_text(json.dumps(known, indent=1))
        rows.append({"file": str(path), "steps": training.get("steps", 0),
                     "minutes": training.get("budget_elapsed_s", training.get("wall_time_s", 0)) / 60, **known[key]})
        print(row_text(rows[-1]), flush=True)
    return rows


def row_text(row: dict) -> str:
    """One Markdown table row: file, steps, CPU minutes, the six figures in percent, their mean, load."""
    cells = " | ".join(f"{100 * row['scores'][c]:.1f}" for c in COLUMNS)
    return (f"| {Path(row['file']).name} | {row['steps']} | {row['minutes']:.1f} | {cells} | "
            f"{100 * combined(row['scores']):.1f} | {row['load_average']} |")


def plot(rows: list[dict], baseline: dict[str, float] | None, out: Path) -> None:
    """Each figure against CPU minutes, the baseline's as dashed lines of the same colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    minutes = [r["minutes"] for r in rows]
    for index, column in enumerate(COLUMNS + ("mean",)):
        values = [100 * (combined(r["scores"]) if column == "mean" else r["scores"][column]) for r in rows]
        line, = ax.plot(minutes, values, marker="o", label=column.replace("_", " "), color=f"C{index}",
                        linewidth=2.5 if column == "mean" else 1.2)
        if baseline is not None:
            value = 100 * (combined(baseline) if column == "mean" else baseline[column])
            ax.axhline(value, color=line.get_color(), linestyle=":", linewidth=0.8)
    ax.set_xlabel("training CPU minutes (one core)")
    ax.set_ylabel("macro-F1 (%)")
    ax.set_title("Checkpoints of the bundled run, never-heard probes (dotted: baseline)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="snapshot folders and/or model files")
    parser.add_argument("--baseline", help="model file a pick must match on P1-lpo and P2 (e.g. models/roomtone-p1.pt)")
    parser.add_argument("--results", default="runs/checkpoint-curves.json", help="JSON cache of the scores")
    parser.add_argument("--cache", default="/tmp/roomtone-ablation/probe-features-v2", help="log-Mel cache folder")
    parser.add_argument("--plot", help="PNG of the curves")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results, cache = Path(args.results), Path(args.cache)
    print("| model | steps | CPU min | " + " | ".join(c.replace("_", " ") for c in COLUMNS) + " | mean | load average |")
    print("|---" * (len(COLUMNS) + 5) + "|", flush=True)
    baseline = probe_files([Path(args.baseline)], results, cache)[0]["scores"] if args.baseline else None
    rows = probe_files(model_files(args.paths), results, cache)
    if not rows:
        print("checkpoint_curves: no model files found", file=sys.stderr)
        return 1
    best, guarded = pick(rows, baseline)
    print(f"\npick: {best['file']} (mean {100 * combined(best['scores']):.1f}"
          + ("" if guarded else "; NO snapshot is as good as the baseline on P1-lpo and P2") + ")")
    if args.plot:
        plot(rows, baseline, Path(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
