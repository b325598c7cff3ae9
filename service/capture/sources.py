"""Where audio comes from: a sounddevice (PortAudio) input, an audio file (paced at real time or as fast as
the pipeline takes it), and the demo source, the bundled recording looped when no input device exists.

Every source delivers `Chunk`s of float32 ``[channels, samples]`` to a sink callable: devices at their native
rate (windowing resamples to the model's), files already at the model's rate when the daemon asks (resampled
block by block as they are decoded, so a file at 655 kHz never fills a window buffer at 655 kHz). Sources run on their own thread (PortAudio's callback
thread for devices) and never block a realtime producer on a slow pipeline: the sink decides.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import soundfile

from encoder.audio import BLOCK_SAMPLES, AudioError, BlockDecoder
from service.config import DEMO_CLIP, MicConfig
from service.daemon_vocabulary import REOPENING, RUNNING, STARTING, STOPPED

log = logging.getLogger("roomtone.sources")


#: Most channels a file microphone may have (as a device microphone's `channels`).
MAX_FILE_CHANNELS = 32
#: Seconds of the file a fast (not realtime) file source decodes per read and hands on as one chunk: a window's
#: worth, and at most the decoder's `BLOCK_SAMPLES`.
FAST_READ_S = 10.0


class SourceError(RuntimeError):
    """A source that cannot be opened or read; the message names the microphone and the device/file."""


@dataclass(frozen=True)
class Chunk:
    """A block of captured audio of one microphone."""

    mic_id: str
    samples: np.ndarray  # float32 [channels, n] at sample_rate; empty with end_of_stream
    sample_rate: int
    start_unix: float  # wall-clock time of the first sample (synthetic for fast file sources)
    end_of_stream: bool = False  # the source has no more audio (a file source without loop)


#: Where a source hands its chunks; returns False when the chunk was dropped.
Sink = Callable[[Chunk], bool]


class Source(Protocol):
    """What the pipeline needs from any source."""

    mic_id: str
    description: str  # for logs and ListMicrophones: device name or file path
    sample_rate: int  # native rate of the delivered chunks
    channels: int
    realtime: bool  # timestamps are wall-clock and the producer must never block
    overruns: int  # PortAudio input overflows seen
    errors: int  # failures (device lost, stalled, reopen attempts)

    @property
    def state(self) -> str:
        """Capture state, one of service.records.MIC_STATES."""
        ...

    def start(self, sink: Sink) -> None:
        """Begin delivering chunks to ``sink``; SourceError when the device or file refuses."""
        ...

    def stop(self) -> None:
        """Stop delivering and release the device or file."""
        ...


def input_devices() -> list[dict]:
    """The PortAudio input devices (empty when PortAudio or any input is missing)."""
    try:
        import sounddevice
    except OSError:  # libportaudio missing
        return []
    try:
        return [d for d in sounddevice.query_devices() if d["max_input_channels"] > 0]
    except sounddevice.PortAudioError:
        return []


#: PortAudio device names that are the sound server's choice rather than a sound card.
SOUND_SERVER_NAMES = ("default", "pulse", "pipewire", "sysdefault")


def pulseaudio_default_source(run=None, environ=None) -> str | None:
    """The PulseAudio (or PipeWire-Pulse) source a new capture stream opens: ``PULSE_SOURCE`` when the
    environment sets it (libpulse reads it for every stream), else the server's default source, e.g.
    ``alsa_input.usb-...`` (None without one)."""
    import shutil
    import subprocess

    chosen = (os.environ if environ is None else environ).get("PULSE_SOURCE")
    if chosen:
        return f"{chosen} (PULSE_SOURCE)"

    if run is None:
        if shutil.which("pactl") is None:
            return None
        run = lambda: subprocess.run(["pactl", "get-default-source"], capture_output=True, text=True, timeout=3)
    try:
        result = run()
    except (OSError, subprocess.SubprocessError):
        return None
    name = result.stdout.strip()
    return name if result.returncode == 0 and name else None


def input_behind(name: str, host_api: str, pulse_source: Callable[[], str | None] = pulseaudio_default_source) -> str:
    """What a PortAudio input device really records from, in words for the start-up log: the PulseAudio
    source behind ``default``/``pulse``, or the ALSA card of a ``hw:`` device."""
    if name in SOUND_SERVER_NAMES:
        source = pulse_source()
        return f"PulseAudio source {source}" if source else f"{host_api} {name} device (no PulseAudio source found)"
    if "(hw:" in name:
        return f"ALSA device {name[name.index('(hw:') + 1:].rstrip(')')} ({name[:name.index('(hw:')].strip()})"
    return f"{host_api} device {name}"


def default_input_device() -> dict | None:
    """The default PortAudio input device, or None when there is none."""
    try:
        import sounddevice
        return dict(sounddevice.query_devices(kind="input"))
    except (OSError, ValueError, Exception):  # sounddevice raises PortAudioError/ValueError for "no device"
        return None


class FileSource:
    """Reads an audio file in blocks through encoder.audio's `BlockDecoder` (the decode every door shares),
    resampled to ``sample_rate`` as it is read when one is given, so windowing never buffers the file's native
    rate; ``realtime`` paces it at the recording's speed in ``block_s`` chunks (else it hands on `FAST_READ_S`
    chunks as fast as the sink takes them), ``loop`` repeats it."""

    def __init__(self, mic_id: str, path: str | Path, *, realtime: bool = True, loop: bool = False,
                 block_s: float = 0.1, sample_rate: int | None = None) -> None:
        self.mic_id = mic_id
        self.path = Path(path)
        self._target_rate = sample_rate
        with self._decoder(None) as decoder:
            if decoder.frames == 0:
                raise SourceError(f"mic {mic_id}: audio file {self.path} has no samples")
            if decoder.source_channels > MAX_FILE_CHANNELS:
                raise SourceError(f"mic {mic_id}: audio file {self.path} has {decoder.source_channels} channels; a "
                                  f"microphone has at most {MAX_FILE_CHANNELS}")
            self.file_rate = decoder.source_rate
            self.sample_rate = decoder.sample_rate  # of the delivered chunks
            self.channels = decoder.channels
        self.description = str(self.path)
        self.realtime = realtime
        self.loop = loop
        self.block = max(1, int(round(block_s * self.file_rate)))
        self.overruns = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _decoder(self, block_frames: int | None) -> BlockDecoder:
        try:
            return BlockDecoder(self.path, self._target_rate, name=str(self.path), block_frames=block_frames)
        except AudioError as exc:
            raise SourceError(f"mic {self.mic_id}: cannot open audio file {self.path} "
                              f"({str(exc).removeprefix(str(self.path) + ': ')})") from None

    @property
    def state(self) -> str:
        """starting, running or stopped (end of file or stopped)."""
        if self._thread is None:
            return STARTING
        return RUNNING if self._thread.is_alive() else STOPPED

    def start(self, sink: Sink) -> None:
        """Start reading on a background thread."""
        self._thread = threading.Thread(target=self._run, args=(sink,), name=f"source-{self.mic_id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop reading (returns once the reader thread has ended)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self, sink: Sink) -> None:
        t0 = time.time()
        sent = 0  # samples delivered at sample_rate: stamps the chunks and paces realtime delivery
        # Each soundfile read costs ~0.2 ms of checks and seeks whatever its length. A realtime source decodes
        # about a second per read and hands it on in blocks, each once it "has been recorded"; a fast one
        # decodes FAST_READ_S per read and hands on each read whole (no pacing to keep, and every chunk costs
        # a queue hand-over and a windowing step).
        if self.realtime:
            read_frames = self.block * max(1, round(self.file_rate / self.block))
        else:
            read_frames = max(1, min(round(FAST_READ_S * self.file_rate), BLOCK_SAMPLES // self.channels))
        chunk = max(1, round(self.block * self.sample_rate / self.file_rate))  # a block at sample_rate
        try:
            with self._decoder(read_frames) as decoder:
                while not self._stop.is_set():
                    samples, consumed = decoder.read()
                    if consumed == 0 and samples.shape[1] == 0:
                        if not self.loop:
                            break
                        decoder.rewind()
                        continue
                    for block in self._pieces(samples, chunk):
                        if self.realtime:  # deliver a block once it "has been recorded"
                            delay = t0 + (sent + block.shape[1]) / self.sample_rate - time.time()
                            if delay > 0 and self._stop.wait(delay):
                                return self._end(sink, t0, sent)
                        sink(Chunk(self.mic_id, block, self.sample_rate, t0 + sent / self.sample_rate))
                        sent += block.shape[1]
        except (SourceError, soundfile.LibsndfileError, RuntimeError) as exc:
            self.errors += 1
            log.error("source failed", extra={"mic": self.mic_id, "file": str(self.path), "error": str(exc)})
        self._end(sink, t0, sent)

    def _pieces(self, samples: np.ndarray, chunk: int) -> list[np.ndarray]:
        """What one decoded read is handed on as: ``chunk``-sample blocks at real time, else the read whole."""
        if not self.realtime:
            return [samples] if samples.shape[1] else []
        return [samples[:, start:start + chunk] for start in range(0, samples.shape[1], chunk)]

    def _end(self, sink: Sink, t0: float, sent: int) -> None:
        """Hand on the end-of-stream marker after ``sent`` samples."""
        sink(Chunk(self.mic_id, np.zeros((self.channels, 0), np.float32), self.sample_rate,
                   t0 + sent / self.sample_rate, end_of_stream=True))


class DeviceSource:
    """A PortAudio input stream at the device's native rate; reopens the device when it stalls or fails."""

    STALL_S = 5.0  # no callback for this long while running = stalled

    def __init__(self, mic_id: str, device: str | int | None = None, *, channels: int = 1,
                 block_s: float = 0.1) -> None:
        import sounddevice

        self.mic_id = mic_id
        self.device = device
        try:
            info = sounddevice.query_devices(device, kind="input")
        except (ValueError, sounddevice.PortAudioError) as exc:
            names = [d["name"] for d in input_devices()]
            raise SourceError(f"mic {mic_id}: no input device {device!r} ({exc}); input devices: {names}") from None
        if info["max_input_channels"] < channels:
            raise SourceError(f"mic {mic_id}: device {info['name']!r} has {info['max_input_channels']} input "
                              f"channel(s), {channels} requested")
        self.description = str(info["name"])
        self.input = input_behind(self.description, sounddevice.query_hostapis(info["hostapi"])["name"])
        self.sample_rate = int(info["default_samplerate"])
        self.channels = channels
        self.realtime = True
        self.block = max(1, int(round(block_s * self.sample_rate)))
        self.overruns = 0
        self.errors = 0
        self._stream = None
        self._last_callback = 0.0
        self._opened_at: float | None = None  # set at each open until the first audio arrives
        self._reopening = False  # a stall was seen and no audio has arrived since
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._sink: Sink | None = None

    def _callback(self, indata, frames, time_info, status) -> None:  # PortAudio thread: stay short
        now = time.time()
        self._last_callback = now
        self._reopening = False  # audio flows (again)
        if self._opened_at is not None:  # once per open: the sound server takes ~2 s to deliver (docs/daemon.md)
            opened, self._opened_at = self._opened_at, None
            log.info("capture delivering audio", extra={"mic": self.mic_id, "seconds_after_open": round(now - opened, 2)})
        if status.input_overflow:
            self.overruns += 1
        samples = np.array(indata.T, dtype=np.float32, copy=True)  # PortAudio reuses indata after we return
        if self._sink is not None:
            self._sink(Chunk(self.mic_id, samples, self.sample_rate, now - frames / self.sample_rate))

    def _open(self) -> None:
        import sounddevice

        stream = sounddevice.InputStream(
            device=self.device, channels=self.channels, samplerate=self.sample_rate, blocksize=self.block,
            dtype="float32", callback=self._callback,
        )
        self._last_callback = self._opened_at = time.time()  # a fresh stream gets STALL_S for its first block
        stream.start()
        self._stream = stream

    def _close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.abort()
                stream.close()
            except Exception:  # a lost device may fail to close; nothing more to do
                pass

    @property
    def state(self) -> str:
        """starting, running, reopening (stalled or lost) or stopped."""
        if self._stop.is_set():
            return STOPPED
        if self._watchdog is None:
            return STARTING
        stream = self._stream
        return RUNNING if stream is not None and stream.active and not self._reopening else REOPENING

    def start(self, sink: Sink) -> None:
        """Open the input stream; SourceError when the device refuses."""
        import sounddevice

        self._sink = sink
        try:
            self._open()
        except sounddevice.PortAudioError as exc:
            raise SourceError(f"mic {self.mic_id}: cannot open input {self.description!r} ({exc})") from None
        self._watchdog = threading.Thread(target=self._watch, name=f"watchdog-{self.mic_id}", daemon=True)
        self._watchdog.start()

    def _watch(self) -> None:
        """Reopen a stream that stalled or stopped (device unplugged, server restarted), with back-off."""
        backoff = 1.0
        while not self._stop.wait(1.0):
            stream = self._stream
            healthy = stream is not None and stream.active and time.time() - self._last_callback < self.STALL_S
            if healthy:
                backoff = 1.0
                continue
            self.errors += 1
            self._reopening = True
            log.warning("input stalled or lost; reopening", extra={"mic": self.mic_id, "device": self.description,
                                                                    "errors": self.errors})
            self._close()
            try:
                self._open()
            except Exception as exc:
                log.error("reopen failed", extra={"mic": self.mic_id, "device": self.description, "error": str(exc)})
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def stop(self) -> None:
        """Stop capturing and close the device."""
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=5)
        self._close()


