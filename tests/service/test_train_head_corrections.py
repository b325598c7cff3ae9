"""`roomtone train-head --corrections STORE`: the head is fitted on the labelled data plus the home's
corrections, weighted, using only corrections embedded by the model's own encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from encoder.features import LogMelConfig
from encoder.file_digest import file_sha256
from encoder.head import ActivityHead
from encoder.model import Encoder, EncoderConfig
from encoder.model_file import ModelBundle, load_model, save_model
from service.cli.main import main
from service.store.corrections import CorrectionService
from service.store.event_store import EventStore
from service.records import WindowResult

DIM = 16
T0 = 1_790_000_000_000


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = EncoderConfig(width=4, blocks=(1, 1), embedding_dim=DIM)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_model(ModelBundle(Encoder(config).eval(), LogMelConfig(), config, metadata={"note": "test"}), path)
    return path


def direction(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def corrected_store(path: Path, model_sha: str, classes: tuple[str, ...]) -> tuple[Path, np.ndarray]:
    """A store with 3 windows corrected to `animals` under ``model_sha``, one corrected before any model run
    and one under another model; returns the store path and the corrected direction."""
    animal = direction(7)
    with EventStore(path) as store:
        (early,), _ = store.add_results([WindowResult("hall", T0, T0 + 10_000, "speech", {}, "ok", (), {}, -30.0,
                                                      embedding=direction(1))])
        store.record_model_run("f" * 64, T0 + 50_000)
        (other,), _ = store.add_results([WindowResult("hall", T0 + 60_000, T0 + 70_000, "speech", {}, "ok", (), {}, -30.0,
                                                      embedding=direction(2))])
        store.record_model_run(model_sha, T0 + 100_000)
        ours, _ = store.add_results([WindowResult("hall", T0 + 100_000 + i * 10_000, T0 + 110_000 + i * 10_000, "speech",
                                                  {}, "ok", (), {}, -30.0, embedding=animal) for i in range(3)])
        service = CorrectionService(store, classes)
        for w in [early, other, *ours]:
            service.correct(w.window_id, "animals")
    return path, animal


def test_the_head_learns_the_homes_corrections_and_skips_other_encoders(tiny_model, homesounds, tmp_path, capsys) -> None:
    plain, corrected = tmp_path / "plain.pt", tmp_path / "corrected.pt"
    assert main(["train-head", "--model", str(tiny_model), "--data", str(homesounds), "--out", str(plain),
                 "--no-progress"]) == 0
    classes = ActivityHead.from_dict(load_model(plain).head).class_names
    store, animal = corrected_store(tmp_path / "roomtone.db", file_sha256(tiny_model), classes)
    capsys.readouterr()
    assert main(["train-head", "--model", str(tiny_model), "--data", str(homesounds), "--out", str(corrected),
                 "--corrections", str(store), "--correction-weight", "50", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "corrections: 3 used (weight 50 each)" in out and "another model" in out and "unknown model" in out
    bundle = load_model(corrected)
    assert bundle.metadata["head"]["corrections"]["used"] == 3 and bundle.metadata["head"]["corrections"]["weight"] == 50
    assert bundle.metadata["same_encoder_as"] == [file_sha256(tiny_model)]
    assert ActivityHead.from_dict(bundle.head).predict(animal[None, :]) == ["animals"]
    assert ActivityHead.from_dict(load_model(plain).head).predict_proba(animal[None, :])[0, classes.index("animals")] < \
        ActivityHead.from_dict(bundle.head).predict_proba(animal[None, :])[0, classes.index("animals")]


def test_corrections_made_under_a_model_train_head_wrote_still_count_for_the_next_head(tiny_model, homesounds, tmp_path,
                                                                                        capsys) -> None:
    first = tmp_path / "first.pt"
    assert main(["train-head", "--model", str(tiny_model), "--data", str(homesounds), "--out", str(first),
                 "--no-progress"]) == 0
    classes = ActivityHead.from_dict(load_model(first).head).class_names
    store, _ = corrected_store(tmp_path / "roomtone.db", file_sha256(tiny_model), classes)  # made under the original
    capsys.readouterr()
    assert main(["train-head", "--model", str(first), "--data", str(homesounds), "--out", str(tmp_path / "second.pt"),
                 "--corrections", str(store), "--no-progress"]) == 0
    assert "corrections: 3 used" in capsys.readouterr().out


def test_a_missing_store_or_a_bad_weight_is_an_error_naming_it(tiny_model, homesounds, tmp_path, capsys) -> None:
    assert main(["train-head", "--model", str(tiny_model), "--data", str(homesounds), "--out", str(tmp_path / "x.pt"),
                 "--corrections", str(tmp_path / "nowhere.db"), "--no-progress"]) == 2
    assert "nowhere.db" in capsys.readouterr().err
    assert main(["train-head", "--model", str(tiny_model), "--data", str(homesounds), "--out", str(tmp_path / "x.pt"),
                 "--correction-weight", "-1", "--no-progress"]) == 2
    assert "--correction-weight" in capsys.readouterr().err
