"""One microphone sending samples the spectrogram cannot hold (1e30, random bytes read as floats) fails
alone (issue 15, BROKE 3): its windows are stored as faulty with the reason, the healthy microphone beside
it stores every window, ListMicrophones reports the broken one faulty, and Classify of the same audio
returns the fault with status OK, never NaN probabilities."""

from __future__ import annotations

import time

import grpc
import numpy as np
import soundfile

from reliability_support import DaemonProcess, isolated_args
from service.store.event_store import EventStore
from service.rpc import roomtone_pb2 as pb
from service.rpc import roomtone_pb2_grpc as pb_grpc

RATE = 16000


def float_wav(path, samples: np.ndarray):
    soundfile.write(str(path), samples.astype(np.float32), RATE, subtype="FLOAT")
    return path


def test_a_microphone_of_huge_values_is_faulty_and_the_others_store_every_window(small_model, clip, tmp_path):
    rng = np.random.default_rng(0)
    seconds = 10
    huge = float_wav(tmp_path / "huge.wav", np.full(seconds * RATE, 1e30))
    noise = float_wav(tmp_path / "bytes.wav", np.frombuffer(rng.bytes(seconds * RATE * 4), np.float32))
    args = ["--model", str(small_model), "--fast", "--window-s", "2", "--hop-s", "2", "--demo",
            "--file", f"healthy={clip}", "--file", f"huge={huge}", "--file", f"bytes={noise}",
            *isolated_args(tmp_path / "data")]
    daemon = DaemonProcess(args)
    running = daemon.wait_for("roomtone running", 90)
    channel = grpc.insecure_channel(running["grpc"])
    stub = pb_grpc.RoomtoneStub(channel)
    try:
        for mic in ("healthy", "huge", "bytes"):
            daemon.wait_for("source ended", 120, mic=mic)
        reply = stub.Classify(pb.ClassifyRequest(audio=huge.read_bytes()), timeout=60)
        assert reply.windows and all(w.health_state == pb.HEALTH_STATE_FAULTY for w in reply.windows)
        assert all(not w.probabilities and "features are not finite" in w.health_reasons[0] for w in reply.windows)
        deadline = time.monotonic() + 60
        while True:  # "source ended" is logged when the last window is cut; wait until it is stored
            mics = {m.mic_id: m for m in stub.ListMicrophones(pb.ListMicrophonesRequest(), timeout=30).microphones}
            if all(mics[m].health.state != pb.HEALTH_STATE_UNSPECIFIED for m in ("huge", "bytes")) \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert mics["huge"].health.state == mics["bytes"].health.state == pb.HEALTH_STATE_FAULTY
    finally:
        channel.close()
        assert daemon.stop() == 0, "".join(daemon.raw[-30:])
    with EventStore(tmp_path / "data" / "roomtone.db") as store:
        windows = store.list_windows(limit=1000).items
    by_mic = {mic: [w for w in windows if w.mic_id == mic] for mic in ("healthy", "huge", "bytes")}
    assert len(by_mic["healthy"]) == 5
    assert len(by_mic["huge"]) == len(by_mic["bytes"]) == 5
    for mic in ("huge", "bytes"):
        assert all(w.health_state == "faulty" and w.health_reasons[0].startswith("non_finite") for w in by_mic[mic])
    assert not any("Traceback" in line or "queue full" in line for line in daemon.raw)
