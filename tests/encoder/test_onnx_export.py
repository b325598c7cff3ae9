"""Specification of the ONNX serving graph (encoder/onnx_export.py, encoder/onnx_graph.py,
encoder/onnx_embedder.py): it embeds like torch, its log-Mel is the torch definition's, its axes are
dynamic, and a graph that does not belong to the model file beside it is refused with the command that
re-exports it."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from encoder.features import LogMelConfig, frame_count, log_mel, mel_filterbank, stft_window
from encoder.file_digest import file_sha256
from encoder.head import ActivityHead
from encoder.model import Encoder, EncoderConfig
from encoder.model_file import ModelBundle, load_model, save_model, with_metadata
from encoder.onnx_embedder import OnnxEmbedder, stft_power
from encoder.onnx_export import ServingGraph, exact_log_mel, export_graph, filterbank_blocks
from encoder.onnx_graph import PREFIX, GraphError, graph_path_for

REPO = Path(__file__).resolve().parents[2]
BUNDLED_MODEL = REPO / "models" / "roomtone.pt"


@pytest.fixture(scope="module")
def bundled(tmp_path_factory) -> tuple[ModelBundle, OnnxEmbedder]:
    """The bundled model and an embedder over its graph, exported afresh for this test module."""
    graph, _ = export_graph(BUNDLED_MODEL, tmp_path_factory.mktemp("graph") / "roomtone.onnx")
    return load_model(BUNDLED_MODEL), OnnxEmbedder(graph, check_model=BUNDLED_MODEL, threads=1)


@pytest.fixture(scope="module")
def clips(homesounds) -> np.ndarray:
    """The vendored homesounds clips, ``[22, 160000]`` float32."""
    paths = [row["path"] for row in csv.DictReader(open(homesounds / "meta.csv", newline=""))]
    return np.stack([soundfile.read(homesounds / p, dtype="float32")[0] for p in paths])


def torch_embeddings(bundle: ModelBundle, windows: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return bundle.encoder(log_mel(torch.from_numpy(windows), bundle.feature_config).unsqueeze(1)).numpy()


def small_model(path: Path, seed: int = 0, pooling: str = "mean") -> Path:
    torch.manual_seed(seed)
    config = EncoderConfig(width=4, blocks=(1, 1), embedding_dim=16, pooling=pooling)
    save_model(ModelBundle(Encoder(config).eval(), LogMelConfig(), config, None, {"purpose": "tests"}), path)
    return path


# ---- equivalence with torch -------------------------------------------------------------------------


def test_the_graph_embeds_real_clips_like_torch(bundled, clips):
    bundle, embedder = bundled
    onnx = embedder.embed(list(clips))
    reference = torch_embeddings(bundle, clips)
    assert np.min(np.sum(onnx * reference, axis=1)) >= 0.9999
    assert np.abs(onnx - reference).max() <= 1e-4


def test_the_graph_gives_real_clips_the_labels_torch_gives(bundled, clips):
    bundle, embedder = bundled
    head = ActivityHead.from_dict(bundle.head)
    onnx_labels = head.predict_proba(embedder.embed(list(clips))).argmax(axis=1)
    torch_labels = head.predict_proba(torch_embeddings(bundle, clips)).argmax(axis=1)
    assert onnx_labels.tolist() == torch_labels.tolist()


def test_the_graph_log_mel_is_the_torch_definition_on_real_clips(bundled, clips):
    bundle, embedder = bundled
    _, features = embedder.embed_with_features(list(clips))
    exact = exact_log_mel(clips, bundle.feature_config)  # log_mel's own module, in float64
    assert np.abs(features - exact).max() <= 1e-3
    # torch's float32 FFT itself strays from the exact values by up to ~0.03 dB in quiet bands (320 clips)
    float32 = log_mel(torch.from_numpy(clips), bundle.feature_config).numpy()
    assert np.abs(features - float32).max() <= 5e-2
    assert np.quantile(np.abs(features - float32), 0.999) <= 1e-3


def test_the_stft_power_is_the_plain_power_of_the_float64_fft_rounded_once_to_float32(bundled, clips):
    bundle, embedder = bundled
    config, window = bundle.feature_config, embedder.info.stft_window
    for rows in (clips[:3], clips[:1, : 16000 + 123], np.zeros((1, 16000), np.float32)):
        padded = np.pad(rows, ((0, 0), (config.n_fft // 2, config.n_fft // 2)), mode="reflect")
        left = (config.n_fft - window.shape[0]) // 2
        frames = np.lib.stride_tricks.sliding_window_view(padded, window.shape[0], axis=1)[:, left::config.hop_length]
        spectrum = np.fft.rfft(frames[:, : frame_count(rows.shape[1], config)] * window.astype(np.float64),
                               n=config.n_fft, axis=2)
        plain = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
        power = stft_power(rows, config, window)
        assert power.dtype == np.float32
        np.testing.assert_array_equal(power, plain)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_the_stft_power_refuses_non_finite_samples_but_not_huge_finite_ones(bad):
    config = LogMelConfig()
    rows = np.zeros((2, 16000), np.float32)
    rows[1, 123] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        stft_power(rows, config, stft_window(config))
    huge = np.full((1, 16000), 3e38, np.float32)  # finite, though its sum overflows
    with np.errstate(over="ignore"):
        assert stft_power(huge, config, stft_window(config)).shape[0] == 1


def test_batch_and_frame_axes_are_dynamic(bundled, clips):
    bundle, embedder = bundled
    windows = [clips[0][:16000], clips[1][:40000], clips[2], clips[3][:16001], clips[4]]
    onnx = embedder.embed(windows)
    for window, embedding in zip(windows, onnx):
        assert np.abs(embedding - torch_embeddings(bundle, window[None])[0]).max() <= 1e-4
    assert embedder.embed([]).shape == (0, bundle.embedding_dim)


def test_the_graph_hands_out_the_column_map_torch_computes(bundled, clips):
    bundle, embedder = bundled
    _, columns = embedder.embed_with_columns(list(clips[:3]))
    with torch.no_grad():
        _, reference = bundle.encoder.eval().embedding_and_columns(log_mel(torch.from_numpy(clips[:3]),
                                                                            bundle.feature_config).unsqueeze(1))
    assert embedder.has_columns and embedder.column_dim == bundle.encoder.column_dim(bundle.feature_config.n_mels)
    assert np.stack(columns).shape == tuple(reference.shape) == (3, 32, embedder.column_dim)
    assert np.abs(np.stack(columns) - reference.numpy()).max() <= 1e-3 * np.abs(reference.numpy()).max()


def graph_of_version(tmp_path: Path, version: str) -> tuple[Path, Path]:
    """A small model and its graph, the graph relabelled as of ``version``."""
    import onnx

    model = small_model(tmp_path / "m.pt")
    graph, _ = export_graph(model)
    proto = onnx.load(str(graph))
    for entry in proto.metadata_props:
        if entry.key == PREFIX + "version":
            entry.value = version
    onnx.save(proto, str(graph))
    return model, graph


def test_a_version_2_graph_is_served_without_a_column_map(tmp_path):
    # its "columns" were projected columns, not the column map custom sounds match
    model, graph = graph_of_version(tmp_path, "2")
    embedder = OnnxEmbedder(graph, check_model=model)
    assert embedder.embed([np.zeros(16000, np.float32)]).shape == (1, 16)
    assert not embedder.has_columns and embedder.column_dim == 0
    with pytest.raises(GraphError) as caught:
        embedder.embed_with_columns([np.zeros(16000, np.float32)])
    assert caught.value.reason == "version"


def test_a_mean_max_pooling_model_exports_to_a_graph_that_embeds_any_length_like_torch(tmp_path, clips):
    model = small_model(tmp_path / "mm.pt", pooling="mean+max")
    graph, _ = export_graph(model, tmp_path / "mm.onnx")
    bundle, embedder = load_model(model), OnnxEmbedder(graph, check_model=model, threads=1)
    assert bundle.encoder_config.pooling == "mean+max"
    windows = [clips[0][:16000], clips[1][:40000], clips[2]]
    for window, embedding in zip(windows, embedder.embed(windows)):
        assert np.abs(embedding - torch_embeddings(bundle, window[None])[0]).max() <= 1e-4


def test_the_stft_window_and_filterbank_are_those_of_log_mel(bundled):
    import onnx
    from onnx import numpy_helper

    _, embedder = bundled
    config = embedder.feature_config
    assert np.array_equal(embedder.info.stft_window, stft_window(config))
    graph = onnx.load(str(embedder.graph_path))
    filterbank = mel_filterbank(config).numpy()
    stored = [numpy_helper.to_array(t) for t in graph.graph.initializer]
    for bin_lo, bin_hi, band_lo, band_hi in filterbank_blocks(mel_filterbank(config)):
        block = filterbank[bin_lo:bin_hi, band_lo:band_hi]
        assert any(array.shape == block.shape and np.array_equal(array, block) for array in stored)


@pytest.mark.parametrize("config", [LogMelConfig(), LogMelConfig(n_mels=64, n_fft=2048, fmin=50.0, fmax=7000.0)])
def test_the_filterbank_blocks_hold_every_non_zero_weight_and_multiply_like_the_dense_filterbank(config):
    filterbank = mel_filterbank(config)
    blocks = filterbank_blocks(filterbank)
    covered = torch.zeros_like(filterbank, dtype=torch.bool)
    for bin_lo, bin_hi, band_lo, band_hi in blocks:
        covered[bin_lo:bin_hi, band_lo:band_hi] = True
    assert [b[2] for b in blocks] + [config.n_mels] == [0] + [b[3] for b in blocks]  # the bands, in order, once
    assert not filterbank[~covered].any()
    assert covered.sum() <= 0.2 * covered.numel()  # the point of the blocks: a fraction of the dense work
    encoder_config = EncoderConfig(width=4, blocks=(1, 1), embedding_dim=16)
    graph = ServingGraph(ModelBundle(Encoder(encoder_config).eval(), config, encoder_config, None, {}))
    power = torch.rand(2, 301, config.n_fft // 2 + 1, dtype=torch.float32) ** 4
    dense = torch.matmul(power, filterbank)
    assert torch.allclose(graph.mel_power(power), dense, rtol=1e-5, atol=1e-12)


def test_the_graph_carries_the_head_and_feature_config_of_the_model(bundled):
    bundle, embedder = bundled
    assert embedder.info.head == bundle.head
    assert embedder.info.feature_config == bundle.feature_config
    assert embedder.info.model_sha256 == file_sha256(BUNDLED_MODEL)


def test_the_bundled_graph_was_exported_from_the_bundled_model():
    embedder = OnnxEmbedder(graph_path_for(BUNDLED_MODEL), check_model=BUNDLED_MODEL)
    assert embedder.embedding_dim == load_model(BUNDLED_MODEL).embedding_dim


# ---- refusing graphs that do not belong to the model file ---------------------------------------------


def test_a_graph_of_a_changed_model_file_is_refused_with_the_command_that_re_exports_it(tmp_path):
    from service.cli.main import main

    model = small_model(tmp_path / "m.pt")
    assert main(["export", "--model", str(model)]) == 0
    OnnxEmbedder(tmp_path / "m.onnx", check_model=model)  # fresh: accepted
    save_model(with_metadata(load_model(model), note="retrained"), model)
    with pytest.raises(GraphError, match=f"roomtone export --model {model}") as caught:
        OnnxEmbedder(tmp_path / "m.onnx", check_model=model)
    assert caught.value.reason == "stale"
    assert main(["export", "--model", str(model)]) == 0
    OnnxEmbedder(tmp_path / "m.onnx", check_model=model)


def test_a_graph_of_another_version_is_refused(tmp_path):
    model, graph = graph_of_version(tmp_path, "999")
    with pytest.raises(GraphError, match="version 999") as caught:
        OnnxEmbedder(graph, check_model=model)
    assert caught.value.reason == "version"


def test_exporting_a_missing_model_file_fails_naming_it(tmp_path, capsys):
    from service.cli.main import main

    assert main(["export", "--model", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt: model file not found" in capsys.readouterr().err
    assert not (tmp_path / "nope.onnx").exists()


def test_a_missing_graph_names_the_export_command(tmp_path):
    model = small_model(tmp_path / "m.pt")
    with pytest.raises(GraphError, match=f"roomtone export --model {model}") as caught:
        OnnxEmbedder(graph_path_for(model), check_model=model)
    assert caught.value.reason == "missing"


def test_a_file_that_is_not_a_graph_is_refused(tmp_path):
    model = small_model(tmp_path / "m.pt")
    shutil.copy(model, graph_path_for(model))
    with pytest.raises(GraphError) as caught:
        OnnxEmbedder(graph_path_for(model), check_model=model)
    assert caught.value.reason == "unreadable"
