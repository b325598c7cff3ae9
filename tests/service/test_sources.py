"""Sources deliver a microphone's audio as timestamped chunks: files at real time or as fast as possible,
looped or not; the default PortAudio input (here: a PulseAudio null-sink monitor); the demo recording
when the machine has no input at all."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import soundfile

from daemon_support import play, pulseaudio, write_wav  # noqa: F401 (pulseaudio is a fixture)
from encoder.audio import BlockDecoder, load_audio
from encoder.resampling import resample
from encoder.windows import WindowSpec
from service.config import DEMO_CLIP, MicConfig
from service.capture.sources import Chunk, DeviceSource, FileSource, SourceError, open_source
from service.capture.windowing import Window, Windower

REPO = Path(__file__).resolve().parents[2]


class Collector:
    """A sink that keeps every chunk."""

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []
        self.ended = threading.Event()

    def __call__(self, chunk: Chunk) -> bool:
        self.chunks.append(chunk)
        if chunk.end_of_stream:
            self.ended.set()
        return True

    def audio(self) -> np.ndarray:
        return np.concatenate([c.samples for c in self.chunks], axis=1)


@pytest.fixture(scope="module")
def clip(homesounds) -> Path:
    return homesounds / "audio" / "typing" / "typing_A1_000.flac"


def test_a_fast_file_source_delivers_the_whole_file_then_an_end_marker(clip):
    sink = Collector()
    source = FileSource("f", clip, realtime=False)
    t0 = time.monotonic()
    source.start(sink)
    assert sink.ended.wait(10)
    assert time.monotonic() - t0 < 5.0  # 10 s of audio, not paced
    np.testing.assert_array_equal(sink.audio(), load_audio(clip, None)[0].numpy())
    assert sink.chunks[-1].end_of_stream and sink.chunks[-1].samples.shape[1] == 0
    assert len(sink.chunks) == 2  # the 10 s file in one read, handed on whole, then the end marker
    source.stop()
    assert source.state == "stopped"


def blocks_as_before(path: Path, t0: float) -> list[Chunk]:
    """The file as fast file sources delivered it before they handed on whole reads: a second per read, each
    read cut into 0.1 s blocks, stamped from ``t0``."""
    blocks, sent = [], 0
    with BlockDecoder(path, 16000, block_frames=soundfile.info(str(path)).samplerate) as decoder:
        while (read := decoder.read())[1] or read[0].shape[1]:
            for i in range(0, read[0].shape[1], 1600):
                blocks.append(Chunk("f", read[0][:, i:i + 1600], 16000, t0 + sent / 16000))
                sent += blocks[-1].samples.shape[1]
    return blocks


def windows_of(chunks: list[Chunk], spec: WindowSpec) -> list[Window]:
    """The windows `Windower` cuts from ``chunks`` of a fast source, the trailing one included."""
    windower = Windower("f", chunks[0].sample_rate, 16000, spec, realtime=False)
    return [w for c in chunks for w in windower.push(c)] + windower.finish()


@pytest.mark.parametrize("rate, channels", [(16000, 1), (44100, 2)])
@pytest.mark.parametrize("hop_s", [10.0, 3.0])
def test_a_fast_file_source_yields_the_windows_its_audio_in_tenth_second_blocks_would(rate, channels, hop_s,
                                                                                     homesounds, tmp_path):
    names = ["water/water_A1_000.flac", "typing/typing_A1_000.flac", "speech/speech_A1_000.flac"]
    audio = np.concatenate([load_audio(homesounds / "audio" / n)[0].numpy() for n in names], axis=1)[:, :400_000]
    audio = np.repeat(resample(audio, 16000, rate), channels, axis=0)
    path = write_wav(tmp_path / f"25s.{'flac' if rate == 16000 else 'wav'}", audio * np.linspace(1.0, 0.5, channels)[:, None], rate)
    sink = Collector()
    FileSource("f", path, realtime=False, sample_rate=16000).start(sink)
    assert sink.ended.wait(20)
    chunks = sink.chunks[:-1]
    assert len(chunks) <= 4  # whole reads of FAST_READ_S (and the resampler's tail), not 250 blocks
    spec = WindowSpec(10.0, hop_s)
    windows, before = windows_of(chunks, spec), windows_of(blocks_as_before(path, chunks[0].start_unix), spec)
    assert len(windows) == len(before) >= 2
    for window, old in zip(windows, before):
        np.testing.assert_array_equal(window.samples, old.samples)
        assert (window.start_unix, window.end_unix) == (old.start_unix, old.end_unix)


def test_a_realtime_file_source_delivers_audio_no_faster_than_it_was_recorded(clip, tmp_path):
    two_seconds = write_wav(tmp_path / "two.wav", load_audio(clip)[0].numpy()[:, :32000])
    sink = Collector()
    source = FileSource("f", two_seconds, realtime=True)
    t0 = time.monotonic()
    source.start(sink)
    assert sink.ended.wait(10)
    assert 1.9 <= time.monotonic() - t0 < 4.0
    for chunk in sink.chunks[:-1]:  # each block is handed over once its last sample "was recorded"
        assert chunk.start_unix + chunk.samples.shape[1] / 16000 <= time.time()


def test_a_looped_file_starts_again_at_its_beginning(clip, tmp_path):
    half = write_wav(tmp_path / "half.wav", load_audio(clip)[0].numpy()[:, :8000])
    sink = Collector()
    source = FileSource("f", half, realtime=False, loop=True, block_s=0.05)
    source.start(sink)
    deadline = time.monotonic() + 10
    while sum(c.samples.shape[1] for c in sink.chunks) < 20_000 and time.monotonic() < deadline:
        time.sleep(0.01)
    source.stop()
    audio = sink.audio()
    np.testing.assert_array_equal(audio[:, 8000:16000], audio[:, :8000])
    assert not any(c.end_of_stream for c in sink.chunks[:-1])


def test_an_unreadable_file_is_a_source_error_naming_mic_and_file(tmp_path):
    bad = tmp_path / "noise.wav"
    bad.write_bytes(b"RIFF not really")
    with pytest.raises(SourceError, match=r"mic kitchen: cannot open audio file .*noise\.wav"):
        FileSource("kitchen", bad)


def test_an_unknown_input_device_is_a_source_error_listing_the_devices():
    with pytest.raises(SourceError, match=r"mic hall: no input device 'no-such-card-xyz'.*input devices"):
        DeviceSource("hall", "no-such-card-xyz")


def test_without_any_input_device_the_auto_source_is_the_demo_recording_and_says_so():
    code = ("import logging, sys; logging.basicConfig(stream=sys.stdout, format='%(message)s');"
            "from service.capture.sources import open_source; from service.config import MicConfig;"
            "s = open_source(MicConfig()); print('DESC', s.description, s.loop, s.realtime)")
    # no sound card and no reachable sound server: PortAudio has no input at all
    env = {**os.environ, "PULSE_SERVER": "unix:/nonexistent"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "using the bundled demo recording, looped" in out.stdout
    assert f"DESC demo:{DEMO_CLIP.name} True True" in out.stdout


def test_the_demo_source_is_the_bundled_recording_with_its_attribution():
    assert DEMO_CLIP.is_file() and (DEMO_CLIP.parent / "ATTRIBUTION.md").is_file()
    audio, rate = load_audio(DEMO_CLIP, None)
    assert rate == 16000 and audio.shape == (1, 160_000)
    attribution = (DEMO_CLIP.parent / "ATTRIBUTION.md").read_text()
    assert "CC-BY-SA-3.0" in attribution and "Wolfire Games" in attribution


@pytest.mark.audio
def test_the_default_input_records_what_is_played_into_the_pulseaudio_sink(pulseaudio, clip, tmp_path):
    import sounddevice

    sounddevice._terminate()  # PortAudio lists devices once; the server may have started after import
    sounddevice._initialize()
    source = open_source(MicConfig(id="pa", kind="auto"))
    assert isinstance(source, DeviceSource), "the PulseAudio default input should be used, not the demo"
    signal = load_audio(clip)[0].numpy()
    player = play(write_wav(tmp_path / "twice.wav", np.concatenate([signal, signal], axis=1)))
    sink = Collector()
    try:
        time.sleep(1.0)
        source.start(sink)
        deadline = time.monotonic() + 15  # the PulseAudio ALSA plugin delivers its first block after ~2 s
        while sum(c.samples.shape[1] for c in sink.chunks) < 3.5 * source.sample_rate and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        source.stop()
        player.kill()
    recorded = resample(sink.audio(), source.sample_rate, 16000)[0]
    assert recorded.shape[0] >= 3.5 * 16000
    assert source.overruns == 0 and source.state == "stopped"
    # consecutive blocks hold different audio (PortAudio's buffer is copied, not aliased)
    blocks = [c.samples for c in sink.chunks[5:15]]
    assert all(not np.array_equal(a, b) for a, b in zip(blocks, blocks[1:]))
    # and the recording is the clip: strong normalised cross-correlation at some lag
    piece = recorded[16000:48000]
    reference = np.concatenate([signal[0], signal[0]])
    corr = scipy.signal.correlate(reference, piece, mode="valid", method="fft")
    norms = np.sqrt(scipy.signal.fftconvolve(reference ** 2, np.ones(len(piece)), mode="valid") * np.sum(piece ** 2))
    assert np.max(corr / np.maximum(norms, 1e-12)) > 0.6  # unrelated audio scores < 0.1


@pytest.mark.audio
def test_a_stalled_input_is_counted_reported_as_reopening_and_recovers(pulseaudio):
    import sounddevice

    sounddevice._terminate()
    sounddevice._initialize()
    source = open_source(MicConfig(id="pa", kind="auto"))
    assert isinstance(source, DeviceSource)
    sink = Collector()
    source.start(sink)
    try:
        deadline = time.monotonic() + 15
        while not sink.chunks and time.monotonic() < deadline:
            time.sleep(0.1)
        assert source.state == "running"
        subprocess.run(["pactl", "suspend-sink", pulseaudio, "1"], check=True, timeout=10)
        try:  # the monitor delivers nothing while its sink is suspended: the device has stalled
            deadline = time.monotonic() + 20
            while source.errors == 0 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert source.errors >= 1
            time.sleep(1.5)
            assert source.state == "reopening"
        finally:
            subprocess.run(["pactl", "suspend-sink", pulseaudio, "0"], check=True, timeout=10)
        before = len(sink.chunks)
        deadline = time.monotonic() + 20
        while len(sink.chunks) < before + 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(sink.chunks) >= before + 5 and source.state == "running"
    finally:
        source.stop()


def test_the_start_up_log_names_the_real_input_behind_a_sound_server_device() -> None:
    from service.capture.sources import input_behind

    assert input_behind("default", "ALSA", lambda: "alsa_input.usb-Blue_Yeti-00.analog-stereo") == (
        "PulseAudio source alsa_input.usb-Blue_Yeti-00.analog-stereo")
    assert input_behind("pulse", "ALSA", lambda: None) == "ALSA pulse device (no PulseAudio source found)"
    assert input_behind("USB Audio Device: - (hw:2,0)", "ALSA", lambda: "unused") == "ALSA device hw:2,0 (USB Audio Device: -)"
    assert input_behind("MacBook Microphone", "Core Audio", lambda: "unused") == "Core Audio device MacBook Microphone"


def test_the_start_up_log_names_the_source_pulse_source_selects_not_the_server_default() -> None:
    from service.capture.sources import input_behind, pulseaudio_default_source

    chosen = pulseaudio_default_source(run=lambda: pytest.fail("pactl must not be asked"),
                                       environ={"PULSE_SOURCE": "roomtone_test.monitor"})
    assert chosen == "roomtone_test.monitor (PULSE_SOURCE)"
    assert input_behind("default", "ALSA", lambda: chosen) == "PulseAudio source roomtone_test.monitor (PULSE_SOURCE)"
