"""Microphone faults while the daemon runs, on a real PulseAudio server: the input device disappears
(its null-sink module is unloaded), the input stalls (the sink is suspended: no callbacks). The daemon
marks that microphone faulty quickly, keeps the other microphone and the API going, and recovers by itself
when the device comes back. (NaN/garbage audio: tests/reliability/test_bad_input.py.)"""

from __future__ import annotations

import subprocess
import time

import grpc
import numpy as np
import pytest

from daemon_support import play, pulseaudio, start_pulseaudio, write_wav  # noqa: F401
from encoder.audio import load_audio
from reliability_support import DaemonProcess, isolated_args, metric_value, scrape
from service.rpc import roomtone_pb2 as pb
from service.rpc import roomtone_pb2_grpc as pb_grpc

WINDOW_S = 2.0
FAULTY = pb.HEALTH_STATE_FAULTY


def _mics(stub) -> dict[str, pb.Microphone]:
    return {m.mic_id: m for m in stub.ListMicrophones(pb.ListMicrophonesRequest(), timeout=10).microphones}


def _room_windows(stub, since_ms: int) -> list[pb.Window]:
    events = stub.ListEvents(pb.ListEventsRequest(limit=1000, filter=pb.EventFilter(mic_ids=["room"], since_unix_ms=since_ms,
                             kinds=[pb.EVENT_KIND_WINDOW])), timeout=10).events
    return sorted((e.window for e in events), key=lambda w: w.start_unix_ms)


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"not within {timeout} s: {what}")


def _null_sink_module(sink: str) -> str:
    modules = subprocess.run(["pactl", "list", "short", "modules"], capture_output=True, text=True, timeout=10).stdout
    return next(line.split("\t")[0] for line in modules.splitlines()
                if "module-null-sink" in line and f"sink_name={sink}" in line)


@pytest.mark.audio
def test_a_lost_or_stalled_input_is_faulty_at_once_the_other_mic_goes_on_and_it_recovers(pulseaudio, small_model, homesounds, tmp_path):
    import sounddevice

    sounddevice._terminate()
    sounddevice._initialize()
    signal = load_audio(homesounds / "audio" / "typing" / "typing_A4_000.flac")[0].numpy()
    sound = write_wav(tmp_path / "typing_x6.wav", np.concatenate([signal] * 6, axis=1))
    config = tmp_path / "mics.toml"
    config.write_text(f'model = "{small_model}"\n[[mics]]\nid = "room"\nkind = "auto"\n'
                      f'[[mics]]\nid = "demo"\nkind = "demo"\n')
    player = play(sound)
    daemon = DaemonProcess(["--config", str(config), "--window-s", str(WINDOW_S), "--hop-s", str(WINDOW_S),
                            *isolated_args(tmp_path / "data")])
    try:
        running = daemon.wait_for("roomtone running", 90)
        assert any(e.get("mic") == "room" and "demo" not in str(e.get("device")) for e in daemon.lines
                   if e.get("message") == "microphone"), "the PulseAudio input should be used"
        stub = pb_grpc.RoomtoneStub(grpc.insecure_channel(running["grpc"]))
        metrics_url = f"http://127.0.0.1:{running['metrics_port']}/metrics"
        _wait(lambda: len(_room_windows(stub, 0)) >= 2 and _room_windows(stub, 0)[-1].health_state != FAULTY, 30,
              "the room microphone delivers healthy windows")

        # the device disappears. PulseAudio moves the capture stream to its fallback source (and would move a
        # player with it), so the sound stops too: roomtone must notice the dead input from the audio alone.
        player.kill()
        lost_ms = int(time.time() * 1000)
        subprocess.run(["pactl", "unload-module", _null_sink_module(pulseaudio)], check=True, timeout=10)
        windows = _wait(lambda: [w for w in _room_windows(stub, 0) if w.end_unix_ms > lost_ms][:3]
                        if len([w for w in _room_windows(stub, 0) if w.end_unix_ms > lost_ms]) >= 3 else None,
                        30, "three room windows after the device was lost")
        assert FAULTY in [w.health_state for w in windows[:2]], [(w.health_state, list(w.health_reasons)) for w in windows]
        assert _mics(stub)["room"].health.state == FAULTY
        assert metric_value(scrape(metrics_url), "roomtone_mic_health_state", mic="room") == 2
        demo = _mics(stub)["demo"]
        assert demo.state == "running" and demo.last_window_end_unix_ms > lost_ms  # the other mic goes on

        # the device comes back: audio flows again without any action on the daemon
        reason = start_pulseaudio()
        assert reason is None, reason
        player.kill()
        player = play(sound)
        back_ms = int(time.time() * 1000)
        _wait(lambda: any(w.health_state != FAULTY for w in _room_windows(stub, back_ms)), 30,
              "a healthy room window after the device came back")

        # the input stalls: no callbacks at all. Faulty and 'reopening' well within two 10 s windows.
        subprocess.run(["pactl", "suspend-sink", pulseaudio, "1"], check=True, timeout=10)
        stalled = time.monotonic()
        try:
            mic = _wait(lambda: (m := _mics(stub)["room"]).state == "reopening" and m, 20, "room reported reopening")
            assert time.monotonic() - stalled < 2 * 10.0
            assert mic.health.state == FAULTY and "no_input" in mic.health.reasons[0]
            _wait(lambda: metric_value(scrape(metrics_url), "roomtone_mic_health_state", mic="room") == 2, 5,
                  "the health gauge says faulty")
            assert metric_value(scrape(metrics_url), "roomtone_capture_errors_total", mic="room") >= 1
            assert _mics(stub)["demo"].state == "running"
        finally:
            subprocess.run(["pactl", "suspend-sink", pulseaudio, "0"], check=True, timeout=10)
        resumed_ms = int(time.time() * 1000)
        _wait(lambda: _mics(stub)["room"].state == "running" and any(
            w.health_state != FAULTY for w in _room_windows(stub, resumed_ms)), 40, "room recovered after the stall")
    finally:
        player.kill()
        code = daemon.stop()
        start_pulseaudio()  # leave the null sink in place for other tests
    assert code == 0
