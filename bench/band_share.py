"""Which cue a room removes: the share of each clip's energy above a frequency (7 kHz by default), median per
class, for the clips as they are and after the P2 "through the air" degradation (docs/evaluation.md).

    .venv/bin/python -m bench.band_share --data ../shared/data/homesounds [--above-hz 7000] [--seed 0]

Prints a Markdown table: class, clips, median share clean (dB), median share through the air (dB).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


from encoder.audio import load_audio
from encoder.datasets import read_dataset
from encoder.degradation import degrade_clip

RATE = 16000


def band_share_db(samples: np.ndarray, rate: int, above_hz: float) -> float:
    """Energy above ``above_hz`` over the total energy of a mono signal, in dB (rfft of the whole signal)."""
    power = np.abs(np.fft.rfft(samples)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    return float(10 * np.log10(max(power[freqs > above_hz].sum(), 1e-30) / max(power.sum(), 1e-30)))


def main() -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "homesounds")
    parser.add_argument("--above-hz", type=float, default=7000.0)
    parser.add_argument("--seed", type=int, default=0, help="seed of the P2 degradation")
    args = parser.parse_args()
    root = (args.data if args.data.is_dir() else args.data.parent).resolve()
    clean, air = defaultdict(list), defaultdict(list)
    for record in read_dataset(args.data):
        samples = load_audio(record.path, RATE, mono=True)[0].numpy()
        clean[record.label].append(band_share_db(samples[0], RATE, args.above_hz))
        degraded = degrade_clip(samples, RATE, args.seed, Path(record.path).relative_to(root).as_posix())
        air[record.label].append(band_share_db(degraded[0], RATE, args.above_hz))
    print(f"| class | clips | energy above {args.above_hz / 1000:g} kHz, clean | through the air (P2) |")
    print("| --- | --- | --- | --- |")
    for label in sorted(clean, key=lambda name: -np.median(clean[name])):
        print(f"| {label} | {len(clean[label])} | {np.median(clean[label]):.0f} dB | {np.median(air[label]):.0f} dB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