def demo_source(mic_id: str, block_s: float = 0.1, sample_rate: int | None = None) -> FileSource:
    """The bundled demo recording, looped at real time."""
    source = FileSource(mic_id, DEMO_CLIP, realtime=True, loop=True, block_s=block_s, sample_rate=sample_rate)
    source.description = f"demo:{DEMO_CLIP.name}"
    return source


def open_source(mic: MicConfig, sample_rate: int | None = None) -> Source:
    """The source a microphone's config asks for; ``auto`` = default input, else the demo (logged). File sources
    deliver at ``sample_rate`` (the model's) when given, devices at their native rate."""
    if mic.kind == "file":
        return FileSource(mic.id, mic.path, realtime=mic.realtime, loop=mic.loop, block_s=mic.block_s,
                          sample_rate=sample_rate)
    if mic.kind == "demo":
        return demo_source(mic.id, mic.block_s, sample_rate)
    if mic.kind == "device" or (mic.kind == "auto" and mic.device is not None):
        return DeviceSource(mic.id, mic.device, channels=mic.channels, block_s=mic.block_s)
    default = default_input_device()
    problem = "no audio input device found" if default is None else usable_problem(default, mic.channels)
    if problem:
        log.warning(f"{problem}; using the bundled demo recording, looped",
                    extra={"mic": mic.id, "file": str(DEMO_CLIP)})
        return demo_source(mic.id, mic.block_s, sample_rate)
    return DeviceSource(mic.id, None, channels=mic.channels, block_s=mic.block_s)


def usable_problem(device: dict, channels: int) -> str | None:
    """Why PortAudio would refuse to record ``channels`` from ``device`` at its native rate (None if it would not)."""
    import sounddevice

    try:
        sounddevice.check_input_settings(device=device["index"], channels=channels,
                                         samplerate=device["default_samplerate"], dtype="float32")
    except (sounddevice.PortAudioError, ValueError) as exc:
        return f"the default input {device['name']!r} cannot record ({exc})"
    return None
