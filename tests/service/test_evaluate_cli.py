"""Specification of `roomtone evaluate` and `roomtone train-head` on a small real subset with a tiny model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from encoder.datasets import read_dataset
from encoder.features import LogMelConfig
from encoder.head import ActivityHead
from encoder.model import Encoder, EncoderConfig
from encoder.model_file import ModelBundle, load_model, save_model
from encoder.neighbours import load_index
from service.cli.main import main


@pytest.fixture(scope="module")
def small_set(shared_data: Path, tmp_path_factory) -> Path:
    """3 s excerpts of 1 clip per fold of 3 homesounds classes and 2 music styles (one `_rendered`)."""
    root = tmp_path_factory.mktemp("small_set")
    rows = []
    for name, labels in (("homesounds", ("typing", "speech", "quiet_ambience")),
                         ("music", ("metal", "celtic_folk_rendered"))):
        records = read_dataset(shared_data / name)
        rows += [r for label in labels for k in (1, 2, 3, 4)
                 for r in [r for r in records if r.label == label and r.fold == k][:1]]
    with (root / "meta.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "fold"])
        for i, r in enumerate(rows):
            samples, rate = soundfile.read(r.path, dtype="float32", frames=3 * 16000, start=3 * 16000)
            soundfile.write(root / f"{i:02d}_{r.path.stem}.wav", samples, rate)
            writer.writerow([f"{i:02d}_{r.path.stem}.wav", r.label, r.fold])
    return root


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A randomly initialised small encoder in a model file."""
    torch.manual_seed(0)
    config = EncoderConfig(width=4, blocks=(1, 1), embedding_dim=16)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_model(ModelBundle(Encoder(config).eval(), LogMelConfig(), config, metadata={"note": "test"}), path)
    return path


@pytest.fixture(scope="module")
def report(small_set, tiny_model, tmp_path_factory) -> Path:
    """One evaluate run shared by the report tests."""
    out = tmp_path_factory.mktemp("report") / "small"
    code = main(["evaluate", "--model", str(tiny_model), "--data", str(small_set), "--out", str(out),
                 "--baselines", "mfcc,random", "--k-min", "2", "--k-max", "4", "--no-progress",
                 "--cache", str(out.parent / "cache")])
    assert code == 0
    return out


def test_report_starts_with_the_method_by_macro_f1_table_including_without_rendered(report):
    text = (report / "report.md").read_text()
    first_table = text.split("\n\n")[2].splitlines()
    assert first_table[0].startswith("| method | macro-F1 % (mean +- std over 4 folds) | without `_rendered` styles |")
    methods = [line.split("|")[1].strip() for line in first_table[2:]]
    assert methods == ["roomtone embedding (this model)", "MFCC-40 mean+std", "same CNN, random weights"]
    assert all(" +- " in line for line in first_table[2:])
    assert "- probe minus MFCC baseline: **" in text and "- best-silhouette k: **" in text


def test_report_names_the_command_the_model_hash_the_data_and_every_figure(report, tiny_model, small_set):
    text = (report / "report.md").read_text()
    assert "roomtone evaluate --model" in text
    import hashlib
    assert hashlib.sha256(tiny_model.read_bytes()).hexdigest() in text
    assert "20 clips" in text
    for figure in ("confusion_model.png", "kmeans_elbow.png", "kmeans_silhouette.png", "embedding_map.png",
                   "embedding_map.html"):
        assert f"({figure})" in text
        assert (report / figure).stat().st_size > 0


def test_results_json_holds_per_fold_scores_and_the_cluster_sweep(report):
    results = json.loads((report / "results.json").read_text())
    model = results["methods"]["model"]["probe"]
    assert set(model["fold_macro_f1"]) == {"1", "2", "3", "4"}
    assert np.isclose(model["macro_f1_mean"], np.mean(list(model["fold_macro_f1"].values())))
    assert results["methods"]["model"]["probe_without_rendered"]["class_names"] == [
        "metal", "quiet_ambience", "speech", "typing"]
    assert results["kmeans"]["ks"] == [2, 3, 4] and results["kmeans"]["num_classes"] == 5


