"""Dataset audit: clips whose label or recording looks wrong, ranked most suspicious first.

Three kinds of evidence per clip (one embedding per clip: the mean over its windows and channels):
- mislabelled: the label disagrees with most of its k nearest neighbours (cosine, after each dimension
  is standardised over the audited clips, as the probe's scaler does). ``knn_vote`` is
  the fraction of neighbours carrying the majority label (the vote's confidence), ``own_vote`` the
  fraction carrying the clip's own label; ``mislabel_score = knn_vote - own_vote`` when the majority
  label differs and holds more than half of the votes, else 0.
- broken recording / microphone: a window failing the microphone-health checks
  (`encoder.signal_checks.assess_window`: clipping, dropouts, dead channel, DC offset, hum, stuck,
  NaN/Inf), or a file that cannot be decoded at all.
- embedding outlier: the log of the mean Euclidean distance (unit vectors) to its k nearest
  neighbours, as a robust z-score over the dataset (median / 1.4826 MAD); flagged at z >= 5
  (conservative: only clips far outside the spread).

``suspicion`` (0..1) orders the rows: max of the fault score (faulty or unreadable 1.0, degraded 0.9),
the mislabel score, and for flagged outliers ``0.5 + 0.3 * min(1, (z - 5) / 5)``: an outlier alone
is weaker evidence than a failed signal check or a confident neighbour vote, so it tops out at 0.8.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from encoder.datasets import Record

OUTLIER_Z = 5.0
FAULT_SCORES = {"faulty": 1.0, "unreadable": 1.0, "degraded": 0.9, "ok": 0.0}


@dataclass(frozen=True)
class ClipHealth:
    """Worst microphone-health state over a clip's windows ('unreadable' if it cannot be decoded) and why."""

    state: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class ClipAudit:
    """One audited clip: the evidence of each kind, the overall suspicion and the findings."""

    path: str
    label: str
    fold: int
    knn_label: str
    knn_vote: float
    own_vote: float
    mislabel_score: float
    outlier_z: float
    health_state: str
    health_reasons: tuple[str, ...]
    suspicion: float
    findings: tuple[str, ...]


