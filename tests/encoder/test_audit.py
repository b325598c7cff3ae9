"""Specification of the dataset audit: planted mislabels and broken recordings come out on top."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile

from encoder.audit import ClipHealth, audit_clips, clip_health, neighbour_votes, robust_z
from encoder.datasets import Record, read_dataset
from service.cli.main import main

BUNDLED_MODEL = Path(__file__).resolve().parents[2] / "models" / "roomtone.pt"

CLASSES = ("typing", "quiet_ambience", "motor_machine", "speech")
# Clips 0-7 typing, 8-15 quiet_ambience, 16-23 motor_machine, 24-31 speech.
MISLABEL = {0: "speech", 9: "typing"}  # clip index -> wrong label written into meta.csv
FAULTS = {"clipped": 17, "dc_offset": 25, "dead": 4, "hum": 12}  # fault -> clip index


def _inject(samples: np.ndarray, fault: str, rate: int) -> np.ndarray:
    """A broken-microphone version of a clip."""
    if fault == "clipped":
        return np.clip(samples / (np.abs(samples).max() + 1e-9) * 3.0, -1.0, 1.0)
    if fault == "dc_offset":
        return samples + 0.2
    if fault == "dead":
        return np.zeros_like(samples)
    if fault == "hum":
        t = np.arange(len(samples)) / rate
        return samples + 0.3 * np.sin(2 * np.pi * 50 * t)
    raise ValueError(fault)


@pytest.fixture(scope="module")
def planted(full_homesounds: Path, tmp_path_factory) -> tuple[Path, list[str], list[str]]:
    """32 shared 10 s clips (8 per class, folds 1-2) with 2 mislabels and 4 broken recordings."""
    root = tmp_path_factory.mktemp("audit_data")
    records = read_dataset(full_homesounds)
    chosen = [r for c in CLASSES for r in [r for r in records if r.label == c and r.fold in (1, 2)][:8]]
    fault_of = {i: f for f, i in FAULTS.items()}
    rows, mislabelled, broken = [], [], []
    for i, record in enumerate(chosen):
        samples, rate = soundfile.read(record.path, dtype="float32", frames=10 * 16000)
        if i in fault_of:
            samples = _inject(samples, fault_of[i], rate)
        name = f"audio/{i:02d}_{record.path.name.replace('.flac', '.wav')}"
        (root / "audio").mkdir(exist_ok=True)
        soundfile.write(root / name, samples, rate, subtype="FLOAT")
        rows.append({"path": name, "label": MISLABEL.get(i, record.label), "fold": record.fold})
        (mislabelled if i in MISLABEL else broken if i in fault_of else []).append(str((root / name).resolve()))
    with (root / "meta.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "fold"])
        writer.writeheader()
        writer.writerows(rows)
    return root, mislabelled, broken


def test_planted_mislabels_and_broken_recordings_are_ranked_at_the_top(planted, tmp_path):
    """The shipped model and the real audit command on a temp copy of shared clips with planted errors."""
    root, mislabelled, broken = planted
    out = tmp_path / "audit.csv"
    assert main(["audit", "--model", str(BUNDLED_MODEL), "--data", str(root), "--out", str(out), "-k", "5",
                 "--no-progress"]) == 0
    rows = list(csv.DictReader(out.open()))
    planted_paths = set(mislabelled) | set(broken)
    top = rows[: len(planted_paths)]
    assert {r["path"] for r in top} == planted_paths
    by_path = {r["path"]: r for r in rows}
    for path in broken:
        assert "broken_recording" in by_path[path]["findings"]
        assert by_path[path]["health_reasons"]
    for path in mislabelled:
        row = by_path[path]
        assert "mislabelled" in row["findings"]
        assert float(row["knn_vote"]) > 0.5 and row["knn_label"] != row["label"]


def _records(labels: list[str]) -> list[Record]:
    """Records with made-up paths for hand-made embeddings."""
    return [Record(Path(f"/clips/{i:02d}.wav"), label, 1 + i % 4, f"g{i}") for i, label in enumerate(labels)]


def _clusters(rng: np.random.Generator, per_class: int = 10) -> tuple[np.ndarray, list[str]]:
    """Three tight, well separated clusters in 8-D labelled a, b, c."""
    centres = np.eye(8)[:3] * 5
    x = np.concatenate([c + 0.2 * rng.standard_normal((per_class, 8)) for c in centres])
    return x, [label for label in "abc" for _ in range(per_class)]


def test_label_that_disagrees_with_its_neighbours_is_flagged_with_the_vote_confidence():
    x, labels = _clusters(np.random.default_rng(0))
    labels[3] = "b"  # a clip of cluster a labelled b
    rows = audit_clips(_records(labels), x, [ClipHealth("ok", ())] * len(labels), k=5)
    assert rows[0].path == "/clips/03.wav"
    assert rows[0].findings == ("mislabelled",)
    assert (rows[0].knn_label, rows[0].knn_vote, rows[0].own_vote) == ("a", 1.0, 0.0)
    assert all(not r.findings for r in rows[1:])


def test_clip_far_from_every_other_is_an_embedding_outlier_ranked_below_broken_recordings():
    x, labels = _clusters(np.random.default_rng(1))
    x[5] = -5 * np.ones(8)
    health = [ClipHealth("ok", ())] * len(labels)
    health[20] = ClipHealth("degraded", ("0s: hum: ...",))
    rows = audit_clips(_records(labels), x, health, k=5)
    assert [r.path for r in rows[:2]] == ["/clips/20.wav", "/clips/05.wav"]
    assert "embedding_outlier" in rows[1].findings and rows[1].outlier_z >= 5
    assert 0.5 <= rows[1].suspicion <= 0.8 < rows[0].suspicion


def test_unreadable_file_is_a_broken_recording(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....not audio")
    health = clip_health(bad)
    assert health.state == "unreadable" and "bad.wav" in health.reasons[0]


def test_signal_checks_find_an_injected_dc_offset(tmp_path, homesounds):
    clip = next(iter(sorted((homesounds / "audio" / "speech").glob("*.flac"))))
    samples, rate = soundfile.read(clip, dtype="float32")
    soundfile.write(tmp_path / "dc.wav", samples + 0.2, rate, subtype="FLOAT")
    soundfile.write(tmp_path / "clean.wav", samples, rate, subtype="FLOAT")
    assert clip_health(tmp_path / "clean.wav").state == "ok"
    broken = clip_health(tmp_path / "dc.wav")
    assert broken.state == "degraded" and any("dc_offset" in r for r in broken.reasons)


def test_robust_z_ignores_a_single_extreme_value_when_estimating_spread():
    z = robust_z(np.array([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 50.0]))
    assert z[-1] > 100 and np.all(np.abs(z[:-1]) < 3)


def test_neighbour_votes_never_count_the_clip_itself():
    x = np.array([[1.0, 0], [1.0, 0.01], [0, 1.0], [0.01, 1.0]])
    majority, share, own, _ = neighbour_votes(x, ["a", "a", "b", "b"], k=1)
    assert majority == ["a", "a", "b", "b"] and share.tolist() == [1, 1, 1, 1]