def test_embeddings_npz_is_a_neighbour_index_of_every_segment(report):
    index = load_index(report / "embeddings.npz")
    assert index.embeddings.shape == (20, 16)
    assert set(index.labels) == {"typing", "speech", "quiet_ambience", "metal", "celtic_folk_rendered"}


def test_second_run_reuses_the_feature_cache(report, small_set, tiny_model):
    cached = sorted(p.name.split("-")[0] for p in (report.parent / "cache").glob("*.npz"))
    assert cached == ["mfcc", "model", "random"]


def test_unknown_baseline_is_refused_with_exit_2(small_set, tiny_model, tmp_path, capsys):
    assert main(["evaluate", "--model", str(tiny_model), "--data", str(small_set), "--out", str(tmp_path),
                 "--baselines", "mfcc,vggish"]) == 2
    assert "vggish" in capsys.readouterr().err


def test_missing_model_file_is_refused_with_exit_2(small_set, tmp_path, capsys):
    assert main(["evaluate", "--model", str(tmp_path / "no.pt"), "--data", str(small_set), "--out",
                 str(tmp_path / "r")]) == 2
    assert "no.pt" in capsys.readouterr().err


def test_train_head_stores_a_head_over_the_datasets_classes_in_a_copy_of_the_model(small_set, tiny_model, tmp_path):
    out = tmp_path / "with_head.pt"
    assert main(["train-head", "--model", str(tiny_model), "--data", str(small_set), "--out", str(out),
                 "--no-progress"]) == 0
    bundle = load_model(out)
    head = ActivityHead.from_dict(bundle.head)
    assert head.class_names == ("celtic_folk_rendered", "metal", "quiet_ambience", "speech", "typing")
    assert bundle.metadata["head"]["rows"] == 20 and bundle.metadata["note"] == "test"
    assert load_model(tiny_model).head is None
    original, copy = load_model(tiny_model).encoder.state_dict(), bundle.encoder.state_dict()
    assert all(torch.equal(original[k], copy[k]) for k in original)
    assert head.predict_proba(np.zeros((1, 16))).shape == (1, 5)


@pytest.fixture(scope="module")
def air_report(small_set, tiny_model, tmp_path_factory) -> Path:
    """One `--air --probe-only` run (P2) shared by the tests below."""
    out = tmp_path_factory.mktemp("air") / "small"
    code = main(["evaluate", "--model", str(tiny_model), "--data", str(small_set), "--out", str(out),
                 "--baselines", "mfcc", "--air", "--probe-only", "--no-progress", "--cache", str(out.parent / "cache")])
    assert code == 0
    return out


def test_air_adds_a_p2_column_with_its_difference_from_clean_for_every_method(air_report):
    text = (air_report / "report.md").read_text()
    header, _, *rows = text.split("\n\n")[2].splitlines()
    assert header.endswith("| through the air (P2): held-out fold degraded | air - clean |")
    assert [row.split("|")[1].strip() for row in rows] == ["roomtone embedding (this model)", "MFCC-40 mean+std"]
    for row in rows:
        clean, air, difference = (row.split("|")[i].strip() for i in (2, 4, 5))
        assert float(difference) == pytest.approx(float(air.split()[0]) - float(clean.split()[0]), abs=0.11)
    assert "- P2 through the air: **" in text and "seed 0" in text


def test_air_results_hold_per_fold_scores_and_the_degradation_config(air_report):
    results = json.loads((air_report / "results.json").read_text())
    assert results["air"]["seed"] == 0 and results["air"]["config"]["snr_db"] == [12.0, 30.0]
    for key in ("model", "mfcc"):
        air = results["methods"][key]["air"]
        assert set(air["fold_macro_f1"]) == {"1", "2", "3", "4"}
    assert results["kmeans"] is None


def test_probe_only_skips_clusters_and_figures_but_keeps_the_index(air_report):
    assert sorted(p.name for p in air_report.iterdir()) == ["embeddings.npz", "report.md", "results.json"]
    assert "skipped (`--probe-only`)" in (air_report / "report.md").read_text()


