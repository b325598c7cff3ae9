"""The decompression bomb of issue 26 (BROKE 1) through every door audio comes in by: Classify and AddSound
uploads, `roomtone sounds add`, the offline commands (classify, health, embed, adapt) and a file microphone.

The attack's file was a 3.4 MB FLAC of 600 s x 8 channels at 655,350 Hz (11.7 GiB as float32): AddSound got the
daemon OOM-killed at 6 GiB, `roomtone adapt` died with "Unable to allocate 11.7 GiB". The test files have the
same shape for `BOMB_SECONDS` and `SMALL_SECONDS` (their decode takes seconds, not minutes); each door is fed
both, and decoding block by block must keep the growth of its peak memory near what the extra output needs
(7 MiB at 16 kHz), far below what reading the extra seconds whole takes (280 MiB as float32, twice that with
the transposed copy the old decode made).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile

from daemon_support import ROOMTONE
from reliability_support import DaemonProcess, isolated_args
from service.rpc import roomtone_pb2 as pb
from service.rpc import roomtone_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow  # ten commands and a daemon

RATE = 655_350
CHANNELS = 8
BOMB_SECONDS = 20
#: What each door is first fed: the same shape, long enough for every door (adapt needs more than a 5 s tile).
SMALL_SECONDS = 6
#: What reading the bomb's extra seconds whole takes as float32 (the old decode: 280 MiB, plus a transposed copy).
WHOLE_READ = (BOMB_SECONDS - SMALL_SECONDS) * RATE * CHANNELS * 4
#: Most a door's peak memory may grow from the small file to the bomb: half of what any whole read of the extra
#: seconds must allocate (measured on 2 cores: 310-370 MiB with the whole-file decode; blocked, the extra decodes to
#: 7 MiB at 16 kHz and the daemon, whose allocator keeps freed buffers, grew by 50-70 MiB).
GROWTH = WHOLE_READ // 2


def write_bomb(path: Path, seconds: float) -> Path:
    """Silence of ``seconds`` x 8 channels at 655,350 Hz as FLAC (about 5.7 kB per second of it)."""
    block = np.zeros((RATE * 5, CHANNELS), np.int16)
    with soundfile.SoundFile(str(path), "w", RATE, CHANNELS, subtype="PCM_16", format="FLAC") as sound:
        for _ in range(int(seconds // 5)):
            sound.write(block)
        sound.write(block[: int(RATE * (seconds % 5))])
    return path


@pytest.fixture(scope="module")
def bombs(tmp_path_factory, homesounds) -> dict[str, Path]:
    """The bomb, and a `SMALL_SECONDS` file of the same shape (what a door costs without the bomb), each in its own
    folder beside two real recordings (adapt reads folders, contrasts a file only with another file, and aligns
    windows that differ)."""
    root = tmp_path_factory.mktemp("bomb")
    files = {}
    for name, seconds in (("big", BOMB_SECONDS), ("small", SMALL_SECONDS)):
        (root / name).mkdir()
        files[name] = write_bomb(root / name / f"{name}.flac", seconds)
        for label in ("typing", "water"):
            shutil.copy(homesounds / "audio" / label / f"{label}_A1_000.flac", root / name)
    return files


@pytest.fixture(scope="module")
def adaptable_model(small_model, tmp_path_factory) -> Path:
    """The small model with a training recipe that a folder of three files can run (batches of 2, nothing held
    out): adapt continues with the model's own recipe."""
    from encoder.model_file import load_model, save_model, with_metadata
    from encoder.train import TrainConfig

    recipe = TrainConfig(batch_size=2, validation_fraction=0.0).to_dict()
    path = tmp_path_factory.mktemp("adaptable") / "small.pt"
    save_model(with_metadata(load_model(small_model), training={"config": recipe}), path)
    return path


def peak_rss_of(command: list[str], timeout: float = 600) -> tuple[int, subprocess.CompletedProcess]:
    """Run ``command`` alone under a wrapper and return its peak resident memory (bytes) and its result."""
    wrapper = ("import resource, subprocess, sys, json;"
               "p = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
               "print(json.dumps([resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.returncode, p.stdout[-4000:], "
               "p.stderr[-4000:]]))")
    out = subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    peak_kib, code, stdout, stderr = json.loads(out.stdout)
    return peak_kib * 1024, subprocess.CompletedProcess(command, code, stdout, stderr)


