"""Specification of the zero-filtered triplet loss on hand-made embeddings with known answers."""

from __future__ import annotations

import math

import torch

from encoder.loss import triplet_losses, zero_filtered_triplet_loss


def unit(*values: float) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


def test_all_satisfied_batch_gives_exactly_zero_and_no_nan():
    anchor = torch.tensor([unit(1, 0), unit(0, 1)], requires_grad=True)
    neighbour = torch.tensor([unit(1, 0), unit(0, 1)])
    opposite = torch.tensor([unit(-1, 0), unit(0, -1)])  # distance^2 = 4 > margin
    result = zero_filtered_triplet_loss(anchor, neighbour, opposite)
    result.loss.backward()
    assert result.loss.item() == 0.0
    assert result.active_fraction == 0.0 and result.active_count == 0
    assert torch.isfinite(anchor.grad).all()


def test_one_violating_triplet_gives_its_own_loss_not_divided_by_batch_size():
    # Triplet 0: anchor == neighbour == opposite -> loss = 0 - 0 + 1 = 1.
    # Triplets 1-3: satisfied (opposite antipodal).
    anchor = torch.tensor([unit(1, 0)] * 4)
    neighbour = torch.tensor([unit(1, 0)] * 4)
    opposite = torch.tensor([unit(1, 0)] + [unit(-1, 0)] * 3)
    result = zero_filtered_triplet_loss(anchor, neighbour, opposite)
    assert result.loss.item() == 1.0
    assert result.active_fraction == 0.25 and result.active_count == 1


def test_loss_uses_squared_euclidean_distance_and_margin_one():
    # |a-n|^2 = 2 (orthogonal unit vectors), |a-o|^2 = 1.5^2 + 0 -> loss = 2 - 2.25 + 1 = 0.75
    anchor = torch.tensor([[1.0, 0.0]])
    neighbour = torch.tensor([[0.0, 1.0]])
    opposite = torch.tensor([[-0.5, 0.0]])
    assert torch.allclose(triplet_losses(anchor, neighbour, opposite), torch.tensor([0.75]))
    assert math.isclose(zero_filtered_triplet_loss(anchor, neighbour, opposite).loss.item(), 0.75)


def test_mean_is_over_active_triplets_only():
    anchor = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    neighbour = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    opposite = torch.tensor([[-0.5, 0.0], [1.0, 0.0], [-1.0, 0.0]])  # losses 0.75, 1.0, 0.0
    result = zero_filtered_triplet_loss(anchor, neighbour, opposite)
    assert math.isclose(result.loss.item(), (0.75 + 1.0) / 2)
    assert math.isclose(result.active_fraction, 2 / 3)


def test_satisfied_triplets_contribute_no_gradient():
    anchor = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    neighbour = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    opposite = torch.tensor([[1.0, 0.0], [0.0, -1.0]])  # first violates, second satisfied
    zero_filtered_triplet_loss(anchor, neighbour, opposite).loss.backward()
    assert anchor.grad[1].abs().sum().item() == 0.0
