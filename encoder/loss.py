"""Triplet losses on (normalised) embeddings: the zero-filtered margin loss on given triplets, and the
in-batch "batch all" and "batch hard" (soft margin) losses over P clips x K tiles.

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


def _squared_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """``[N, D]`` -> ``[N, N]`` squared Euclidean distances (clamped at 0 against rounding)."""
    x = embeddings.float()
    norms = x.pow(2).sum(dim=1)
    return (norms[:, None] + norms[None, :] - 2.0 * x @ x.T).clamp(min=0.0)


def _check_ids(embeddings: torch.Tensor, ids: torch.Tensor) -> None:
    """ValueError unless ``embeddings`` is ``[N, D]`` and ``ids`` is ``[N]``."""
    if embeddings.dim() != 2 or ids.shape != (embeddings.shape[0],):
        raise ValueError(f"in-batch triplet loss needs [N, D] embeddings and [N] ids, got "
                         f"{tuple(embeddings.shape)} and {tuple(ids.shape)}")


def batch_all_triplet_loss(embeddings: torch.Tensor, ids: torch.Tensor, margin: float = MARGIN) -> TripletLoss:
    """Zero-filtered mean of ``max(0, |a-p|^2 - |a-n|^2 + margin)`` over every in-batch triplet: ``a != p``
    with equal ``ids``, ``n`` with another id (Hermans et al. 2017, "batch all"). 0 when none is active."""
    _check_ids(embeddings, ids)
    d = _squared_distances(embeddings)
    same = ids[:, None] == ids[None, :]
    positive = same & ~torch.eye(len(ids), dtype=torch.bool, device=ids.device)
    valid = positive[:, :, None] & ~same[:, None, :]  # [anchor, positive, negative]
    losses = (d[:, :, None] - d[:, None, :] + margin).clamp(min=0.0) * valid
    active = losses > 0
    count = int(active.sum().item())
    total = int(valid.sum().item())
    return TripletLoss(losses.sum() / max(count, 1), count / max(total, 1), count)


def batch_hard_triplet_loss(embeddings: torch.Tensor, ids: torch.Tensor) -> TripletLoss:
    """Mean over anchors of ``softplus(max_p |a-p| - min_n |a-n|)`` (hardest positive, hardest negative,
    Euclidean distance, soft margin; Hermans et al. 2017). Anchors without a positive or a negative are
    skipped; the active fraction is the share of anchors whose hardest negative is not farther."""
    _check_ids(embeddings, ids)
    d = (_squared_distances(embeddings) + 1e-12).sqrt()
    same = ids[:, None] == ids[None, :]
    positive = same & ~torch.eye(len(ids), dtype=torch.bool, device=ids.device)
    hardest_positive = torch.where(positive, d, torch.full_like(d, -1.0)).amax(dim=1)
    hardest_negative = torch.where(~same, d, torch.full_like(d, float("inf"))).amin(dim=1)
    usable = positive.any(dim=1) & (~same).any(dim=1)
    if not bool(usable.any()):
        return TripletLoss(embeddings.sum() * 0.0, 0.0, 0)
    gap = hardest_positive[usable] - hardest_negative[usable]
    count = int((gap >= 0).sum().item())
    return TripletLoss(torch.nn.functional.softplus(gap).mean(), count / int(usable.sum().item()), count)
