"""The embedding network and nothing else: a ResNet18-layout CNN on log-Mel spectrograms.

``[batch, 1, n_mels, frames] -> [batch, embedding_dim]``, L2-normalised, for any frame count (global
average pooling over frequency and time, or mean+max pooling). The projection head is training-only. Width and depth are an `EncoderConfig`, stored in the model
file. CPU and CUDA; autograd; no TorchScript needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn

from encoder.config_schema import Section

POOLING = ("mean", "mean+max")


class EncoderConfig(Section):
    """Architecture of the encoder: stem width, basic blocks per stage, embedding size; stored in the model file."""

    width: int = 16  # chosen from the measured speed/quality trade-off in docs/encoder.md
    blocks: tuple[int, ...] = (2, 2, 2, 2)
    embedding_dim: int = 256
    pooling: str = "mean"  # "mean" over frequency and time, or "mean+max": mean over frequency, then mean + max over time

    @model_validator(mode="after")
    def _check(self) -> "EncoderConfig":
        if self.pooling not in POOLING:
            raise ValueError(f"EncoderConfig.pooling must be one of {POOLING}, got {self.pooling!r}")
        if self.width < 1:
            raise ValueError(f"EncoderConfig.width must be >= 1, got {self.width}")
        if not self.blocks or any(b < 1 for b in self.blocks):
            raise ValueError(f"EncoderConfig.blocks must be non-empty positive counts, got {self.blocks}")
        if self.embedding_dim < 1:
            raise ValueError(f"EncoderConfig.embedding_dim must be >= 1, got {self.embedding_dim}")
        return self


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Two 3x3 conv-BN layers plus the (projected) shortcut, then ReLU."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Encoder(nn.Module):
    """ResNet-style encoder: input norm, 7x7/2 stem + max-pool, stages of basic blocks
    (widths w, 2w, 4w, 8w, ...), global average pool, linear to ``embedding_dim``, L2 norm."""

    def __init__(self, config: EncoderConfig = EncoderConfig()) -> None:
        super().__init__()
        self.config = config
        w = config.width
        # Log-Mel dB values sit around -100..0; a learned per-input normalisation keeps loudness
        # information (unlike per-clip standardisation) while giving the stem unit-scale inputs.
        self.input_norm = nn.BatchNorm2d(1)
        self.stem = nn.Sequential(
            nn.Conv2d(1, w, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages = []
        in_channels = w
        for index, count in enumerate(config.blocks):
            out_channels = w * 2**index
            stride = 1 if index == 0 else 2
            blocks = [BasicBlock(in_channels, out_channels, stride)]
            blocks += [BasicBlock(out_channels, out_channels, 1) for _ in range(count - 1)]
            stages.append(nn.Sequential(*blocks))
            in_channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.projection = nn.Linear(in_channels, config.embedding_dim)

    def representation(self, features: torch.Tensor) -> torch.Tensor:
        """``[batch, 1, n_mels, frames]`` log-Mel dB -> ``[batch, embedding_dim]`` before normalisation."""
        if features.dim() != 4 or features.shape[1] != 1:
            raise ValueError(
                f"Encoder expects [batch, 1, n_mels, frames], got shape {tuple(features.shape)}"
            )
        return self.projection(self._pool(self._stage_map(features)))

    def _stage_map(self, features: torch.Tensor) -> torch.Tensor:
        """The last stage's map ``[batch, channels, freq, time]``."""
        return self.stages(self.stem(self.input_norm(features)))

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.pooling == "mean+max":  # PANNs: frequency mean, then time mean + time max
            x = x.mean(dim=2)
            return x.mean(dim=2) + x.amax(dim=2)
        return x.mean(dim=(2, 3))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[batch, 1, n_mels, frames]`` log-Mel dB -> ``[batch, embedding_dim]`` unit vectors."""
        return F.normalize(self.representation(features).float(), dim=1)

    def column_dim(self, n_mels: int) -> int:
        """Values per column of `column_map` for ``n_mels`` bands: the last stage's channels x its frequency
        bands (the stem, its max-pool and every later stage halve the bands, rounding up)."""
        bands = n_mels
        for _ in range(len(self.config.blocks) + 1):
            bands = -(-bands // 2)
        return self.config.width * 2 ** (len(self.config.blocks) - 1) * bands

    @staticmethod
    def column_map(stage_map: torch.Tensor) -> torch.Tensor:
        """The last stage's map ``[batch, channels, bands, columns]`` as ``[batch, columns, channels * bands]``:
        one row per 32 frames, before pooling over time and frequency and before the projection. Custom sounds
        match spans of it: it keeps where in frequency a sound is, which the projected embedding loses
        (bench/specific_sounds.py, docs/sounds.md)."""
        return stage_map.permute(0, 3, 1, 2).flatten(2)

    def embedding_and_columns(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward`'s unit embeddings and the `column_map`, from one pass through the network."""
        x = self._stage_map(features)
        return F.normalize(self.projection(self._pool(x)).float(), dim=1), self.column_map(x)


class ProjectionHead(nn.Module):
    """MLP ``embedding_dim -> hidden -> out`` with ReLU, L2-normalised: the loss sees its output, the
    model file never holds it (SimCLR section 4.2), so the public embedding and its cost stay as they are."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or in_dim
        self.layers = nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                    nn.Linear(hidden, out_dim))

    def forward(self, representation: torch.Tensor) -> torch.Tensor:
        """``[batch, in_dim]`` un-normalised embeddings -> ``[batch, out_dim]`` unit vectors."""
        return F.normalize(self.layers(representation).float(), dim=1)


class TrainingNetwork(nn.Module):
    """What the loss sees: the encoder's unit embedding, or the projection head's output on top of the
    encoder's un-normalised embedding when a head is given."""

    def __init__(self, encoder: Encoder, head: ProjectionHead | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[batch, 1, n_mels, frames]`` -> ``[batch, D]`` unit vectors for the loss."""
        if self.head is None:
            return self.encoder(features)
        return self.head(self.encoder.representation(features))


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
