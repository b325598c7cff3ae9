"""Helpers for the daemon tests: a small real model (random encoder weights, a head fitted on real clips)
so tests do not depend on the trained bundled model, the daemon's own gRPC backend around it, and audio
writers. Test doubles are production code with switches at the edges, never a re-implementation."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

from encoder.features import LogMelConfig
from encoder.head import fit_head
from encoder.model import Encoder, EncoderConfig
from encoder.model_file import ModelBundle, load_model, save_model
from service.analysis.analyser import Analyser
from service.api.service_backend import BackendUnavailable
from service.api.daemon_backend import DaemonBackend
from service.records import MicStatus, WindowResult

HEAD_CLASSES = ("water", "typing", "speech")
REPO = Path(__file__).resolve().parents[2]
ROOMTONE = Path(sys.executable).parent / "roomtone"


def tiny_bundle(clips: dict[str, list[Path]], embedding_dim: int = 32, seed: int = 0) -> ModelBundle:
    """A real ModelBundle: a small random-weight encoder (width 4, deterministic for a seed) and an activity
    head fitted on the first window of each clip, embedded the way the daemon embeds an upload of it."""
    torch.manual_seed(seed)
    config = EncoderConfig(width=4, blocks=(1, 1), embedding_dim=embedding_dim)
    bundle = ModelBundle(Encoder(config).eval(), LogMelConfig(), config, None, {"purpose": "tests"})
    analyser = Analyser(bundle)
    labels = [label for label, paths in clips.items() for _ in paths]
    embeddings = np.stack([analyser.embed_audio_bytes(path.read_bytes())[0] for paths in clips.values() for path in paths])
    return ModelBundle(bundle.encoder, bundle.feature_config, config, fit_head(embeddings, labels).to_dict(), bundle.metadata)


def small_model_file(path: Path, homesounds: Path, with_head: bool = True) -> Path:
    """Write a tiny roomtone model file (width-4 encoder, 32-d embedding, head on HEAD_CLASSES) to ``path``."""
    clips = {label: [homesounds / "audio" / label / f"{label}_A1_00{i}.flac" for i in range(3)] for label in HEAD_CLASSES}
    bundle = tiny_bundle(clips)
    if not with_head:
        bundle = ModelBundle(bundle.encoder, bundle.feature_config, bundle.encoder_config, None, bundle.metadata)
    save_model(bundle, path)
    load_model(path)  # the file must load back
    return with_graph(path)


_GRAPHS: dict[str, bytes] = {}  # model sha256 -> its ONNX graph: the tiny model is deterministic, export it once


def with_graph(model: Path) -> Path:
    """Write the ONNX graph beside ``model`` (the daemon's default backend on the CPU serves from it) and
    return ``model``; a model file already exported in this process gets a copy of that graph."""
    from encoder.file_digest import file_sha256
    from encoder.onnx_export import export_graph
    from encoder.onnx_graph import graph_path_for

    sha = file_sha256(model)
    if sha in _GRAPHS:
        graph_path_for(model).write_bytes(_GRAPHS[sha])
    else:
        _GRAPHS[sha] = export_graph(model)[0].read_bytes()
    return model


class SwitchableBackend(DaemonBackend):
    """The daemon's own gRPC backend with two switches at the edge, for the error-mapping tests: ``ready``
    False answers like a daemon whose model is not loaded yet; ``failure`` is raised by every call."""

    ready: bool = True
    failure: Exception | None = None

    def _check(self) -> None:
        if self.failure is not None:
            raise self.failure
        if not self.ready:
            raise BackendUnavailable("model not loaded yet")

    def microphones(self) -> list[MicStatus]:
        self._check()
        return super().microphones()

    def analyse_audio(self, data: bytes) -> list[WindowResult]:
        self._check()
        return super().analyse_audio(data)

    def embed_audio_bytes(self, data: bytes) -> np.ndarray:
        self._check()
        return super().embed_audio_bytes(data)


def tiny_backend(prototypes: dict[str, Path], mics: list[MicStatus], embedding_dim: int = 64) -> SwitchableBackend:
    """A SwitchableBackend over a tiny model whose head was fitted on ``prototypes`` (label -> clip), so the
    label of a prototype's own audio is known exactly; ``mics`` is what ListMicrophones reports."""
    bundle = tiny_bundle({label: [path] for label, path in prototypes.items()}, embedding_dim)
    return SwitchableBackend(Analyser(bundle), status=lambda: list(mics))


def file_daemon_config(model: Path, data_dir: Path, mic_id: str, path: Path, **sections):
    """An in-process daemon's config: one fast file microphone, every listener on a free loopback port
    (gRPC, /metrics, the web page), ``sections`` (e.g. ``grpc={"address": ...}``) merged over that."""
    from service.config import load_config

    overrides = {"model": str(model), "data_dir": str(data_dir),
                 "mics": [{"id": mic_id, "kind": "file", "path": str(path), "realtime": False}],
                 "grpc": {"address": "127.0.0.1:0"}, "metrics": {"port": 0}, "web": {"port": 0}}
    for section, values in sections.items():
        overrides[section] = {**overrides.get(section, {}), **values}
    return load_config(None, overrides, environ={})


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    """Write float samples ``[channels, n]`` (or [n]) as 16-bit PCM WAV."""
    samples = np.atleast_2d(samples)
    soundfile.write(str(path), np.clip(samples.T, -1, 1), rate, subtype="PCM_16")
    return path


def wav_bytes(samples: np.ndarray, rate: int = 16000) -> bytes:
    """Float samples ``[channels, n]`` as the bytes of a 32-bit float WAV file (what an upload sends)."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.atleast_2d(samples).T, rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def clipped(samples: np.ndarray, gain: float = 20.0) -> np.ndarray:
    """A hard-clipped (overdriven) copy of ``samples``."""
    return np.clip(samples * gain, -1.0, 1.0)


def hummed(samples: np.ndarray, rate: int = 16000, level: float = 0.3) -> np.ndarray:
    """``samples`` with strong 50 Hz mains hum (and harmonics) added."""
    t = np.arange(samples.shape[-1]) / rate
    hum = sum(level / k * np.sin(2 * np.pi * 50 * k * t) for k in (1, 2, 3))
    return (samples + hum).astype(np.float32)


# --- a real PulseAudio server with a null sink whose monitor is the default input ---------------------

import os
import shutil
import subprocess
import time as _time

import contextlib

import pytest

NULL_SINK = "virt"


def _pactl(*args: str, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=timeout)


def _server_up() -> bool:
    try:
        return _pactl("info", timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def start_pulseaudio() -> str | None:
    """Start (or reuse) a PulseAudio server, load the null sink ``virt`` once, make its monitor the default
    input and the sink the default output; returns why that was impossible, or None."""
    for tool in ("pulseaudio", "pactl", "paplay"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package pulseaudio / pulseaudio-utils)"
    if not _server_up():
        attempts = [["pulseaudio", "--start", "--exit-idle-time=-1"],
                    ["pulseaudio", "-D", "--exit-idle-time=-1", "--disallow-exit"],
                    ["pulseaudio", "--system", "-D", "--disallow-exit", "--disallow-module-loading=0"]]
        errors = []
        for command in attempts:
            result = subprocess.run(command, capture_output=True, text=True, timeout=30)
            deadline = _time.monotonic() + 10
            while _time.monotonic() < deadline and not _server_up():
                _time.sleep(0.2)
            if _server_up():
                break
            errors.append(f"{' '.join(command)}: rc={result.returncode} {result.stderr.strip()[-300:]}")
        else:
            return "PulseAudio could not be started: " + " | ".join(errors)
    sinks = _pactl("list", "short", "sinks").stdout
    if not any(line.split("\t")[1:2] == [NULL_SINK] for line in sinks.splitlines()):
        loaded = _pactl("load-module", "module-null-sink", f"sink_name={NULL_SINK}")
        if loaded.returncode != 0:
            return f"cannot load module-null-sink: {loaded.stderr.strip()}"
    for args in (("set-default-source", f"{NULL_SINK}.monitor"), ("set-default-sink", NULL_SINK)):
        result = _pactl(*args)
        if result.returncode != 0:
            return f"pactl {' '.join(args)} failed: {result.stderr.strip()}"
    return None


def _default(kind: str) -> str:
    """The server's default ``sink`` or ``source`` ("" when there is no server or it does not answer)."""
    try:
        return _pactl(f"get-default-{kind}", timeout=5).stdout.strip() if _server_up() else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _null_sink_modules(sink: str) -> list[str]:
    """Index of every loaded module-null-sink that made ``sink``."""
    modules = _pactl("list", "short", "modules").stdout.splitlines() if _server_up() else []
    return [line.split("\t")[0] for line in modules
            if line.split("\t")[1:2] == ["module-null-sink"] and f"sink_name={sink}" in line]


@contextlib.contextmanager
def restored_pulseaudio(sink: str):
    """Leave the server as it was found when the ``with`` ends: the null sink ``sink`` unloaded if it was not
    there before, the default sink and source put back. A leftover sink breaks other captures, and on a
    desktop it would leave the default microphone pointing at nothing."""
    defaults = {kind: _default(kind) for kind in ("sink", "source")}
    had_sink = bool(_null_sink_modules(sink))
    try:
        yield
    finally:
        if _server_up():
            if not had_sink:
                for module in _null_sink_modules(sink):
                    _pactl("unload-module", module)
            for kind, name in defaults.items():
                if name and name not in (sink, f"{sink}.monitor"):
                    _pactl(f"set-default-{kind}", name)


@contextlib.contextmanager
def pulseaudio_scope():
    """`start_pulseaudio` for the length of a ``with`` (yields its reason or None), then the server as it was
    found (`restored_pulseaudio` of the null sink ``virt``)."""
    with restored_pulseaudio(NULL_SINK):
        yield start_pulseaudio()


@contextlib.contextmanager
def null_sink_scope(sink: str):
    """A further null sink ``sink`` on a running server for the length of a ``with`` (loaded when missing),
    then the server as it was found (`restored_pulseaudio`)."""
    with restored_pulseaudio(sink):
        if not _null_sink_modules(sink):
            loaded = _pactl("load-module", "module-null-sink", f"sink_name={sink}")
            if loaded.returncode != 0:
                raise OSError(f"cannot load module-null-sink sink_name={sink}: {loaded.stderr.strip()}")
        yield sink


@pytest.fixture(scope="session")
def pulseaudio():
    """A running PulseAudio whose default input hears what is played into the sink ``virt``; the server is
    put back as it was at the end of the session.

    Skips with the reason when PulseAudio cannot be started, except under CI=true, where that fails."""
    with pulseaudio_scope() as reason:
        if reason:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"CI needs PulseAudio for the capture tests: {reason}")
            pytest.skip(reason)
        yield NULL_SINK


