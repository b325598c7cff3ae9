"""`roomtone adapt` (encoder/adapt.py): training continues from the model's weights with its own recipe on
the home's audio, within a time budget, and the activity head is re-aligned so its answers keep their
meaning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from encoder.adapt import AdaptConfig, adapt, aligned_head, alignment
from encoder.head import fit_head
from encoder.model import EncoderConfig
from encoder.model_file import load_model, save_model
from encoder.train import TrainConfig, train
from encoder.triplets import TripletConfig

REPO = Path(__file__).resolve().parents[2]
CLASSES = ["speech", "typing", "water", "animals"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> tuple[Path, Path]:
    """A width-2 model trained for 4 steps on 3 s cuts of real clips, with a head fitted on them; and the clips."""
    root = tmp_path_factory.mktemp("home")
    (root / "audio").mkdir()
    for label in CLASSES:
        for k, source in enumerate(sorted((REPO / "tests" / "data" / "homesounds" / "audio" / label).glob("*.flac"))[:2]):
            data, rate = soundfile.read(source, dtype="float32")
            soundfile.write(root / "audio" / f"{label}{k}.flac", data[: 3 * rate], rate)
    config = TrainConfig(data=(str(root / "audio"),), out=str(root / "m.pt"), steps=4, batch_size=3,
                         validation_fraction=0.25, validate_every=2, checkpoint_every=2, seed=3, device="cpu",
                         encoder=EncoderConfig(width=2, blocks=(1, 1, 1, 1)), triplets=TripletConfig(tile_s=1.0))
    bundle = train(config, progress=False).bundle
    from encoder.embedding import embed_paths

    paths = sorted((root / "audio").glob("*.flac"))
    embeddings = np.stack([e[0][0] for _, e in embed_paths(bundle, paths, progress=False, mono=True)])
    head = fit_head(embeddings, [p.stem[:-1] for p in paths])
    import dataclasses

    save_model(dataclasses.replace(bundle, head=head.to_dict()), root / "m.pt")
    return root / "m.pt", root / "audio"


def test_the_aligned_head_answers_as_before_when_the_space_only_moved_linearly():
    rng = np.random.default_rng(0)
    old = rng.normal(size=(400, 16))
    head = fit_head(old, np.where(old[:, 0] + old[:, 1] > 0, "a", "b"))
    rotation, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    new = (old - 0.3) @ rotation  # the adapted encoder's view of the same windows
    a, c = alignment(new, old, ridge=1e-9)
    moved = aligned_head(head, a, c)
    np.testing.assert_allclose(moved.predict_proba(new), head.predict_proba(old), atol=1e-6)
    assert not np.allclose(head.predict_proba(new), head.predict_proba(old), atol=1e-2)  # unaligned, it would not


def test_adapt_starts_from_the_model_stays_in_budget_and_keeps_a_valid_head(tiny_model, tmp_path):
    model, audio = tiny_model
    result = adapt(AdaptConfig(model, (str(audio),), tmp_path / "home.pt", minutes=0.02, progress=False))
    assert not result.interrupted and result.steps >= 1
    assert result.align_windows == len(list(audio.glob("*.flac")))  # one 3 s window per clip
    original, adapted = load_model(model), load_model(tmp_path / "home.pt")
    assert adapted.class_names == original.class_names and adapted.encoder_config == original.encoder_config
    record = adapted.metadata["adapted"]
    assert record["head"] == "kept" and record["steps"] == result.steps
    assert adapted.head == original.head
    assert adapted.metadata["training"]["config"]["init_model"] == str(model)
    assert adapted.metadata["training"]["config"]["batch_size"] == 3  # the model's own recipe
    before = original.encoder.state_dict()
    assert any(not np.allclose(v.numpy(), before[k].numpy()) for k, v in adapted.encoder.state_dict().items()
               if v.dtype.is_floating_point)


def test_realign_writes_the_head_folded_onto_the_adapted_space(tiny_model, tmp_path):
    model, audio = tiny_model
    adapt(AdaptConfig(model, (str(audio),), tmp_path / "r.pt", minutes=0.01, progress=False, head="realign"))
    adapted, original = load_model(tmp_path / "r.pt"), load_model(model)
    assert adapted.metadata["adapted"]["head"] == "re-aligned" and adapted.class_names == original.class_names
    assert adapted.head["coef"] != original.head["coef"]
    with pytest.raises(ValueError, match="head"):
        AdaptConfig(model, (str(audio),), tmp_path / "x.pt", head="refit")


def test_init_model_must_fit_the_run(tiny_model, tmp_path):
    model, audio = tiny_model
    config = TrainConfig(data=(str(audio),), out=str(tmp_path / "x.pt"), steps=1, batch_size=3, device="cpu",
                         init_model=str(model), encoder=EncoderConfig(width=4, blocks=(1, 1, 1, 1)),
                         triplets=TripletConfig(tile_s=1.0))
    with pytest.raises(ValueError, match="init_model"):
        train(config, progress=False)
