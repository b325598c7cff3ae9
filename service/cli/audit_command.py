"""Audit a labelled dataset for suspect clips: `roomtone audit --model M --data PATH --out FILE.csv`.

Writes one CSV row per clip, most suspicious first, with its findings:
  mislabelled       the label disagrees with the majority of its -k nearest neighbours in the model's
                    embedding (knn_label, knn_vote = that label's share of the votes, own_vote = the
                    clip's own label's share; mislabel_score = knn_vote - own_vote);
  broken_recording  a window fails the microphone-health checks (clipping, dropouts, dead channel, DC
                    offset, mains hum, stuck samples, NaN/Inf) or the file cannot be decoded
                    (health_state, health_reasons);
  embedding_outlier log mean distance to the k nearest neighbours has a robust z-score >= 5 (outlier_z).
`suspicion` (0..1) orders the rows; the top few lines are printed. Exit 2 on bad input."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register `audit` options."""
    parser.add_argument("--model", required=True, type=Path, help="model file (e.g. models/roomtone.pt)")
    parser.add_argument("--data", required=True, type=Path, help="dataset directory or meta.csv")
    parser.add_argument("--out", required=True, type=Path, help="CSV file to write")
    parser.add_argument("-k", type=int, default=10, help="neighbours that vote on each clip's label")
    parser.add_argument("--top", type=int, default=10, help="rows to print")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    """Embed and check every clip, rank them, write the CSV and print the top rows."""
    from tqdm import tqdm

    import numpy as np

    from encoder.audio import AudioError, load_audio
    from encoder.audit import ClipHealth, audit_clips, clip_health, write_audit_csv
    from encoder.datasets import DatasetError, read_dataset
    from encoder.recording_embeddings import embed_audio
    from encoder.model_file import ModelFileError, load_model

    try:
        records = read_dataset(args.data)
        bundle = load_model(args.model)
    except (DatasetError, ModelFileError) as exc:
        print(f"roomtone audit: {exc}", file=sys.stderr)
        return 2
    rate = bundle.feature_config.sample_rate
    embeddings = np.zeros((len(records), bundle.embedding_dim), dtype=np.float32)
    health: list[ClipHealth] = []
    for i, record in enumerate(tqdm(records, desc="audit", unit="file", disable=args.no_progress or None)):
        state = clip_health(record.path)
        if state.state != "unreadable":
            try:
                waveform, _ = load_audio(record.path, rate)
                _, clip = embed_audio(bundle, waveform, rate)
                if len(clip) == 0:
                    raise AudioError(f"{record.path}: shorter than one analysis window")
                embeddings[i] = clip.reshape(-1, clip.shape[-1]).mean(axis=0)
            except (AudioError, ValueError) as exc:
                state = ClipHealth("unreadable", (str(exc),))
        health.append(state)
    rows = audit_clips(records, embeddings, health, k=args.k)
    write_audit_csv(rows, args.out)
    flagged = sum(1 for r in rows if r.findings)
    print(f"{len(rows)} clips audited, {flagged} with findings; written to {args.out}")
    for rank, r in enumerate(rows[: args.top], start=1):
        findings = ",".join(r.findings) or "-"
        print(f"{rank:>3}  {r.suspicion:.2f}  {findings:<32}  {r.label} -> {r.knn_label} ({r.knn_vote:.0%})  {r.path}")
    return 0
