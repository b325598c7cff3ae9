"""Specification of audio decoding (encoder/audio.py): channels kept, resampled, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from encoder.audio import AudioError, decode_audio, decode_samples, load_audio, to_mono


def write(path, data, rate=16000, **kwargs):
    soundfile.write(str(path), data, rate, **kwargs)
    return path


def test_a_shared_flac_clip_loads_as_one_channel_of_ten_seconds(homesounds):
    waveform, rate = load_audio(homesounds / "audio" / "speech" / "speech_A1_000.flac")
    assert rate == 16000
    assert tuple(waveform.shape) == (1, 160000)
    assert waveform.dtype == torch.float32


@pytest.mark.parametrize("fmt, suffix", [("WAV", ".wav"), ("FLAC", ".flac"), ("OGG", ".ogg")])
def test_four_channel_files_keep_their_channels_in_every_supported_format(tmp_path, fmt, suffix):
    data = np.random.default_rng(0).uniform(-0.5, 0.5, (8000, 4)).astype(np.float32)
    path = write(tmp_path / f"node{suffix}", data, format=fmt)
    waveform, _ = load_audio(path)
    assert tuple(waveform.shape) == (4, 8000)


def test_mono_mix_averages_the_channels(tmp_path):
    data = np.stack([np.full(1000, 0.2), np.full(1000, -0.1)], axis=1).astype(np.float32)
    waveform, _ = load_audio(write(tmp_path / "st.wav", data), mono=True)
    assert tuple(waveform.shape) == (1, 1000)
    assert torch.allclose(waveform, torch.full((1, 1000), 0.05), atol=1e-4)
    assert torch.equal(to_mono(torch.ones(3, 5)), torch.ones(1, 5))


def test_other_rates_are_resampled_to_the_target_rate(tmp_path):
    t = np.arange(44100) / 44100
    data = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    waveform, rate = load_audio(write(tmp_path / "cd.wav", data, rate=44100), 16000)
    assert rate == 16000
    assert waveform.shape[1] == 16000
    spectrum = np.abs(np.fft.rfft(waveform[0].numpy()))
    assert abs(int(spectrum.argmax()) - 440) <= 1  # 1 s -> 1 Hz per bin


def test_bytes_decode_like_files(tmp_path):
    path = write(tmp_path / "a.wav", np.zeros(1600, dtype=np.float32) + 0.1)
    from_bytes, _ = decode_audio(path.read_bytes(), 16000)
    from_file, _ = load_audio(path)
    assert torch.equal(from_bytes, from_file)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(AudioError, match=r"nothere\.wav: no such file"):
        load_audio(tmp_path / "nothere.wav")


def test_an_empty_file_is_named(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.wav: empty file"):
        load_audio(tmp_path / "empty.wav")


def test_a_truncated_file_is_reported_as_undecodable(tmp_path):
    good = write(tmp_path / "good.flac", np.zeros(16000, dtype=np.float32), format="FLAC")
    (tmp_path / "cut.flac").write_bytes(good.read_bytes()[:30])
    with pytest.raises(AudioError, match=r"cut\.flac: cannot decode"):
        load_audio(tmp_path / "cut.flac")


def test_a_large_block_gives_up_no_more_of_a_damaged_file_than_small_blocks(tmp_path):
    from encoder.audio import BlockDecoder

    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 16000 * 20).astype(np.float32)
    good = write(tmp_path / "good.flac", noise, format="FLAC")
    (tmp_path / "cut.flac").write_bytes(good.read_bytes()[: good.stat().st_size * 4 // 10])

    def decodable(block_frames: int) -> np.ndarray:
        parts = []
        with BlockDecoder(tmp_path / "cut.flac", 16000, block_frames=block_frames) as decoder:
            with pytest.raises(Exception):  # the damage itself is still reported, after the decodable part
                while True:
                    samples, consumed = decoder.read()
                    if consumed == 0 and samples.shape[1] == 0:
                        break
                    parts.append(samples)
        return np.concatenate(parts, axis=1)

    small, whole_read = decodable(1600), decodable(16000 * 20)
    assert small.shape[1] >= 16000 * 5  # several seconds decode before the cut
    assert whole_read.shape[1] >= small.shape[1] - 1600 and np.array_equal(whole_read, small[:, :whole_read.shape[1]])


def test_an_unsupported_format_says_which_formats_work(tmp_path):
    (tmp_path / "notes.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    with pytest.raises(AudioError, match="WAV, FLAC and OGG"):
        load_audio(tmp_path / "notes.mp4")


def test_zero_length_audio_is_rejected(tmp_path):
    path = write(tmp_path / "nothing.wav", np.zeros((0, 1), dtype=np.float32))
    with pytest.raises(AudioError, match=r"nothing\.wav: contains no audio samples"):
        load_audio(path)


def test_nan_samples_are_rejected(tmp_path):
    data = np.zeros(1000, dtype=np.float32)
    data[10] = np.nan
    path = write(tmp_path / "nan.wav", data, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav: contains 1 NaN/Inf samples"):
        load_audio(path)


def test_a_directory_is_not_audio(tmp_path):
    with pytest.raises(AudioError, match="is a directory"):
        load_audio(tmp_path)


@pytest.mark.parametrize("rate", [44_101, 11_127, 655_350])
def test_files_at_odd_rates_decode_at_the_model_rate(tmp_path, rate):
    data = np.random.default_rng(0).uniform(-0.5, 0.5, (rate // 2, 2)).astype(np.float32)
    waveform, out_rate = load_audio(write(tmp_path / f"odd{rate}.flac", data, rate=rate, format="FLAC"), 16000)
    assert out_rate == 16000 and tuple(waveform.shape) == (2, 8000)


def test_a_decoded_size_above_the_bound_is_refused_from_the_header_before_decoding(tmp_path):
    from encoder.audio import AudioTooLarge

    path = write(tmp_path / "long.flac", np.zeros((48_000, 8), np.float32), rate=48_000, format="FLAC")
    with pytest.raises(AudioTooLarge, match=r"long\.flac: 1\.0 s x 8 channel\(s\) at 48000 Hz decodes to 128,000 "
                                            r"samples \(8 channel\(s\) at 16000 Hz\)"):
        decode_audio(path, 16000, max_samples=100_000)
    # upsampling counts too: 1 s at 8 kHz becomes 16,000 samples per channel at 16 kHz
    low = write(tmp_path / "low.wav", np.zeros((8000, 1), np.float32), rate=8000)
    with pytest.raises(AudioTooLarge):
        decode_audio(low, 16000, max_samples=10_000)
    assert decode_audio(low, 16000, max_samples=16_000)[0].shape == (1, 16000)


def test_the_bound_counts_samples_after_mixing_to_mono_and_resampling(tmp_path):
    path = write(tmp_path / "wide.flac", np.zeros((48_000, 8), np.float32), rate=48_000, format="FLAC")
    samples, rate = decode_samples(path, 16000, mono=True, max_samples=16_000)
    assert rate == 16000 and samples.shape == (1, 16000)


def test_block_wise_decoding_equals_decoding_the_whole_file_at_once(tmp_path, monkeypatch):
    import encoder.audio
    from encoder.resampling import resample

    data = np.random.default_rng(1).uniform(-0.5, 0.5, (44_101 * 3, 2)).astype(np.float32)
    path = write(tmp_path / "odd.wav", data, rate=44_101, subtype="FLOAT")
    monkeypatch.setattr(encoder.audio, "BLOCK_SAMPLES", 10_000)  # many blocks, the filter carried across them
    blocks, _ = decode_samples(path, 16000, mono=True)
    whole = resample(data.mean(axis=1), 44_101, 16000)
    assert blocks.shape == (1, whole.shape[0])
    assert np.abs(blocks[0] - whole).max() < 1e-4


def test_a_file_that_decodes_to_more_than_its_header_claims_is_stopped_at_the_bound(tmp_path, monkeypatch):
    import encoder.audio
    from encoder.audio import AudioTooLarge, BlockDecoder

    path = write(tmp_path / "a.wav", np.zeros((20_000, 1), np.float32))
    monkeypatch.setattr(BlockDecoder, "decoded_size", lambda self: 10)
    monkeypatch.setattr(encoder.audio, "check_decoded_size", lambda *a, **k: 10)  # a header that lies
    monkeypatch.setattr(encoder.audio, "BLOCK_SAMPLES", 4_000)
    with pytest.raises(AudioTooLarge, match="decodes to more than 15,000 samples"):
        decode_samples(path, 16000, max_samples=15_000)


def test_a_fifo_or_a_device_is_refused_as_not_a_regular_file(tmp_path):
    import os

    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    with pytest.raises(AudioError, match=r"pipe\.wav: is a FIFO, not a regular audio file"):
        load_audio(fifo)
    with pytest.raises(AudioError, match=r"/dev/zero: is a device, not a regular audio file"):
        load_audio("/dev/zero")


def test_a_file_rate_outside_the_supported_range_is_named(tmp_path):
    path = write(tmp_path / "fast.wav", np.zeros((10, 1), np.float32), rate=1_000_000)
    with pytest.raises(AudioError, match=r"fast\.wav: sample rate 1000000 Hz is not supported"):
        load_audio(path)


@pytest.mark.parametrize("mono", [True, False])
def test_peak_memory_of_a_decode_follows_its_output_not_the_file(tmp_path, mono):
    """The shape of issue 26's bomb (8 channels at 655,350 Hz), 4 s of it: read whole it takes 84 MB as float32
    (and as much again transposed); decoded block by block to 16 kHz it needs its output (2 MB with its
    channels, 256 kB mixed) plus one block of 4 MiB."""
    import tracemalloc

    rate, channels, seconds = 655_350, 8, 4
    path = tmp_path / "bomb.flac"
    with soundfile.SoundFile(str(path), "w", rate, channels, subtype="PCM_16", format="FLAC") as sound:
        for _ in range(seconds):
            sound.write(np.zeros((rate, channels), np.int16))
    tracemalloc.start()
    try:
        samples, out_rate = decode_samples(path, 16000, mono=mono)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out_rate == 16000 and samples.shape == (1 if mono else channels, seconds * 16000)
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB for a file of {rate * channels * seconds * 4 / 2**20:.0f} MiB"
