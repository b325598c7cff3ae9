"""The ONNX Runtime embedding backend: numpy FFT -> the exported graph (filterbank, dB, encoder) on the CPU.

`OnnxEmbedder` answers the same ``embed(windows, timings)`` call as the torch embedder, without
importing torch: the daemon with ``pipeline.backend = "onnx"`` never loads it. The STFT power is
computed here with numpy's pocketfft from the model's `LogMelConfig` and the STFT window stored in the
graph (`stft_power`); everything after it runs in the graph exported from the torch definition
(encoder/onnx_export.py). Its equality with `encoder.features.log_mel` is tested on real clips.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from encoder.features import LogMelConfig, frame_count
from encoder.onnx_graph import INPUT, OUTPUTS, GraphError, GraphInfo, check_binding, export_command


_FRAMES_PER_BLOCK = 128  # frames per FFT call in `stft_power`: ~1.5 MB of float64 work arrays


def stft_power(windows: np.ndarray, config: LogMelConfig, window: np.ndarray) -> np.ndarray:
    """STFT power ``[rows, frames, n_fft // 2 + 1]`` float32 of mono rows ``[rows, samples]``, as
    `encoder.features.log_mel` computes it: centre-padded by reflection, ``window`` (``win_length``
    samples, centred in ``n_fft``) every ``hop_length`` samples, power of the one-sided FFT."""
    x = np.asarray(windows, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"stft_power expects [rows, samples] with samples > 0, got shape {x.shape}")
    with np.errstate(over="ignore", invalid="ignore"):  # any NaN/Inf spoils the sum; an overflow takes the long way
        all_finite = bool(np.isfinite(x.sum())) or bool(np.isfinite(x).all())
    if not all_finite:
        raise ValueError("stft_power got NaN or Inf samples; the input is not audio")
    n_fft, hop, length = config.n_fft, config.hop_length, window.shape[0]
    frames = frame_count(x.shape[1], config)
    padded = np.pad(x, ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
    # Frame t spans padded[t*hop : t*hop + n_fft]; only its middle `length` samples meet the window, and
    # where inside n_fft they sit changes the phase of the spectrum, not its power.
    left = (n_fft - length) // 2
    segments = np.lib.stride_tricks.sliding_window_view(padded, length, axis=1)[:, left::hop][:, :frames]
    # float64: numpy's pocketfft is three times faster in double precision than in single here. A block of
    # frames at a time, through the same two work arrays, keeps the FFT's input and output in cache (the
    # whole window's complex spectrum alone is 8 MB): the same numbers, ~15 % less CPU (docs/performance.md).
    window64 = window.astype(np.float64)
    power = np.empty((x.shape[0], frames, n_fft // 2 + 1), np.float32)
    block = max(1, min(_FRAMES_PER_BLOCK, frames))
    product = np.empty((block, length))
    spectrum = np.empty((block, n_fft // 2 + 1), np.complex128)
    parts = spectrum.view(np.float64)
    for row in range(x.shape[0]):
        for start in range(0, frames, block):
            m = min(block, frames - start)
            np.multiply(segments[row, start:start + m], window64, out=product[:m])
            np.fft.rfft(product[:m], n=n_fft, axis=1, out=spectrum[:m])
            np.square(parts[:m], out=parts[:m])
            # summed in float64 and rounded once to float32, as (re**2 + im**2).astype(float32)
            np.add(parts[:m, 0::2], parts[:m, 1::2], out=power[row, start:start + m], casting="same_kind")
    return power


class OnnxEmbedder:
    """`Embedder` over an exported graph file with ONNX Runtime on the CPU.

    ``check_model``: the model file the graph must have been exported from (GraphError ``stale``
    otherwise); None skips the check (`roomtone export` verifying a fresh graph). ``threads`` is ONNX
    Runtime's intra-op thread count (0: one per physical core). The default, one thread that sleeps
    when idle, is the cheapest in CPU per window: a 10 s window takes about 12 ms on one core, and
    ONNX Runtime's default spinning pool burnt more CPU than the work itself on a busy host. Windows
    run one at a time by default (``batch_size``): batches of 8 cost 15.3 ms per window instead of
    12.9 and 160 MiB more resident memory (docs/performance.md)."""

    def __init__(self, graph_path: str | Path, check_model: str | Path | None, threads: int = 1,
                 batch_size: int = 1) -> None:
        import onnxruntime

        self.graph_path = Path(graph_path)
        if not self.graph_path.is_file():
            where = f" for {check_model}" if check_model is not None else ""
            hint = f"; export it with `{export_command(check_model)}`" if check_model is not None else ""
            raise GraphError("missing", f"{self.graph_path}: no ONNX graph{where}{hint}")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads sleep
        options.log_severity_level = 3  # warnings about unused initialisers are noise to a user
        try:
            self.session = onnxruntime.InferenceSession(str(self.graph_path), options,
                                                        providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise GraphError("unreadable", f"{self.graph_path}: not a readable ONNX graph ({type(exc).__name__}: {exc})") from None
        self.info = GraphInfo.from_props(self.session.get_modelmeta().custom_metadata_map, str(self.graph_path))
        if check_model is not None:
            check_binding(self.info, self.graph_path, check_model)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.feature_config = self.info.feature_config
        self.sample_rate = self.feature_config.sample_rate
        self.embedding_dim = self.info.embedding_dim
        # a version-1 or -2 graph has no column map custom sounds use: they match the pooled embedding (re-export for spans)
        self.column_dim = self.info.column_dim
        self.has_columns = self.column_dim > 0

    def _need_columns(self) -> None:
        if not self.has_columns:
            raise GraphError("version", f"{self.graph_path}: a version-{self.info.version} graph has no column map; re-export it "
                                        f"(roomtone export --model MODEL) for time-local custom sounds")

    def _groups(self, windows: Sequence[np.ndarray]) -> list[list[int]]:
        """Indices of equal-length windows, ``batch_size`` at most per group, in order of appearance."""
        by_length: dict[int, list[int]] = {}
        for index, samples in enumerate(windows):
            by_length.setdefault(int(np.shape(samples)[-1]), []).append(index)
        return [group[i:i + self.batch_size] for group in by_length.values()
                for i in range(0, len(group), self.batch_size)]

    def _run(self, windows: Sequence[np.ndarray], outputs: list[str], timings: Any) -> list[tuple[list[int], list[np.ndarray]]]:
        results = []
        for indices in self._groups(windows):
            t0 = time.perf_counter()
            batch = np.stack([np.asarray(windows[i], dtype=np.float32).reshape(-1) for i in indices])
            power = stft_power(batch, self.feature_config, self.info.stft_window)
            t1 = time.perf_counter()
            results.append((indices, self.session.run(outputs, {INPUT: power})))
            if timings is not None:
                timings.features += t1 - t0
                timings.embed += time.perf_counter() - t1
        return results

    def embed(self, windows: Sequence[np.ndarray], timings: Any = None) -> np.ndarray:
        """Embeddings ``[n, D]`` float32 of 1-D float32 windows at ``sample_rate`` (any lengths); the time
        spent goes to ``timings.features`` (FFT) and ``timings.embed`` (the graph) when given."""
        out = np.zeros((len(windows), self.embedding_dim), dtype=np.float32)
        for indices, (embedding,) in self._run(windows, [OUTPUTS[0]], timings):
            out[indices] = embedding
        return out

    def embed_with_columns(self, windows: Sequence[np.ndarray], timings: Any = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """Embeddings ``[n, D]`` and each window's column map ``[columns, column_dim]`` (the time-local map custom
        sounds are matched against, `Encoder.column_map`), any lengths; GraphError ``version`` for a
        graph without columns (`has_columns`)."""
        self._need_columns()
        out = np.zeros((len(windows), self.embedding_dim), dtype=np.float32)
        columns: list = [None] * len(windows)
        for indices, (embedding, maps) in self._run(windows, [OUTPUTS[0], OUTPUTS[2]], timings):
            out[indices] = embedding
            for i, row in zip(indices, maps):
                columns[i] = row
        return out, columns

    def embed_with_features(self, windows: Sequence[np.ndarray], timings: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings ``[n, D]`` and log-Mel ``[n, n_mels, frames]`` of equal-length windows (the web page's
        strips, tests, and `roomtone export`'s check against torch)."""
        lengths = {int(np.shape(w)[-1]) for w in windows}
        if len(lengths) != 1:
            raise ValueError(f"embed_with_features needs windows of one length, got lengths {sorted(lengths)}")
        embeddings, features = [], []
        for _, (embedding, log_mel) in self._run(windows, list(OUTPUTS[:2]), timings):
            embeddings.append(embedding)
            features.append(log_mel)
        return np.concatenate(embeddings), np.concatenate(features)
