"""Inspect a dataset: `roomtone dataset summary PATH` prints its classes, clips per fold, total
minutes and any problem found (unreadable files, groups split across folds).

PATH is a shared-set directory or meta.csv (../shared/data/homesounds, ../shared/data/music) or the
root of a DCASE 2018 task 5 development set (with audio/ and evaluation_setup/)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register `dataset` subcommands."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    summary = sub.add_parser("summary", help="classes, clips per fold, minutes and problems")
    summary.add_argument("path", help="dataset directory or meta.csv")


def run(args: argparse.Namespace) -> int:
    """Print the summary table; exit 2 when the metadata is malformed."""
    from encoder.datasets import FOLDS, DatasetError, read_dataset, summarize

    try:
        records = read_dataset(args.path)
    except DatasetError as exc:
        print(f"roomtone dataset: {exc}", file=sys.stderr)
        return 2
    summary = summarize(records)
    width = max(len(label) for label in summary.classes)
    header = f"{'class':<{width}}  " + "  ".join(f"fold{k}" for k in FOLDS) + "  total"
    print(header)
    for label, per_fold in summary.classes.items():
        counts = "  ".join(f"{per_fold[k]:>5}" for k in FOLDS)
        print(f"{label:<{width}}  {counts}  {sum(per_fold.values()):>5}")
    totals = "  ".join(f"{sum(c[k] for c in summary.classes.values()):>5}" for k in FOLDS)
    print(f"{'total':<{width}}  {totals}  {summary.clips:>5}")
    print(f"{summary.clips} clips, {len(summary.classes)} classes, {summary.minutes:.1f} minutes")
    print("channels: " + ", ".join(f"{c} ch x {n}" for c, n in sorted(summary.channels.items())))
    print("sample rates: " + ", ".join(f"{r} Hz x {n}" for r, n in sorted(summary.sample_rates.items())))
    if summary.problems:
        print(f"{len(summary.problems)} problem(s):")
        for problem in summary.problems:
            print(f"  - {problem}")
    else:
        print("no problems found")
    return 0
