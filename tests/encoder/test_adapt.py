"""`roomtone adapt` (encoder/adapt.py): training continues from the model's weights with its own recipe on
the home's audio, within a time budget, without forgetting: batch-norm statistics stay frozen, a corpus can
be mixed into the home's batches, and the head is kept (or re-aligned) so its answers keep their meaning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

import torch

from encoder.adapt import AdaptConfig, adapt, aligned_head, alignment
from encoder.head import fit_head
from encoder.model import EncoderConfig
from encoder.model_file import load_model, save_model
from encoder.train import TrainConfig, train
from encoder.training_data import TrainingClip, mixed_in_clips
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
    from encoder.recording_embeddings import embed_paths

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


def test_the_budget_runs_on_the_wall_clock_unless_the_cpu_clock_is_asked_for(tiny_model, tmp_path):
    from encoder.adapt import adaptation_train_config

    model, audio = tiny_model
    bundle = load_model(model)
    wall = AdaptConfig(model, (str(audio),), tmp_path / "home.pt", minutes=3)
    cpu = AdaptConfig(model, (str(audio),), tmp_path / "home.pt", minutes=3, budget_clock="cpu")
    assert adaptation_train_config(bundle, wall).budget_clock == "wall"
    assert (adaptation_train_config(bundle, cpu).budget_clock, adaptation_train_config(bundle, cpu).max_minutes) == ("cpu", 3)


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


def norm_statistics(bundle) -> dict[str, np.ndarray]:
    """The encoder's batch-norm running means and variances by name."""
    return {k: v.numpy().copy() for k, v in bundle.encoder.state_dict().items() if "running_" in k}


def test_adaptation_keeps_the_models_batch_norm_statistics_while_its_weights_move(tiny_model, tmp_path):
    model, audio = tiny_model
    adapt(AdaptConfig(model, (str(audio),), tmp_path / "home.pt", minutes=0.02, progress=False, learning_rate=1e-2))
    original, adapted = load_model(model), load_model(tmp_path / "home.pt")
    assert adapted.metadata["training"]["config"]["norm_statistics"] == "frozen"
    before, after = norm_statistics(original), norm_statistics(adapted)
    assert before.keys() == after.keys() and before
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    weights = {k: v for k, v in original.encoder.state_dict().items() if "running_" not in k and v.dtype.is_floating_point}
    assert any(not np.allclose(v.numpy(), weights[k].numpy()) for k, v in adapted.encoder.state_dict().items() if k in weights)


def test_updated_statistics_learn_the_homes_audio(tiny_model, tmp_path):
    model, audio = tiny_model
    adapt(AdaptConfig(model, (str(audio),), tmp_path / "home.pt", minutes=0.02, progress=False, norm_statistics="update"))
    before, after = norm_statistics(load_model(model)), norm_statistics(load_model(tmp_path / "home.pt"))
    assert any(not np.allclose(after[name], before[name]) for name in before)


def test_corpus_excerpts_make_up_the_asked_share_of_clips_and_are_as_long_as_the_homes(tmp_path):
    rate = 16000
    own, others = [], []
    for i, seconds in enumerate([2.0, 3.0, 3.0, 4.0]):
        soundfile.write(tmp_path / f"home{i}.flac", np.zeros(int(seconds * rate), np.float32), rate)
        own.append(TrainingClip(tmp_path / f"home{i}.flac", f"home:{i}"))
    for i, seconds in enumerate([10.0, 2.0, 12.0]):
        soundfile.write(tmp_path / f"corpus{i}.flac", np.zeros(int(seconds * rate), np.float32), rate)
        others.append(TrainingClip(tmp_path / f"corpus{i}.flac", f"corpus:{i}"))
    mixed = mixed_in_clips(own, others, 0.5, seed=1)
    assert len(mixed) == 4  # half of own + mixed
    assert {c.group for c in mixed[:3]} == {"corpus:0", "corpus:1", "corpus:2"}  # each corpus clip before any repeat
    for clip in mixed:
        source = others[int(clip.group.split(":")[1])]
        if source.path.name == "corpus1.flac":
            assert clip == source  # shorter than the home's median clip: whole
        else:
            assert clip.duration_s == 3.0 and 0.0 <= clip.start_s <= 12.0 - 3.0
    assert mixed == mixed_in_clips(own, others, 0.5, seed=1)
    assert len(mixed_in_clips(own, others, 0.2, seed=1)) == 1
    assert mixed_in_clips(own, others, 0.0, seed=1) == []


