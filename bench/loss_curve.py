"""Plot a model file's training record: triplet loss and active-triplet fraction per step, with the
validation loss on held-out clips.

    .venv/bin/python -m bench.loss_curve models/roomtone.pt --out docs/img/roomtone-loss.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


from encoder.model_file import load_model


def smooth(values: list[float], window: int) -> np.ndarray:
    """Trailing moving average (shorter at the start)."""
    x = np.asarray(values, dtype=float)
    cumulative = np.cumsum(np.insert(x, 0, 0.0))
    counts = np.minimum(np.arange(1, len(x) + 1), window)
    return (cumulative[1:] - cumulative[np.arange(1, len(x) + 1) - counts]) / counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--out", required=True)
    parser.add_argument("--smooth", type=int, default=10, help="moving-average window in steps")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta = load_model(args.model).metadata
    history, validation = meta["history"], meta["validation_history"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot(history["step"], history["loss"], color="0.8", lw=0.8, label="train (per step)")
    top.plot(history["step"], smooth(history["loss"], args.smooth), color="C0", label=f"train ({args.smooth}-step mean)")
    if validation:
        top.plot([v["step"] for v in validation], [v["loss"] for v in validation], "o-", color="C1", ms=3,
                 label="validation (held-out clips)")
        top.plot([v["step"] for v in validation], [v["mean_loss"] for v in validation], "s--", color="C2", ms=3,
                 label="validation, mean over all triplets")
    top.set_ylabel("zero-filtered triplet loss")
    top.legend()
    top.grid(alpha=0.3)
    bottom.plot(history["step"], smooth(history["active_fraction"], args.smooth), color="C0", label="train")
    if validation:
        bottom.plot([v["step"] for v in validation], [v["active_fraction"] for v in validation], "o-", color="C1", ms=3,
                    label="validation")
    bottom.set_ylabel("active-triplet fraction")
    bottom.set_xlabel(f"step (batch of {meta['training']['config']['batch_size']} triplets)")
    bottom.set_ylim(0, 1)
    bottom.legend()
    bottom.grid(alpha=0.3)
    training = meta["training"]
    fig.suptitle(f"{Path(args.model).name}: width {training['config']['encoder']['width']}, "
                 f"{training['steps']} steps, {training['wall_time_s'] / 60:.1f} min on {training['device']}")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
