"""Zero-filtered triplet margin loss on squared Euclidean distances of (normalised) embeddings.

Triplets the margin already separates contribute exactly 0; averaging only over the *active* ones
(loss > 0) keeps the gradient from shrinking as training makes most triplets easy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MARGIN = 1.0


@dataclass(frozen=True)
class TripletLoss:
    """Mean loss over active triplets (0 when none is active) and the fraction of active triplets."""

    loss: torch.Tensor
    active_fraction: float
    active_count: int


def triplet_losses(
    anchor: torch.Tensor, neighbour: torch.Tensor, opposite: torch.Tensor, margin: float = MARGIN
) -> torch.Tensor:
    """Per-triplet ``max(0, |a-n|^2 - |a-o|^2 + margin)`` for ``[batch, dim]`` embeddings -> ``[batch]``."""
    if not anchor.shape == neighbour.shape == opposite.shape or anchor.dim() != 2:
        raise ValueError(
            "triplet loss needs three [batch, dim] tensors of one shape, got "
            f"{tuple(anchor.shape)}, {tuple(neighbour.shape)}, {tuple(opposite.shape)}"
        )
    near = (anchor - neighbour).pow(2).sum(dim=1)
    far = (anchor - opposite).pow(2).sum(dim=1)
    return torch.clamp(near - far + margin, min=0.0)


def zero_filtered_triplet_loss(
    anchor: torch.Tensor, neighbour: torch.Tensor, opposite: torch.Tensor, margin: float = MARGIN
) -> TripletLoss:
    """Mean of the per-triplet losses that are > 0 (not divided by the batch size); 0 and no NaN
    when every triplet is already satisfied."""
    losses = triplet_losses(anchor.float(), neighbour.float(), opposite.float(), margin)
    active = losses > 0
    count = int(active.sum().item())
    # Sum / max(count, 1) is the mean over active triplets and an exact, differentiable 0 when none is.
    loss = (losses * active).sum() / max(count, 1)
    return TripletLoss(loss, count / max(losses.numel(), 1), count)
