"""Specification of `encoder.train` and `roomtone train`: config files, a tiny end-to-end run, exact
resume, interruption, bad checkpoints and two-process DDP on the CPU (gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from encoder.model import EncoderConfig
from encoder.model_file import load_model
from encoder.augment import AugmentConfig
from encoder.train import CheckpointError, TrainConfig, learning_rate_at, loss_at, read_train_config, train
from encoder.training_data import recording_domain, training_clips
from encoder.triplets import TripletConfig

REPO = Path(__file__).resolve().parents[2]
TEST_DATA = REPO / "tests" / "data"  # the vendored clips (tests/data/homesounds)
CLASSES = ["speech", "typing", "water", "animals", "motor_machine", "footsteps_doors", "quiet_ambience", "tv_speech_music"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """Eight real homesounds clips of different classes cut to 3 s, in the shared meta.csv layout."""
    root = tmp_path_factory.mktemp("tiny")
    (root / "audio").mkdir()
    lines = ["path,label,fold"]
    for index, label in enumerate(CLASSES):
        source = sorted((TEST_DATA / "homesounds" / "audio" / label).glob("*.flac"))[0]
        data, rate = soundfile.read(source, dtype="float32")
        soundfile.write(root / "audio" / f"{label}.flac", data[: 3 * rate], rate)
        lines.append(f"audio/{label}.flac,{label},{index % 4 + 1}")
    (root / "meta.csv").write_text("\n".join(lines) + "\n")
    return root


def tiny_config(data: Path, out: Path, **changes) -> TrainConfig:
    """A training run that takes a second or two: width 2, 1 s tiles, batch 4."""
    values = dict(
        data=(str(data),), out=str(out), steps=4, batch_size=3, validation_fraction=0.25, validate_every=2,
        checkpoint_every=2, seed=3, device="cpu", encoder=EncoderConfig(width=2, blocks=(1, 1, 1, 1)),
        triplets=TripletConfig(tile_s=1.0),
    )
    values.update(changes)
    return TrainConfig(**values)


def test_config_file_in_toml_sets_nested_tables(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text('data = ["x"]\nsteps = 7\nlearning_rate = 0.0005\n[encoder]\nwidth = 16\n[triplets]\ntile_s = 2.5\nneighbour = "group"\n')
    config = read_train_config(path)
    assert (config.steps, config.learning_rate, config.encoder.width) == (7, 0.0005, 16)
    assert config.triplets == TripletConfig(tile_s=2.5, neighbour="group")
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_config_file_errors_name_the_file_and_the_key(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"steps": 5, "learning_rat": 0.1}))
    with pytest.raises(ValueError, match=r"train.json: unknown key\(s\) \['learning_rat'\]"):
        read_train_config(path)
    path.write_text(json.dumps({"encoder": {"widht": 3}}))
    with pytest.raises(ValueError, match="train.json: EncoderConfig: unknown key.*widht"):
        read_train_config(path)


def test_training_clips_carry_paths_and_dataset_qualified_groups_but_no_labels(tiny_data):
    clips, summary = training_clips([tiny_data])
    assert len(clips) == 8 and summary[0]["clips"] == 8
    assert all(clip.group.startswith(f"{tiny_data.name}:") for clip in clips)
    assert not hasattr(clips[0], "label")


def test_tiny_run_writes_a_loadable_model_file_with_its_training_record(tiny_data, tmp_path):
    result = train(tiny_config(tiny_data, tmp_path / "m.pt"), progress=False)
    assert not result.interrupted
    bundle = load_model(tmp_path / "m.pt")
    meta = bundle.metadata
    assert bundle.encoder_config.width == 2
    assert meta["training"]["steps"] == 4 and len(meta["history"]["loss"]) == 4
    assert all(0.0 <= f <= 1.0 for f in meta["history"]["active_fraction"])
    assert [v["step"] for v in meta["validation_history"]] == [2, 4]
    assert meta["data"]["labels_used"] is False and len(meta["data"]["sha256"]) == 64
    assert meta["data"]["train_clips"] + meta["data"]["validation_clips"] == 8
    assert meta["metrics"]["validation_loss"] is not None
    assert (tmp_path / "m.pt.ckpt").is_file()


def test_resumed_run_ends_where_an_uninterrupted_run_ends(tiny_data, tmp_path):
    straight = train(tiny_config(tiny_data, tmp_path / "a.pt", steps=6), progress=False)
    train(tiny_config(tiny_data, tmp_path / "b.pt", steps=3), progress=False)
    resumed = train(tiny_config(tiny_data, tmp_path / "b.pt", steps=6), resume=True, progress=False)
    assert resumed.state.step == 6
    assert resumed.state.history["loss"] == pytest.approx(straight.state.history["loss"], abs=1e-5)
    for name, value in straight.bundle.encoder.state_dict().items():
        assert torch.allclose(value.float(), resumed.bundle.encoder.state_dict()[name].float(), atol=1e-5), name


def test_corrupt_checkpoint_is_a_clear_error(tiny_data, tmp_path):
    (tmp_path / "m.pt.ckpt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match=r"m.pt.ckpt: corrupt checkpoint"):
        train(tiny_config(tiny_data, tmp_path / "m.pt"), resume=True, progress=False)


def test_checkpoint_of_another_architecture_is_a_clear_error(tiny_data, tmp_path):
    train(tiny_config(tiny_data, tmp_path / "m.pt", steps=2), progress=False)
    wider = tiny_config(tiny_data, tmp_path / "m.pt", encoder=EncoderConfig(width=3, blocks=(1, 1, 1, 1)))
    with pytest.raises(CheckpointError, match="different configuration.*encoder"):
        train(wider, resume=True, progress=False)


def test_resuming_with_other_batch_norm_statistics_is_refused_and_an_older_checkpoint_counts_as_updating(tiny_data, tmp_path):
    train(tiny_config(tiny_data, tmp_path / "m.pt", steps=2), progress=False)
    checkpoint = tmp_path / "m.pt.ckpt"
    with pytest.raises(CheckpointError, match="different configuration.*norm_statistics"):
        train(tiny_config(tiny_data, tmp_path / "m.pt", steps=3, norm_statistics="frozen"), resume=True, progress=False)
    older = torch.load(checkpoint, weights_only=True)
    del older["config"]["norm_statistics"], older["config"]["anchor_weight"]  # written before the options existed
    torch.save(older, checkpoint)
    assert train(tiny_config(tiny_data, tmp_path / "m.pt", steps=3), resume=True, progress=False).state.step == 3


def test_a_checkpoint_written_before_an_option_existed_resumes_only_while_the_option_keeps_its_default():
    from encoder.checkpoints import same_setting

    default = {"reverb_p": 0.5, "background_p": 0.0}
    older = {"reverb_p": 0.5}  # written before background_p was added
    assert same_setting(older, {"reverb_p": 0.5, "background_p": 0.0}, default)
    assert not same_setting(older, {"reverb_p": 0.5, "background_p": 0.3}, default)  # the run asks for more
    assert not same_setting(older, {"reverb_p": 0.9, "background_p": 0.0}, default)
    assert not same_setting({"reverb_p": 0.5, "gone": 1}, {"reverb_p": 0.5, "background_p": 0.0}, default)


def test_missing_checkpoint_is_a_clear_error(tiny_data, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        train(tiny_config(tiny_data, tmp_path / "m.pt"), resume=True, progress=False)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "service.cli.main", "train", *args]


def test_sigterm_saves_a_resumable_checkpoint(tiny_data, tmp_path):
    out = tmp_path / "m.pt"
    (tmp_path / "tiny.toml").write_text("batch_size = 3\ncheckpoint_every = 1\n[encoder]\nwidth = 2\n"
                                        "blocks = [1, 1, 1, 1]\n[triplets]\ntile_s = 1.0\n")
    common = ["--data", str(tiny_data), "--config", str(tmp_path / "tiny.toml"), "--out", str(out),
              "--device", "cpu", "--quiet"]
    process = subprocess.Popen(cli(*common, "--steps", "100000"), cwd=REPO, stderr=subprocess.PIPE, text=True)
    checkpoint = Path(str(out) + ".ckpt")
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "resume with --resume" in err
    assert not out.exists()
    step = torch.load(checkpoint, weights_only=True)["state"]["step"]
    assert step >= 1
    done = subprocess.run(cli(*common, "--steps", str(step + 1), "--resume"), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert load_model(out).metadata["training"]["steps"] == step + 1


DDP_SCRIPT = """
import json, os, sys
import torch
from encoder.train import TrainConfig, train
config = TrainConfig.from_dict(json.loads(sys.argv[1]))
result = train(config, progress=False)
torch.save(result.bundle.encoder.state_dict(), os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.pt"))
"""


def test_two_process_ddp_on_cpu_ends_with_identical_weights_on_both_ranks(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path / "m.pt", steps=3, batch_size=4)
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), json.dumps(config.to_dict()), str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    bundle = load_model(tmp_path / "m.pt")
    assert bundle.metadata["training"]["world_size"] == 2
    assert not torch.equal(bundle.encoder.state_dict()["projection.weight"], torch.zeros(1))
    assert np.isfinite(bundle.metadata["history"]["loss"]).all()


def test_constant_schedule_keeps_the_rate_after_a_linear_warm_up():
    config = TrainConfig(learning_rate=1e-3, warmup_steps=4, steps=100)
    assert [learning_rate_at(config, s, 0.0) for s in range(4)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert learning_rate_at(config, 99, 1e6) == 1e-3


def test_cosine_schedule_decays_to_zero_over_the_steps_or_the_time_budget_whichever_ends_first():
    by_steps = TrainConfig(learning_rate=1e-3, lr_schedule="cosine", steps=100)
    assert learning_rate_at(by_steps, 0, 0.0) == pytest.approx(1e-3)
    assert learning_rate_at(by_steps, 50, 0.0) == pytest.approx(5e-4)
    assert learning_rate_at(by_steps, 100, 0.0) == pytest.approx(0.0, abs=1e-12)
    by_time = TrainConfig(learning_rate=1e-3, lr_schedule="cosine", steps=10**6, max_minutes=10.0)
    assert learning_rate_at(by_time, 5, 300.0) == pytest.approx(5e-4)
    assert learning_rate_at(by_time, 5, 900.0) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="step")


def test_each_step_records_the_learning_rate_it_used(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path / "m.pt", steps=4, lr_schedule="cosine", warmup_steps=1, learning_rate=1e-2)
    history = train(config, progress=False).bundle.metadata["history"]
    assert history["lr"] == pytest.approx([learning_rate_at(config, s, 0.0) for s in range(4)], rel=1e-3, abs=1e-6)


def test_recording_domain_is_the_dcase_node_or_else_the_fold():
    from encoder.datasets import Record

    assert recording_domain(Record(Path("/d/audio/DevNode3_ex12_7.wav"), "cooking", 2, "s1")) == "node3"
    assert recording_domain(Record(Path("/h/audio/water/water_A4_003.flac"), "water", 4, "g")) == "fold4"


def test_training_clips_carry_a_dataset_qualified_recording_domain(tiny_data):
    clips, _ = training_clips([tiny_data])
    assert {clip.domain for clip in clips} == {f"{tiny_data.name}:fold{k}" for k in (1, 2, 3, 4)}


def pk_config(data: Path, out: Path, **changes) -> TrainConfig:
    """A tiny run on P=4 clips x K=2 tiles per batch."""
    triplets = TripletConfig(tile_s=1.0, sampler="pk", clips_per_batch=4, tiles_per_clip=2, random_offsets=True)
    return tiny_config(data, out, **{"triplets": triplets, "loss": "batch_all", "validation_fraction": 0.0, **changes})


@pytest.mark.parametrize("loss", ["batch_all", "batch_hard"])
def test_pk_batches_with_in_batch_losses_train_and_write_a_loadable_model(tiny_data, tmp_path, loss):
    result = train(pk_config(tiny_data, tmp_path / "m.pt", loss=loss), progress=False)
    assert result.state.step == 4 and all(np.isfinite(result.state.history["loss"]))
    assert load_model(tmp_path / "m.pt").metadata["training"]["config"]["loss"] == loss


def test_loss_must_fit_the_sampler():
    with pytest.raises(ValueError, match="does not fit triplets.sampler"):
        TrainConfig(loss="batch_hard")
    with pytest.raises(ValueError, match="does not fit triplets.sampler"):
        TrainConfig(triplets=TripletConfig(sampler="pk"))


def test_projection_head_is_trained_but_not_saved_and_the_public_embedding_stays_256_unit_vectors(tiny_data, tmp_path):
    config = pk_config(tiny_data, tmp_path / "m.pt", projection_dim=32, encoder=EncoderConfig(width=2, blocks=(1, 1, 1, 1), pooling="mean+max"))
    result = train(config, progress=False)
    assert result.bundle.metadata["training"]["projection_head_parameters"] > 0
    bundle = load_model(tmp_path / "m.pt")  # the daemon's loader: no head key, only the encoder's weights
    assert not any(name.startswith("head") for name in bundle.encoder.state_dict())
    emb = bundle.encoder(torch.randn(2, 1, 128, 300))
    assert emb.shape == (2, 256) and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    saved = torch.load(tmp_path / "m.pt.ckpt", weights_only=True)
    assert saved["projection_head"] is not None  # kept for --resume


def test_capture_chain_mixup_and_crop_run_in_training_from_cached_audio(tiny_data, tmp_path):
    augment = AugmentConfig(reverb_p=1.0, noise_p=1.0, band_limit_p=1.0, resample_p=1.0, mixup=0.4, crop_min_scale=0.6)
    result = train(pk_config(tiny_data, tmp_path / "m.pt", augment=augment, steps=2), progress=False)
    assert result.state.step == 2 and all(np.isfinite(result.state.history["loss"]))


def test_resumed_pk_run_with_augmentation_and_head_ends_where_an_uninterrupted_run_ends(tiny_data, tmp_path):
    extra = dict(projection_dim=16, augment=AugmentConfig(noise_p=0.5, mixup=0.3, crop_min_scale=0.8))
    straight = train(pk_config(tiny_data, tmp_path / "a.pt", steps=4, **extra), progress=False)
    train(pk_config(tiny_data, tmp_path / "b.pt", steps=2, **extra), progress=False)
    resumed = train(pk_config(tiny_data, tmp_path / "b.pt", steps=4, **extra), resume=True, progress=False)
    assert resumed.state.history["loss"] == pytest.approx(straight.state.history["loss"], abs=1e-5)


def test_a_run_with_init_model_starts_from_that_models_encoder_weights(tiny_data, tmp_path):
    first = train(tiny_config(tiny_data, tmp_path / "first.pt"), progress=False)
    tuned = train(tiny_config(tiny_data, tmp_path / "tuned.pt", steps=1, learning_rate=1e-12,
                              init_model=str(tmp_path / "first.pt")), progress=False)
    start, after = first.bundle.encoder.state_dict(), tuned.bundle.encoder.state_dict()
    for name, weight in start.items():
        if weight.dtype.is_floating_point and "running" not in name:  # batch-norm statistics move with any step
            assert torch.allclose(weight, after[name], atol=1e-6), name
    assert load_model(tmp_path / "tuned.pt").metadata["training"]["config"]["init_model"] == str(tmp_path / "first.pt")


def test_init_model_of_another_architecture_is_refused_naming_the_file(tiny_data, tmp_path):
    train(tiny_config(tiny_data, tmp_path / "first.pt"), progress=False)
    with pytest.raises(ValueError, match=r"first\.pt: init_model has encoder"):
        train(tiny_config(tiny_data, tmp_path / "wide.pt", encoder=EncoderConfig(width=3, blocks=(1, 1, 1, 1)),
                          init_model=str(tmp_path / "first.pt")), progress=False)


LABELLED_SETS = ("homesounds", "music")  # for the head and evaluation only, never for the bundled encoder


def test_committed_training_configs_parse_and_no_encoder_config_reads_a_labelled_set():
    p1 = read_train_config(REPO / "models" / "roomtone.p1.train.toml")
    bundled = read_train_config(REPO / "models" / "roomtone.train.toml")
    for config in (p1, bundled):
        assert config.data == ("../shared/data/unlabelled",)  # never homesounds or music: never heard
        assert config.loss == "batch_all" and config.triplets.sampler == "pk" and config.augment.needs_waveform
        assert config.encoder.embedding_dim == 256
    # a budget of at least 150 minutes of process CPU time (issue 23); the curves of rounds 3-5 peaked before
    # the end (docs/encoder.md): the pick is by the checkpoint curves, not by the last step
    assert bundled.budget_clock == "cpu" and bundled.max_minutes >= 150
    assert bundled.snapshot_every_minutes > 0  # checkpoint curves choose what ships


def test_the_bundled_model_comes_from_a_run_of_at_least_150_cpu_minutes_and_records_where_it_was_picked():
    training = load_model(REPO / "models" / "roomtone.pt").metadata["training"]
    assert training["config"]["budget_clock"] == "cpu" and training["config"]["max_minutes"] >= 150
    assert training["config"]["data"] == ["../shared/data/unlabelled"]
    # a snapshot of that run, picked by the checkpoint curves: its own steps and CPU time are recorded
    assert training["steps"] > 0 and 0 < training["budget_elapsed_s"] <= training["config"]["max_minutes"] * 60


@pytest.mark.parametrize("name", ["roomtone.pt", "roomtone-p1.pt"])
def test_the_bundled_encoders_never_heard_a_labelled_set(name):
    metadata = load_model(REPO / "models" / name).metadata
    datasets = metadata["data"]["datasets"]
    assert datasets, f"models/{name} records no training data"
    for entry in datasets:
        heard = [s for s in LABELLED_SETS if s in entry["name"] or s in Path(entry["path"]).parts]
        assert not heard, f"models/{name} was pre-trained on {heard} ({entry['path']}): labelled sets are for the head only"
        assert entry["kind"] == "unlabelled"
    assert metadata["data"]["labels_used"] is False
    assert metadata["training"]["steps"] > 0 and metadata["training"]["budget_elapsed_s"] > 0


def test_snapshots_keep_a_model_file_at_every_budget_mark_with_its_steps_and_minutes(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path / "m.pt", steps=10**6, max_minutes=0.21, snapshot_every_minutes=0.1)
    train(config, progress=False)
    snapshots = sorted((tmp_path / "m.snapshots").glob("m*.pt"))
    assert [p.name for p in snapshots] == ["m000.1.pt", "m000.2.pt"]
    records = [load_model(p).metadata for p in snapshots]
    steps = [r["training"]["steps"] for r in records]
    assert 0 < steps[0] < steps[1] <= load_model(tmp_path / "m.pt").metadata["training"]["steps"]
    assert [r["training"]["budget_elapsed_s"] // 6 for r in records] == [1, 2]  # written as each mark passed
    assert all(r["data"]["datasets"][0]["path"].endswith(tiny_data.name) for r in records)


def test_snapshot_interval_must_not_be_negative(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="snapshot_every_minutes"):
        tiny_config(tiny_data, tmp_path / "m.pt", snapshot_every_minutes=-1)


def test_batch_hard_with_a_warm_up_uses_batch_all_for_the_first_steps_then_batch_hard():
    config = TrainConfig(loss="batch_hard", batch_all_warmup_steps=3, triplets=TripletConfig(sampler="pk"))
    assert [loss_at(config, step) for step in range(5)] == ["batch_all"] * 3 + ["batch_hard"] * 2
    assert loss_at(TrainConfig(), 0) == "zero_filtered"


def test_a_batch_all_warm_up_is_only_for_batch_hard_and_never_negative():
    with pytest.raises(ValueError, match="warm-up for loss = 'batch_hard'"):
        TrainConfig(loss="batch_all", batch_all_warmup_steps=10, triplets=TripletConfig(sampler="pk"))
    with pytest.raises(ValueError, match="batch_all_warmup_steps must be >= 0"):
        TrainConfig(loss="batch_hard", batch_all_warmup_steps=-1, triplets=TripletConfig(sampler="pk"))


def test_same_moment_positives_need_a_capture_chain_to_make_the_two_cuts_differ():
    with pytest.raises(ValueError, match="same_moment needs a capture chain"):
        TrainConfig(loss="batch_all", triplets=TripletConfig(sampler="pk", same_moment=True))
    TrainConfig(loss="batch_all", triplets=TripletConfig(sampler="pk", same_moment=True), augment=AugmentConfig(reverb_p=0.5))


def test_the_warm_up_run_switches_loss_at_the_configured_step(tiny_data, tmp_path):
    config = pk_config(tiny_data, tmp_path / "m.pt", loss="batch_hard", batch_all_warmup_steps=2, steps=4)
    result = train(config, progress=False)
    assert result.state.step == 4 and all(np.isfinite(result.state.history["loss"]))
    assert load_model(tmp_path / "m.pt").metadata["training"]["config"]["batch_all_warmup_steps"] == 2
