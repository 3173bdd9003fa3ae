"""Losses of the pseudo-labelling pipeline: SimCLR, SCAN clustering and SCAN self-labelling.

Pure functions of tensors so the Lightning modules stay thin and the formulas are testable
against independent implementations. Formulas follow SimCLR (Chen et al., 2020) and the official
SCAN code (van Gansbeke et al., ECCV 2020).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

EPS = 1e-8  # SCAN's clamp of the entropy's probabilities: keeps 0 * log(0) finite


class NoConfidentSamplesError(ValueError):
    """No sample of a self-labelling batch passed the confidence threshold.

    A dedicated type so callers can tell this recoverable configuration problem (threshold too
    high, or SCAN not trained enough) from genuine bugs, instead of silently training on NaN.
    """


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent loss over the ``2N`` views ``cat(z1, z2)``.

    View ``i`` and ``i + N`` form the positive pair; the other ``2N - 2`` views are negatives. The
    projections are L2-normalised here so callers can pass raw head outputs (also already
    gathered across DDP ranks). Returns the mean over all ``2N`` anchors.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must be (N, D) of equal shape, got {z1.shape}, {z2.shape}")
    n = z1.shape[0]
    # In at least float32 outside autocast: bf16 logits (3 significant digits) divided by a
    # small temperature would round the softmax the loss is made of.
    dtype = torch.promote_types(z1.dtype, torch.float32)
    with torch.autocast(z1.device.type, enabled=False):
        z = F.normalize(torch.cat([z1, z2]).to(dtype), dim=1)
        logits = z @ z.T / temperature
        # An anchor is never its own negative: exclude the diagonal from the softmax.
        self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
        logits = logits.masked_fill(self_mask, float("-inf"))
        targets = torch.arange(2 * n, device=z.device).roll(n)
        return F.cross_entropy(logits, targets)


def entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of a probability vector, clamped like SCAN to avoid ``0 * log 0``."""
    p = probabilities.clamp_min(EPS)
    return -(p * p.log()).sum()


def neighbor_consistency(agreement: torch.Tensor) -> torch.Tensor:
    """``-mean log agreement`` exactly as SCAN computes it: ``binary_cross_entropy(agreement, 1)``.

    PyTorch's BCE clamps each log at -100, so a pair whose agreement underflowed to ~0 costs 100
    nats instead of inf, and its backward (which clamps ``x (1 - x)`` at 1e-12) still pulls such
    a pair together. A clamp of the agreement itself (e.g. at 1e-8) would cap that pair's loss
    lower and give it no gradient at all. Computed outside autocast and in at least float32
    (CUDA autocast refuses BCE); rounding above 1 is clipped, since BCE rejects it.
    """
    dtype = torch.promote_types(agreement.dtype, torch.float32)
    with torch.autocast(agreement.device.type, enabled=False):
        agreement = agreement.to(dtype).clamp_max(1.0)
        return F.binary_cross_entropy(agreement, torch.ones_like(agreement))


def scan_loss(
    anchor_logits: torch.Tensor, neighbor_logits: torch.Tensor, entropy_weight: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SCAN clustering loss: ``(total, consistency, entropy)``.

    Consistency pulls an anchor and its mined neighbour into the same cluster
    (``-mean log <p(a), p(n)>``, see :func:`neighbor_consistency`); the entropy of the mean
    prediction keeps the clusters from collapsing into one, hence
    ``total = consistency - entropy_weight * entropy``.
    """
    if anchor_logits.shape != neighbor_logits.shape:
        raise ValueError(
            f"anchor and neighbour logits differ: {anchor_logits.shape} vs {neighbor_logits.shape}"
        )
    anchor_probs = anchor_logits.softmax(dim=1)
    neighbor_probs = neighbor_logits.softmax(dim=1)
    agreement = (anchor_probs * neighbor_probs).sum(dim=1)
    consistency = neighbor_consistency(agreement)
    spread = entropy(anchor_probs.mean(dim=0))
    return consistency - entropy_weight * spread, consistency, spread


def confidence_cross_entropy(
    weak_logits: torch.Tensor,
    strong_logits: torch.Tensor,
    threshold: float,
    class_balance: bool = True,
    min_cluster_fraction: float = 0.0,
) -> torch.Tensor:
    """SCAN self-labelling loss: cross-entropy of strong views vs confident weak-view labels.

    Only samples whose weak-view max probability exceeds ``threshold`` contribute, so noisy
    cluster assignments do not reinforce themselves. With ``class_balance`` each class is weighted
    by ``n_confident / count`` (absent classes weight 1), as the official ``ConfidenceBasedCE``,
    so the dominant cluster cannot swallow the others. The weak view only provides targets and
    gets no gradient.

    ``min_cluster_fraction`` (official: 0) also counts, in each cluster predicted in the batch,
    its ``ceil(fraction * size)`` most confident samples, as SPICE's per-cluster reliable-sample
    selection (Niu et al., 2022). A cluster that SCAN left below ``threshold`` everywhere (e.g.
    two similar digits sharing probability) then trains on its own best samples instead of
    losing them, one batch at a time, to the confident clusters.

    Raises :class:`NoConfidentSamplesError` when no sample is confident (instead of a NaN loss).
    """
    if weak_logits.shape != strong_logits.shape or weak_logits.ndim != 2:
        raise ValueError(
            f"weak and strong logits must be (N, C) of equal shape, got "
            f"{weak_logits.shape}, {strong_logits.shape}"
        )
    confidence, targets = weak_logits.detach().softmax(dim=1).max(dim=1)
    mask = confidence > threshold
    if min_cluster_fraction > 0:
        mask |= most_confident_per_cluster(confidence, targets, min_cluster_fraction)
    if not mask.any():
        raise NoConfidentSamplesError(
            f"no sample is confident enough for self-labelling: threshold {threshold}, batch size "
            f"{len(confidence)}, highest confidence {confidence.max().item():.4f}. Lower "
            "selflabel.threshold or train SCAN longer."
        )
    targets = targets[mask]
    weight = None
    if class_balance:
        classes, counts = targets.unique(return_counts=True)
        weight = torch.ones(weak_logits.shape[1], dtype=strong_logits.dtype, device=targets.device)
        weight[classes] = len(targets) / counts.to(weight.dtype)
    return F.cross_entropy(strong_logits[mask], targets, weight=weight, reduction="mean")


def most_confident_per_cluster(
    confidence: torch.Tensor, clusters: torch.Tensor, fraction: float
) -> torch.Tensor:
    """Mask of the ``ceil(fraction * n_c)`` most confident samples of each cluster ``c``."""
    check_min_cluster_fraction(fraction)
    keep = torch.zeros_like(confidence, dtype=torch.bool)
    for cluster in clusters.unique():
        members = (clusters == cluster).nonzero().squeeze(1)
        count = math.ceil(fraction * len(members))
        keep[members[confidence[members].topk(count).indices]] = True
    return keep


def check_min_cluster_fraction(fraction: float) -> None:
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"min_cluster_fraction must be in [0, 1], got {fraction}")