def peak_rss_bytes(pid: int) -> int:
    """Highest resident set size the process has had (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


@pytest.mark.parametrize("door", ["classify", "health", "embed", "adapt", "file microphone"])
def test_the_bomb_given_to_a_command_decodes_in_memory_that_follows_its_output_not_the_file(
        door, bombs, small_model, adaptable_model, tmp_path):
    def command(audio: Path) -> list[str]:
        name = audio.stem
        return {
            "classify": [str(ROOMTONE), "classify", "--model", str(small_model), "--no-sounds", str(audio)],
            "health": [str(ROOMTONE), "health", str(audio)],
            "embed": [str(ROOMTONE), "embed", "--model", str(small_model), str(audio), "--out",
                      str(tmp_path / f"{name}.npz")],
            "adapt": [str(ROOMTONE), "adapt", "--model", str(adaptable_model), "--audio", str(audio.parent), "--out",
                      str(tmp_path / f"{name}.pt"), "--minutes", "0.02"],
            # the daemon reads the file to its end, stores its windows and stops ("all sources ended")
            "file microphone": [str(ROOMTONE), "run", "--model", str(small_model), "--file", f"bomb={audio}", "--fast",
                                "--no-grpc", "--no-metrics", "--no-web", "--data-dir", str(tmp_path / name)],
        }[door]

    small, small_result = peak_rss_of(command(bombs["small"]))
    big, big_result = peak_rss_of(command(bombs["big"]))
    for result in (small_result, big_result):
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr and "Unable to allocate" not in result.stderr
    assert big - small < GROWTH, f"{door}: peak {big >> 20} MiB with the bomb, {small >> 20} MiB with {SMALL_SECONDS} s of it"


def test_the_bomb_through_classify_addsound_and_sounds_add_keeps_the_daemon_small(
        bombs, small_model, tmp_path):
    big = bombs["big"]
    args = ["--model", str(small_model), "--demo"]
    daemon = DaemonProcess([*args, *isolated_args(tmp_path / "data")], env=dict(os.environ))
    try:
        running = daemon.wait_for("roomtone running", 120)
        channel = grpc.insecure_channel(running["grpc"])
        stub = pb_grpc.RoomtoneStub(channel)
        small = bombs["small"].read_bytes()  # every path once with the small file: what the daemon costs without the bomb
        stub.Classify(pb.ClassifyRequest(audio=small), timeout=120)
        stub.AddSound(pb.AddSoundRequest(name="small", audio=[small]), timeout=120)
        baseline = peak_rss_bytes(daemon.pid)

        reply = stub.Classify(pb.ClassifyRequest(audio=big.read_bytes()), timeout=300)
        assert len(reply.windows) == BOMB_SECONDS // 10
        sound = stub.AddSound(pb.AddSoundRequest(name="bomb", audio=[big.read_bytes()]), timeout=300)
        assert sound.examples == BOMB_SECONDS // 10
        added = subprocess.run([str(ROOMTONE), "sounds", "add", "bomb2", str(big), "--address", running["grpc"]],
                               capture_output=True, text=True, timeout=300)
        assert added.returncode == 0, added.stderr
        peak = peak_rss_bytes(daemon.pid)
        assert peak - baseline < GROWTH, f"daemon peak {peak >> 20} MiB, {baseline >> 20} MiB before the bomb"
        channel.close()
    finally:
        code = daemon.stop()
    assert code == 0, "".join(daemon.raw[-30:])
    assert not any("Traceback" in line for line in daemon.raw)


def test_one_addsound_request_is_bounded_as_a_whole_from_the_headers(small_model, tmp_path):
    from service.analysis.uploads import MAX_UPLOAD_SAMPLES

    silence = tmp_path / "silence.flac"  # 590 s of 16 kHz silence: 9.4 Mi samples, under the bound alone
    with soundfile.SoundFile(str(silence), "w", 16000, 1, subtype="PCM_16", format="FLAC") as sound:
        for _ in range(59):
            sound.write(np.zeros(160000, np.int16))
    copies = MAX_UPLOAD_SAMPLES // (590 * 16000) + 1
    daemon = DaemonProcess(["--model", str(small_model), "--demo", *isolated_args(tmp_path / "data")],
                           env=dict(os.environ))
    try:
        running = daemon.wait_for("roomtone running", 120)
        channel = grpc.insecure_channel(running["grpc"], options=[("grpc.max_send_message_length", 64 << 20)])
        stub = pb_grpc.RoomtoneStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.AddSound(pb.AddSoundRequest(name="quiet", audio=[silence.read_bytes()] * copies), timeout=60)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # refused from the headers, before anything was decoded
        assert f"the {copies} audio file(s) of this request decode to" in refused.value.details()
        channel.close()
    finally:
        assert daemon.stop() == 0
