"""The daemon end to end: `roomtone run` as the README starts it (demo recording when there is no
microphone), live capture from a PulseAudio source with the bundled model and head, health changing when
the sound is clipped and hummed, the gRPC API over the running pipeline, clean shutdown on SIGTERM."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from daemon_support import (  # noqa: F401
    DaemonProcess, clipped, file_daemon_config, hummed, isolated_args, play, pulseaudio, write_wav,
)
from encoder.audio import load_audio
from encoder.drift import DriftTracker
from encoder.model_file import load_model
from service.cli.main import main
from service.daemon import Daemon
from service.store.event_store import EventQuery, EventStore
from service.rpc import roomtone_pb2 as pb
from service.rpc import roomtone_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[2]
BUNDLED_MODEL = REPO / "models" / "roomtone.pt"
ROOMTONE = Path(sys.executable).parent / "roomtone"
LIVE_CLASS = "typing"  # the class of the clip played into the PulseAudio sink
LIVE_CLIP = f"audio/{LIVE_CLASS}/{LIVE_CLASS}_A4_000.flac"


@pytest.fixture(scope="module")
def bundled_model() -> Path:
    if not BUNDLED_MODEL.is_file():
        pytest.fail(f"the bundled model {BUNDLED_MODEL} is missing (train it with `roomtone train`)")
    return BUNDLED_MODEL


def stored_windows(tmp_path: Path) -> list:
    """Every stored window, oldest first, with its embedding."""
    with EventStore(tmp_path / "data" / "roomtone.db") as store:
        listed = sorted(store.list_windows(limit=1000).items, key=lambda w: w.start_unix_ms)
        return [store.get_window(w.window_id) for w in listed]


def test_the_readme_command_runs_on_the_demo_recording_without_a_microphone_and_stops_cleanly(bundled_model, tmp_path):
    env = {**os.environ, "PULSE_SERVER": "unix:/nonexistent"}  # no sound card, no sound server: no input at all
    env.pop("ROOMTONE_DATA_DIR", None)
    # the README's first command (set-up is a quick check on a ready machine, then `exec roomtone run`)
    daemon = DaemonProcess(isolated_args(tmp_path / "data"), env=env, command=("bash", "scripts/run.sh"))
    try:
        demo = daemon.wait_for("no audio input device found; using the bundled demo recording, looped", 60)
        assert demo["mic"] == "mic0" and demo["file"].endswith("service/assets/demo.flac")
        loaded = daemon.wait_for("model loaded", 60)
        assert loaded["model"] == str(bundled_model) and loaded["device"] in ("cpu", "cuda")
        assert daemon.wait_for("store opened", 60)["store"] == str((tmp_path / "data" / "roomtone.db").resolve())
        assert daemon.wait_for("similarity index ready", 60)["seconds"] >= 0  # built in the background at start
        daemon.wait_for("state changed", 60, kind="health_changed")  # the first 10 s window was stored
    finally:
        code = daemon.stop()
    assert code == 0, "".join(daemon.raw[-20:])
    stopped = daemon.wait_for("roomtone stopped", 5)
    assert stopped["reason"] == "SIGTERM" and stopped["drained"] is True
    windows = stored_windows(tmp_path)
    assert len(windows) >= 1 and windows[0].mic_id == "mic0"
    assert windows[0].embedding.shape == (load_model(bundled_model).embedding_dim,)
    assert windows[0].health_state == "ok", windows[0].health_reasons
    if load_model(bundled_model).head is not None:
        assert windows[0].label == "footsteps_doors", windows[0].probabilities  # the demo recording's class


def test_a_bad_config_key_stops_the_start_and_names_the_key(tmp_path, capsys):
    config = tmp_path / "roomtone.toml"
    config.write_text("[pipeline]\nhop_seconds = 5\n")
    assert main(["run", "--config", str(config)]) == 2
    assert "pipeline.hop_seconds" in capsys.readouterr().err


def test_the_daemon_serves_its_microphones_and_windows_over_grpc_while_running(small_model, homesounds, tmp_path):
    clip = homesounds / "audio" / "speech" / "speech_A2_000.flac"
    config = file_daemon_config(small_model, tmp_path / "data", "desk", clip)
    daemon = Daemon(config)
    daemon.start()
    try:
        assert daemon.pipeline.drained.wait(60)
        with grpc.insecure_channel(daemon.grpc_address) as channel:
            stub = pb_grpc.RoomtoneStub(channel)
            (mic,) = stub.ListMicrophones(pb.ListMicrophonesRequest(), timeout=10).microphones
            assert (mic.mic_id, mic.device, mic.state) == ("desk", str(clip), "stopped")
            assert mic.health.state == pb.HEALTH_STATE_OK and mic.label in ("water", "typing", "speech")
            assert mic.last_window_end_unix_ms > 0
            events = stub.ListEvents(pb.ListEventsRequest(limit=10), timeout=10).events
            assert any(e.HasField("window") for e in events)
            classified = stub.Classify(pb.ClassifyRequest(audio=clip.read_bytes()), timeout=60)
            assert len(classified.windows) == 1
    finally:
        daemon.stop()
    saved = json.loads(daemon.drift_path.read_text())
    assert set(saved) == {"desk"}
    before = DriftTracker.from_dict(saved["desk"])
    assert before.count > 0 and before.heard > 0
    # Mark the saved baseline (the same file gives the same embedding, so a fresh baseline would look alike).
    saved["desk"]["heard"] = 10_000
    daemon.drift_path.write_text(json.dumps(saved))
    restarted = Daemon(config)
    restarted.start()
    try:
        assert restarted.pipeline.drained.wait(60)  # the file is heard again after the restart: it may learn more
        after = DriftTracker.from_dict(restarted.analyser.drift_state()["desk"])
        # the mic's drift baseline survived the restart: the restarted daemon went on from it, not from nothing
        assert after.heard >= 10_000 and after.count >= before.count
        np.testing.assert_array_equal(after.exemplars[:before.exemplars.shape[0]], before.exemplars)
    finally:
        restarted.stop()


@pytest.mark.audio
@pytest.mark.slow
def test_live_capture_labels_what_is_played_and_notices_when_it_becomes_clipped_and_hummed(
        pulseaudio, bundled_model, homesounds, tmp_path):
    clean = load_audio(homesounds / LIVE_CLIP)[0].numpy()
    bad = hummed(clipped(clean))
    # 40 s clean then 30 s clipped + hummed, played before the daemon starts so no window starts in silence;
    # with 5 windows the first is clean and the last is bad for any start-up time up to ~20 s
    track = write_wav(tmp_path / "live.wav", np.concatenate([clean] * 4 + [bad] * 3, axis=1))
    player = play(track)
    daemon = None
    try:
        time.sleep(1.5)  # paplay loses up to ~1 s at its start
        daemon = DaemonProcess([*isolated_args(tmp_path / "data"), "--max-windows", "5"])
        daemon.wait_for("microphone", 60, mic="mic0")
        running = daemon.wait_for("roomtone running", 60)
        first = daemon.wait_for("state changed", 60, kind="health_changed")
        assert first["current"] == "ok", first
        with grpc.insecure_channel(running["grpc"]) as channel:
            health = pb_grpc.RoomtoneStub(channel).GetMicrophoneHealth(
                pb.GetMicrophoneHealthRequest(mic_id="mic0"), timeout=10)
        assert health.state == pb.HEALTH_STATE_OK
        changed = daemon.wait_for("state changed", 90, kind="health_changed", previous="ok")
        assert changed["current"] in ("degraded", "faulty")
        assert any(r.startswith(("clipping", "hum")) for r in changed["reasons"]), changed
        assert daemon.proc.wait(60) == 0  # --max-windows reached: drains, flushes, exits 0
    finally:
        player.kill()
        if daemon is not None:
            daemon.kill()
    microphone = daemon.wait_for("microphone", 1, mic="mic0")
    assert microphone["device"] != "demo:demo.flac"
    assert microphone["input"] == "PulseAudio source virt.monitor"  # the real input, not just "default"
    assert 0 < daemon.wait_for("capture delivering audio", 1, mic="mic0")["seconds_after_open"] < 10
    assert daemon.find("next: `roomtone events --follow --address " + running["grpc"] + "` prints events as they "
                       "happen, `roomtone mics --address " + running["grpc"] + "` the microphones and their health")
    windows = stored_windows(tmp_path)
    assert len(windows) == 5
    first_window = windows[0]
    assert first_window.health_state == "ok" and first_window.embedding is not None
    if load_model(bundled_model).head is not None:
        assert first_window.label == LIVE_CLASS, first_window.probabilities
    assert windows[-1].health_state != "ok"
    with EventStore(tmp_path / "data" / "roomtone.db") as store:
        changes = store.list_events(EventQuery(kinds=("health_changed",)), limit=10).items
    assert [c.current for c in sorted(changes, key=lambda c: c.time_unix_ms)][:1] == ["ok"]
