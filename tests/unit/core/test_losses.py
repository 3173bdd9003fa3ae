"""Losses vs straightforward float64 numpy implementations of the published formulas, and
SCAN's consistency term against the official code (github.com/wvangansbeke/
Unsupervised-Classification, losses/losses.py).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ood_nolabels.core.losses import (
    NoConfidentSamplesError,
    confidence_cross_entropy,
    nt_xent,
    scan_loss,
)


def np_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def np_nt_xent(z1: np.ndarray, z2: np.ndarray, temperature: float) -> float:
    """One anchor at a time, exactly as the SimCLR paper writes it."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n2 = len(z)
    losses = []
    for a in range(n2):
        positive = (a + n2 // 2) % n2
        sims = {j: np.exp(z[a] @ z[j] / temperature) for j in range(n2) if j != a}
        losses.append(-np.log(sims[positive] / sum(sims.values())))
    return float(np.mean(losses))


def test_nt_xent_matches_loop_implementation() -> None:
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    got = nt_xent(torch.tensor(z1), torch.tensor(z2), temperature=0.3)
    assert got.item() == pytest.approx(np_nt_xent(z1, z2, 0.3), rel=1e-6)


def test_nt_xent_closed_form_for_aligned_orthogonal_pairs() -> None:
    n, t = 4, 0.5
    z = torch.eye(n) * 3.0  # unnormalised on purpose: the loss must normalise
    expected = -np.log(np.exp(1 / t) / (np.exp(1 / t) + 2 * n - 2))
    assert nt_xent(z, z.clone(), t).item() == pytest.approx(expected, rel=1e-6)
    random = nt_xent(torch.randn(n, n, generator=torch.Generator().manual_seed(0)), z, t)
    assert nt_xent(z, z.clone(), t) < random


def test_nt_xent_under_bf16_autocast_is_computed_in_float32() -> None:
    """Projections that arrive in bf16 (a bf16-mixed run) give the float32 loss of those same
    bf16 values, not a loss rounded to bf16's three significant digits."""
    rng = np.random.default_rng(2)
    z1, z2 = (torch.tensor(rng.normal(size=(32, 16))).bfloat16() for _ in range(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = nt_xent(z1, z2, temperature=0.1)
    assert got.dtype == torch.float32
    expected = np_nt_xent(z1.float().numpy(), z2.float().numpy(), 0.1)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_scan_loss_components_match_numpy() -> None:
    rng = np.random.default_rng(1)
    anchors, neighbors = rng.normal(size=(8, 3)), rng.normal(size=(8, 3))
    pa, pn = np_softmax(anchors), np_softmax(neighbors)
    consistency = -np.mean(np.log((pa * pn).sum(axis=1)))
    mean = pa.mean(axis=0)
    entropy = -(mean * np.log(mean)).sum()
    total, got_consistency, got_entropy = scan_loss(
        torch.tensor(anchors), torch.tensor(neighbors), entropy_weight=5.0
    )
    assert got_consistency.item() == pytest.approx(consistency, rel=1e-9)
    assert got_entropy.item() == pytest.approx(entropy, rel=1e-9)
    assert total.item() == pytest.approx(consistency - 5.0 * entropy, rel=1e-9)


def test_scan_loss_is_finite_for_disagreeing_one_hot_predictions() -> None:
    """Zero agreement would give log(0): SCAN's BCE clamps the log at -100."""
    anchors = torch.tensor([[100.0, -100.0]])
    total, consistency, _ = scan_loss(anchors, -anchors, entropy_weight=1.0)
    assert torch.isfinite(total) and consistency.item() == pytest.approx(100.0)


def confident_batch() -> tuple[np.ndarray, np.ndarray]:
    """Weak logits: 3 confident class-0, 1 confident class-2, 2 unconfident samples."""
    weak = np.array(
        [
            [6.0, 0.0, 0.0],
            [5.0, 1.0, 0.0],
            [7.0, 0.0, 1.0],
            [0.0, 0.0, 6.0],
            [0.1, 0.0, 0.0],
            [0.0, 0.2, 0.1],
        ]
    )
    strong = np.random.default_rng(2).normal(size=weak.shape)
    return weak, strong


def manual_confidence_ce(
    weak: np.ndarray,
    strong: np.ndarray,
    threshold: float,
    class_balance: bool,
    min_cluster_fraction: float = 0.0,
) -> float:
    probs = np_softmax(weak)
    confidence, clusters = probs.max(axis=1), probs.argmax(axis=1)
    mask = confidence > threshold
    for i in range(len(weak)):  # rank of sample i among its cluster's members, most confident 0
        members = confidence[clusters == clusters[i]]
        rank = np.sum(members > confidence[i])
        mask[i] |= rank < np.ceil(min_cluster_fraction * len(members))
    targets = clusters[mask]
    ce = -np.log(np_softmax(strong[mask])[np.arange(len(targets)), targets])
    if not class_balance:
        return float(ce.mean())
    weights = np.array([mask.sum() / np.sum(targets == t) for t in targets])
    return float((weights * ce).sum() / weights.sum())


@pytest.mark.parametrize("class_balance", [False, True])
def test_confidence_cross_entropy_matches_manual(class_balance: bool) -> None:
    weak, strong = confident_batch()
    got = confidence_cross_entropy(torch.tensor(weak), torch.tensor(strong), 0.9, class_balance)
    expected = manual_confidence_ce(weak, strong, 0.9, class_balance)
    assert got.item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("fraction", [0.3, 0.5, 1.0])
@pytest.mark.parametrize("class_balance", [False, True])
def test_min_cluster_fraction_matches_manual(fraction: float, class_balance: bool) -> None:
    weak, strong = confident_batch()
    got = confidence_cross_entropy(
        torch.tensor(weak), torch.tensor(strong), 0.9, class_balance, fraction
    )
    expected = manual_confidence_ce(weak, strong, 0.9, class_balance, fraction)
    assert got.item() == pytest.approx(expected, rel=1e-9)
    plain = manual_confidence_ce(weak, strong, 0.9, class_balance)
    assert expected != pytest.approx(plain)  # the extra samples change the loss


def test_min_cluster_fraction_trains_a_cluster_below_the_threshold() -> None:
    """Cluster 1 never reaches 0.9: its more confident half still gets a target, the rest not."""
    weak = torch.tensor([[5.0, 0.0], [4.0, 0.0], [0.0, 0.8], [0.0, 0.6], [0.0, 0.4], [0.0, 0.2]])
    strong = torch.randn(6, 2, requires_grad=True)
    confidence_cross_entropy(weak, strong, 0.9, min_cluster_fraction=0.5).backward()
    trained = strong.grad.abs().sum(dim=1) > 0
    assert trained.tolist() == [True, True, True, True, False, False]


def test_min_cluster_fraction_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="min_cluster_fraction must be in"):
        confidence_cross_entropy(torch.zeros(4, 2), torch.zeros(4, 2), 0.9, True, 1.5)


def test_class_balance_changes_an_imbalanced_loss() -> None:
    weak, strong = (torch.tensor(x) for x in confident_batch())
    balanced = confidence_cross_entropy(weak, strong, 0.9, class_balance=True)
    plain = confidence_cross_entropy(weak, strong, 0.9, class_balance=False)
    assert not torch.isclose(balanced, plain)


def test_unconfident_samples_get_no_gradient() -> None:
    weak, strong = (torch.tensor(x, requires_grad=True) for x in confident_batch())
    confidence_cross_entropy(weak, strong, 0.9).backward()
    assert weak.grad is None  # the weak view only provides targets
    assert torch.all(strong.grad[4:] == 0)
    assert torch.all(strong.grad[:4].abs().sum(dim=1) > 0)


def test_no_confident_sample_raises_informative_error() -> None:
    weak = torch.zeros(8, 4)  # uniform: confidence 0.25 everywhere
    with pytest.raises(NoConfidentSamplesError) as info:
        confidence_cross_entropy(weak, torch.randn(8, 4), threshold=0.99)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    for fragment in ("0.99", "batch size 8", "0.2500", "selflabel.threshold", "SCAN longer"):
        assert fragment in message


# -- SCAN's consistency term against the official code ------------------------------------------


def reproduction() -> tuple[torch.Tensor, torch.Tensor]:
    anchors = torch.tensor([[30.0, 0.0, 0.0], [0.0, 30.0, 0.0]], requires_grad=True)
    neighbors = torch.tensor([[0.0, 30.0, 0.0], [0.0, 30.0, 0.0]], requires_grad=True)
    return anchors, neighbors


def test_underflowed_agreement_costs_and_pulls_as_official():
    """losses/losses.py SCANLoss: ``nn.BCELoss()(similarity, ones)`` (log clamped at -100).

    Row 0's agreement is 2 e^-30 = 1.87e-13: official consistency 14.65 and an L1 gradient of
    0.094 on row 0 of the anchor logits (a clamp of the agreement at 1e-8 gives 9.21 and 0).
    """
    anchors, neighbors = reproduction()
    total, consistency, entropy = scan_loss(anchors, neighbors, entropy_weight=5.0)
    assert consistency.item() == pytest.approx(-math.log(2 * math.exp(-30)) / 2, rel=1e-4)
    assert consistency.item() == pytest.approx(14.6534, abs=1e-3)
    assert total.item() == pytest.approx(consistency.item() - 5.0 * entropy.item(), rel=1e-6)
    consistency.backward()
    assert anchors.grad[0].abs().sum().item() == pytest.approx(0.0936, abs=5e-4)
    assert anchors.grad[1].abs().sum().item() == 0  # agreement 1: nothing to pull
    assert neighbors.grad[0].abs().sum().item() == pytest.approx(0.0936, abs=5e-4)


def test_vanished_agreement_is_capped_at_100_nats():
    """BCE clamps log(0) at -100, so a zero agreement costs 100 (not inf, not -log 1e-8)."""
    anchors = torch.tensor([[100.0, -100.0]], requires_grad=True)
    _, consistency, _ = scan_loss(anchors, -anchors.detach(), entropy_weight=1.0)
    assert consistency.item() == pytest.approx(100.0)
    consistency.backward()
    assert torch.isfinite(anchors.grad).all()


def test_consistency_under_bf16_autocast_matches_float32():
    anchors, neighbors = reproduction()
    expected = scan_loss(anchors, neighbors, 5.0)[1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = scan_loss(anchors.bfloat16(), neighbors.bfloat16(), 5.0)[1]
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected.item(), rel=1e-2)