def test_adaptation_mixes_the_corpus_into_the_homes_batches(tiny_model, tmp_path):
    model, audio = tiny_model
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    source = sorted((REPO / "tests" / "data" / "homesounds" / "audio" / "speech").glob("*.flac"))[0]
    data, rate = soundfile.read(source, dtype="float32")
    for k in range(3):
        soundfile.write(corpus / f"c{k}.flac", data[k * rate: (k + 6) * rate], rate)
    adapt(AdaptConfig(model, (str(audio),), tmp_path / "home.pt", minutes=0.02, progress=False,
                      corpus=(str(corpus),), corpus_fraction=0.25))
    adapted = load_model(tmp_path / "home.pt")
    config = adapted.metadata["training"]["config"]
    assert config["mix_data"] == [str(corpus)] and config["mix_fraction"] == 0.25
    home_clips = len(list(audio.glob("*.flac")))
    assert adapted.metadata["data"]["clips"] == home_clips + round(home_clips * 0.25 / 0.75)
    mixed = [d for d in adapted.metadata["data"]["datasets"] if d["name"] == "mixed in"]
    assert mixed and mixed[0]["clips"] == round(home_clips * 0.25 / 0.75)


def test_a_missing_corpus_folder_is_an_error_that_names_it(tiny_model, tmp_path):
    model, audio = tiny_model
    with pytest.raises(ValueError, match="nowhere.*corpus folder not found"):
        AdaptConfig(model, (str(audio),), tmp_path / "x.pt", corpus=(str(tmp_path / "nowhere"),))
    with pytest.raises(ValueError, match="corpus_fraction"):
        AdaptConfig(model, (str(audio),), tmp_path / "x.pt", corpus=(str(audio),), corpus_fraction=1.0)


def test_the_anchor_pulls_the_weights_back_toward_the_starting_model():
    from encoder.train import anchor_penalty

    layer = torch.nn.Linear(3, 2)
    start = {k: v.clone() for k, v in layer.state_dict().items()}
    penalty = anchor_penalty(layer, start, weight=0.5)
    assert float(penalty().detach()) == 0.0
    with torch.no_grad():
        layer.weight += 1.0
    value = penalty()
    assert float(value.detach()) == pytest.approx(0.5 * 6)
    value.backward()
    np.testing.assert_allclose(layer.weight.grad.numpy(), np.full((2, 3), 1.0))  # 2 * 0.5 * (w - w0): downhill is back


def test_validation_leaves_frozen_batch_norm_frozen():
    from encoder.model import Encoder
    from encoder.train import hold_norm_statistics, validate

    class OneBatch:
        epoch = 0

        def __len__(self):
            return 1

        def __getitem__(self, index):
            return torch.randn(6, 1, 128, 20), None

    encoder = Encoder(EncoderConfig(width=2, blocks=(1, 1, 1, 1)))
    encoder.train()
    hold_norm_statistics(encoder)
    validate(encoder, OneBatch(), torch.device("cpu"), margin=0.1)
    norms = [m for m in encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and not any(m.training for m in norms)
    assert encoder.training  # the rest of the network trains on


def test_blended_statistics_sit_the_asked_share_of_the_way_to_the_homes(tiny_model):
    from encoder.adapt import blended_statistics, home_statistics

    bundle = load_model(tiny_model[0])
    rng = np.random.default_rng(0)
    windows = [(0.3 * rng.standard_normal(16000 * 2)).astype(np.float32) for _ in range(4)]  # loud noise: another home
    home = home_statistics(bundle, windows)
    own = norm_statistics(bundle)
    assert home.keys() == own.keys() and not np.allclose(home["input_norm.running_mean"].numpy(), own["input_norm.running_mean"])
    for share in (0.0, 0.25, 1.0):
        blended = norm_statistics(blended_statistics(bundle, home, share))
        for name in own:
            np.testing.assert_allclose(blended[name], (1 - share) * own[name] + share * home[name].numpy(), rtol=1e-5, atol=1e-6)
    assert all(np.array_equal(norm_statistics(bundle)[k], own[k]) for k in own)  # the model itself is untouched