def test_degraded_features_are_cached_apart_from_clean_ones(air_report):
    cached = sorted(p.name.split("-")[0] for p in (air_report.parent / "cache").glob("*.npz"))
    assert cached == ["mfcc", "mfcc", "model", "model"]


def test_air_clips_degrade_the_same_way_on_every_run(small_set):
    from encoder.degradation import AirConfig
    from encoder.evaluation import air_clips

    path = sorted(small_set.glob("*.wav"))[0]
    first = air_clips(AirConfig(), 0, small_set, 16000)(path, 16000)[0]
    again = air_clips(AirConfig(), 0, small_set, 16000)(path, 16000)[0]
    clean = soundfile.read(path, dtype="float32")[0]
    assert torch.equal(first, again) and first.shape == (1, clean.shape[0])
    assert not np.allclose(first[0].numpy(), clean, atol=1e-3)
    assert air_clips(AirConfig(), 0, small_set, 16000)(path, 44100)[0].shape[1] == round(clean.shape[0] * 44100 / 16000)


def test_augmented_copies_go_through_the_training_chain_seeded_per_copy_and_clip(small_set):
    from encoder.evaluation import augmented_clips

    path = sorted(small_set.glob("*.wav"))[0]
    first = augmented_clips(0, 0, small_set, 16000)(path, 16000)[0]
    assert torch.equal(first, augmented_clips(0, 0, small_set, 16000)(path, 16000)[0])
    assert not torch.equal(first, augmented_clips(1, 0, small_set, 16000)(path, 16000)[0])
    assert not torch.equal(first, augmented_clips(0, 1, small_set, 16000)(path, 16000)[0])
    clean = soundfile.read(path, dtype="float32")[0]
    assert first.shape == (1, clean.shape[0]) and not np.allclose(first[0].numpy(), clean, atol=1e-3)


def test_changed_clips_are_kept_on_disk_and_reused_without_recomputing_the_change(small_set, tmp_path):
    from encoder.evaluation import ChangedClips

    calls = []

    def change(samples, rate, name):
        calls.append(name)
        return samples * 0.5

    path = sorted(small_set.glob("*.wav"))[0]
    first = ChangedClips(change, {"half": 1}, small_set, 16000, tmp_path / "cache")(path, 16000)[0]
    again = ChangedClips(change, {"half": 1}, small_set, 16000, tmp_path / "cache")(path, 16000)[0]
    other = ChangedClips(change, {"half": 2}, small_set, 16000, tmp_path / "cache")(path, 16000)[0]
    assert torch.equal(first, again) and torch.equal(first, other)
    assert calls == [path.name, path.name]  # the second instance read the disk; another variant computed anew
    assert len(list((tmp_path / "cache" / "changed-clips").glob("*.npy"))) == 2


def test_train_head_with_augmented_copies_fits_on_clean_plus_copies_and_records_it(small_set, tiny_model, tmp_path):
    plain, augmented = tmp_path / "plain.pt", tmp_path / "augmented.pt"
    assert main(["train-head", "--model", str(tiny_model), "--data", str(small_set), "--out", str(plain),
                 "--no-progress"]) == 0
    assert main(["train-head", "--model", str(tiny_model), "--data", str(small_set), "--out", str(augmented),
                 "--augmented-copies", "2", "--no-progress"]) == 0
    meta = load_model(augmented).metadata["head"]
    assert meta["rows"] == 3 * 20 and meta["augmented_copies"] == 2 and meta["augment"]["band_limit_p"] == 1.0
    assert load_model(plain).metadata["head"]["augmented_copies"] == 0
    assert load_model(plain).head["coef"] != load_model(augmented).head["coef"]


def test_evaluate_with_augmented_copies_says_so_in_report_and_results(small_set, tiny_model, tmp_path):
    out = tmp_path / "aug"
    assert main(["evaluate", "--model", str(tiny_model), "--data", str(small_set), "--out", str(out), "--baselines", "",
                 "--augmented-copies", "1", "--probe-only", "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["head_copies"] == 1 and results["head_augment"]["reverb_p"] == 1.0
    assert "--augmented-copies 1" in results["command"]
    assert "also fit on 1 copy of the training folds through the training capture chain" in (out / "report.md").read_text()