def play(path: Path, sink: str = NULL_SINK) -> subprocess.Popen:
    """Start ``paplay`` of a file into ``sink`` (returns at once)."""
    return subprocess.Popen(["paplay", "-d", sink, str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class DaemonProcess:
    """`roomtone run ARGS` in a subprocess; its JSON log lines are collected as they come."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, preexec_fn=None,
                 command: tuple[str, ...] = (str(ROOMTONE), "run")) -> None:
        self.lines: list[dict] = []
        self.raw: list[str] = []
        self.proc = subprocess.Popen([*command, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.raw.append(line)
            try:
                self.lines.append(json.loads(line))
            except json.JSONDecodeError:
                pass

    def find(self, message: str, **fields) -> dict | None:
        """The first log entry so far with this message (and these field values), or None."""
        return next((e for e in list(self.lines)
                     if e.get("message") == message and all(e.get(k) == v for k, v in fields.items())), None)

    def wait_for(self, message: str, timeout: float, **fields) -> dict:
        """The first log entry with this message (and fields); AssertionError with the log tail when it does not come."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.find(message, **fields)
            if entry is not None:
                return entry
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no log line {message!r} {fields} within {timeout} s; log:\n" + "".join(self.raw[-30:]))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit code; a daemon still running after ``timeout`` is killed and the failure
        carries its log tail (what it was doing), so a slow stop never leaks a process or hides its cause."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"the daemon did not stop within {timeout:g} s of SIGTERM; log:\n"
                                 + "".join(self.raw[-30:])) from None
        finally:
            self._reader.join(5)

    def kill(self) -> None:
        """SIGKILL (no clean-up of any kind), then reap."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(5)


def isolated_args(data_dir: Path) -> list[str]:
    """Options that keep a test daemon off the default ports and data dir."""
    return ["--data-dir", str(data_dir), "--grpc-address", "127.0.0.1:0", "--metrics-port", "0", "--web-port", "0"]
