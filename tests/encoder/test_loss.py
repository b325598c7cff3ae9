"""Specification of the zero-filtered triplet loss on hand-made embeddings with known answers."""

from __future__ import annotations

import math

import pytest
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


# ----------------------------------------------------------------------------- in-batch triplet losses

from encoder.loss import batch_all_triplet_loss, batch_hard_triplet_loss  # noqa: E402


def test_batch_all_averages_only_the_active_triplets_among_all_valid_ones():
    # Clip 0: tiles at e1 and e2 (|a-p|^2 = 2); clip 1: one tile at -e1 and one at e2.
    # Valid (anchor, positive, negative) triplets: 2 anchors x 1 positive x 2 negatives per clip = 8.
    emb = torch.tensor([unit(1, 0, 0), unit(0, 1, 0), unit(-1, 0, 0), unit(0, 1, 0)])
    ids = torch.tensor([0, 0, 1, 1])
    result = batch_all_triplet_loss(emb, ids)
    # Active ones: anchor e1 with negative e2 (2-2+1=1); anchor e2 with negative e2 (2-0+1=3) and with
    # negative -e1 (2-2+1=1); anchor -e1 with negative e1 ... (2-4+1<0) no, with negative e2 (2-2+1=1);
    # anchor e2(clip 1) with negative e2(clip 0) (2-0+1=3) and e1 (2-2+1=1).
    assert result.active_count == 6 and result.active_fraction == 6 / 8
    assert result.loss.item() == pytest.approx((1 + 3 + 1 + 1 + 3 + 1) / 6)


def test_batch_all_is_zero_without_nan_when_every_clip_is_apart():
    emb = torch.tensor([unit(1, 0), unit(1, 0), unit(-1, 0), unit(-1, 0)], requires_grad=True)
    result = batch_all_triplet_loss(emb, torch.tensor([0, 0, 1, 1]))
    result.loss.backward()
    assert result.loss.item() == 0.0 and result.active_count == 0 and torch.isfinite(emb.grad).all()


def test_batch_hard_takes_the_farthest_positive_and_the_nearest_negative_with_a_soft_margin():
    # Anchor 0 (e1): positives e1 (0) and e2 (sqrt 2) -> hardest sqrt 2; negatives -e1 (2) and
    # (e1+e2)/sqrt2 (|.| = sqrt(2 - sqrt 2)) -> hardest sqrt(2 - sqrt 2).
    emb = torch.tensor([unit(1, 0), unit(1, 0), unit(0, 1), unit(-1, 0), unit(1, 1), unit(-1, -1)])
    ids = torch.tensor([0, 0, 0, 1, 1, 1])
    result = batch_hard_triplet_loss(emb, ids)
    d = torch.cdist(emb, emb)
    same = ids[:, None] == ids[None, :]
    expected = []
    for a in range(6):
        pos = d[a][same[a] & (torch.arange(6) != a)].max()
        neg = d[a][~same[a]].min()
        expected.append(torch.nn.functional.softplus(pos - neg))
    assert d[0][2] == pytest.approx(math.sqrt(2), abs=1e-6)
    assert result.loss.item() == pytest.approx(torch.stack(expected).mean().item(), abs=1e-5)


def test_batch_hard_is_small_but_still_pulls_when_every_clip_is_apart():
    emb = torch.tensor([unit(1, 0), unit(1, 0), unit(-1, 0), unit(-1, 0)], requires_grad=True)
    result = batch_hard_triplet_loss(emb, torch.tensor([0, 0, 1, 1]))
    result.loss.backward()
    assert result.loss.item() == pytest.approx(math.log1p(math.exp(-2.0)), abs=1e-5)  # softplus(0 - 2)
    assert result.active_fraction == 0.0


def test_in_batch_losses_reject_ids_that_do_not_match_the_rows():
    with pytest.raises(ValueError, match="ids"):
        batch_all_triplet_loss(torch.zeros(4, 2), torch.tensor([0, 1]))