def neighbour_votes(embeddings: np.ndarray, labels: Sequence[str], k: int = 10) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Per clip: majority label of its k nearest others (cosine), its vote share, own-label share, mean chord distance."""
    x = np.asarray(embeddings, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    labels = np.asarray(labels)
    n = len(x)
    k = max(1, min(k, n - 1))
    distance = 1.0 - x @ x.T
    np.fill_diagonal(distance, np.inf)
    nearest = np.argsort(distance, axis=1, kind="stable")[:, :k]
    majority, share, own = [], np.zeros(n), np.zeros(n)
    for i, row in enumerate(nearest):
        votes = Counter(labels[row].tolist())
        # Ties go to the label of the closest neighbour among the tied ones.
        top = max(votes.values())
        winner = next(labels[j] for j in row if votes[labels[j]] == top)
        majority.append(str(winner))
        share[i] = top / k
        own[i] = votes.get(labels[i], 0) / k
    # Euclidean distance between unit vectors, sqrt(2 (1 - cos)), for the outlier score.
    chord = np.sqrt(np.maximum(2.0 * np.take_along_axis(distance, nearest, axis=1), 0.0))
    return majority, share, own, chord.mean(axis=1)


def robust_z(values: np.ndarray) -> np.ndarray:
    """(x - median) / (1.4826 * MAD); MAD of 0 falls back to the standard deviation."""
    values = np.asarray(values, dtype=np.float64)
    centre = np.median(values)
    spread = 1.4826 * np.median(np.abs(values - centre))
    if spread <= 0:
        spread = values.std() or 1.0
    return (values - centre) / spread


def outlier_score(z: float) -> float:
    """Suspicion of an embedding outlier with robust z-score ``z``: 0 below `OUTLIER_Z`, else 0.5..0.8."""
    if z < OUTLIER_Z:
        return 0.0
    return 0.5 + 0.3 * min(1.0, (z - OUTLIER_Z) / 5.0)


def clip_health(path: str | Path, config=None) -> ClipHealth:
    """Run the microphone-health checks on every window of a file at its own rate; worst state wins."""
    from encoder.audio import AudioError, load_audio
    from encoder.signal_checks import HealthConfig, assess_window
    from encoder.windows import window_spans

    config = config or HealthConfig()
    try:
        waveform, rate = load_audio(path, sample_rate=None)
    except AudioError as exc:
        return ClipHealth("unreadable", (str(exc),))
    samples = waveform.numpy()
    worst, reasons = "ok", []
    rank = {"ok": 0, "degraded": 1, "faulty": 2}
    for span in window_spans(samples.shape[1], rate):
        health = assess_window(samples[:, span.start:span.end], rate, config)
        if rank[health.state] > rank[worst]:
            worst = health.state
        reasons.extend(f"{span.offset_s(rate):.0f}s: {r}" for r in health.reasons)
    return ClipHealth(worst, tuple(reasons))


def audit_clips(
    records: Sequence[Record], embeddings: np.ndarray, health: Sequence[ClipHealth], k: int = 10
) -> list[ClipAudit]:
    """Audit rows, most suspicious first; ``embeddings`` [clips, D] (rows of unreadable clips are ignored)."""
    if not (len(records) == len(embeddings) == len(health)):
        raise ValueError(f"audit_clips: {len(records)} records, {len(embeddings)} embeddings, {len(health)} health results")
    readable = np.array([h.state != "unreadable" for h in health])
    labels = [r.label for r in records]
    majority = ["" for _ in records]
    share, own, z = np.zeros(len(records)), np.ones(len(records)), np.zeros(len(records))
    usable = np.flatnonzero(readable)
    if len(usable) >= 3:
        x = np.asarray(embeddings, dtype=np.float64)[usable]
        x = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-9)
        m, s, o, d = neighbour_votes(x, [labels[i] for i in usable], k)
        for j, i in enumerate(usable):
            majority[i], share[i], own[i] = m[j], s[j], o[j]
        z[usable] = robust_z(np.log(np.maximum(d, 1e-9)))
    rows = []
    for i, record in enumerate(records):
        disagrees = bool(majority[i]) and majority[i] != record.label and share[i] > 0.5
        mislabel = float(share[i] - own[i]) if disagrees else 0.0
        outlier = bool(z[i] >= OUTLIER_Z)
        findings = []
        if health[i].state != "ok":
            findings.append("broken_recording")
        if disagrees:
            findings.append("mislabelled")
        if outlier:
            findings.append("embedding_outlier")
        suspicion = max(FAULT_SCORES[health[i].state], mislabel, outlier_score(z[i]))
        rows.append(ClipAudit(
            path=str(record.path), label=record.label, fold=record.fold, knn_label=majority[i],
            knn_vote=float(share[i]), own_vote=float(own[i]), mislabel_score=mislabel, outlier_z=float(z[i]),
            health_state=health[i].state, health_reasons=health[i].reasons, suspicion=float(suspicion),
            findings=tuple(findings),
        ))
    rows.sort(key=lambda r: (-r.suspicion, -r.mislabel_score, -r.outlier_z, r.path))
    return rows


CSV_COLUMNS = ("rank", "path", "label", "fold", "findings", "suspicion", "knn_label", "knn_vote", "own_vote",
               "mislabel_score", "outlier_z", "health_state", "health_reasons")


def write_audit_csv(rows: Sequence[ClipAudit], path: str | Path) -> Path:
    """Write the ranked audit as CSV (one row per clip, most suspicious first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for rank, r in enumerate(rows, start=1):
            writer.writerow([rank, r.path, r.label, r.fold, ";".join(r.findings), f"{r.suspicion:.3f}", r.knn_label,
                             f"{r.knn_vote:.2f}", f"{r.own_vote:.2f}", f"{r.mislabel_score:.2f}", f"{r.outlier_z:.2f}",
                             r.health_state, " | ".join(r.health_reasons)])
    return path
