"""Where the pseudo-labels of the normal training set come from (the ``pseudo_labels`` group).

Every source is a :class:`PseudoLabelSource` configured with its inputs (``num_clusters: ${K}``,
its recipe or backbone): :meth:`~PseudoLabelSource.preflight` checks what it can before any work,
:meth:`~PseudoLabelSource.labels` returns :class:`PseudoLabels` over the normal training images in
dataset order, with labels in ``[0, K)``. Each source says how ``K=auto`` is chosen for it, on
the features it clusters itself.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from ood_nolabels.core.eigengap import KChoice, eigengap_k
from ood_nolabels.engine.runtime import Runtime

log = logging.getLogger(__name__)

AUTO = "auto"
MIN_IMAGES_PER_CLUSTER = 10


@dataclass(frozen=True)
class PseudoLabels:
    """``labels`` ``(N,)`` in ``[0, num_clusters)``, the source's metrics (clustering quality when
    the normal data has labels), and the curve ``K=auto`` read K from."""

    labels: torch.Tensor
    num_clusters: int
    metrics: dict[str, float] = field(default_factory=dict)
    k_choice: KChoice | None = None


def check_num_clusters(num_clusters: object, num_images: int) -> int:
    """K, the number of clusters: an integer >= 2 that leaves several images per cluster (more
    clusters than images can never work), or a clear error."""
    if isinstance(num_clusters, bool) or not isinstance(num_clusters, int):
        raise ValueError(
            f"K={num_clusters!r}: K (the number of clusters) must be an integer >= 2 or "
            f"'{AUTO}' (chosen from the unlabeled normal data)"
        )
    if num_clusters < 2:
        raise ValueError(f"K (the number of clusters) must be >= 2, got {num_clusters}")
    most = num_images // MIN_IMAGES_PER_CLUSTER
    if num_clusters > num_images and most < 2:
        raise ValueError(
            f"K={num_clusters} clusters but only {num_images} normal training images: too few "
            f"to cluster at all (K=2 needs {2 * MIN_IMAGES_PER_CLUSTER}, at least "
            f"{MIN_IMAGES_PER_CLUSTER} per cluster); add normal training images"
        )
    if num_clusters > num_images:
        raise ValueError(
            f"K={num_clusters} clusters but only {num_images} normal training images: choose "
            f"K <= {most} (at least {MIN_IMAGES_PER_CLUSTER} images per cluster)"
        )
    if num_clusters * MIN_IMAGES_PER_CLUSTER > num_images:
        log.warning(
            "K=%d clusters for %d normal training images leaves fewer than %d images per cluster",
            num_clusters,
            num_images,
            MIN_IMAGES_PER_CLUSTER,
        )
    return num_clusters


class PseudoLabelSource(ABC):
    """A source of pseudo-labels with ``num_clusters`` (K, or ``"auto"``) classes.

    ``auto_k`` (``k_min``, ``k_max``) bounds the K that ``K=auto`` may choose, for sources that
    choose it from an eigengap (:mod:`ood_nolabels.core.eigengap`).
    """

    def __init__(self, num_clusters: int | str, auto_k: Mapping[str, int] | None = None) -> None:
        self.num_clusters = num_clusters
        self.auto_k = dict(auto_k or {"k_min": 2, "k_max": 15})

    def preflight(self, runtime: Runtime) -> None:
        """K checked against the data, before any stage trains (``auto`` is chosen later)."""
        if self.num_clusters != AUTO:
            check_num_clusters(self.num_clusters, runtime.num_normal_images)

    @abstractmethod
    def labels(self, runtime: Runtime) -> PseudoLabels:
        """The pseudo-labels of the normal training images."""

    def resolve_k(
        self, runtime: Runtime, neighbors: Callable[[], torch.Tensor]
    ) -> tuple[int, KChoice | None]:
        """K as given, or for ``K=auto`` the eigengap choice on the kNN graph ``neighbors()``
        (``(N, k)`` mined neighbour indices of the features this source clusters); the choice is
        logged (``auto_k/eigengap`` by K, ``auto_k/K``) and returned for the figure."""
        if self.num_clusters != AUTO:
            return int(self.num_clusters), None
        num_images = runtime.num_normal_images
        k_max = min(self.auto_k["k_max"], num_images - 2)
        choice = eigengap_k(neighbors(), self.auto_k["k_min"], k_max)
        for k, gap in zip(choice.k_values, choice.gaps, strict=True):
            runtime.log_metrics({"auto_k/eigengap": gap}, step=k)
        runtime.log_metrics({"auto_k/K": float(choice.k)})
        curve = ", ".join(
            f"{k}: {g:.4f}" for k, g in zip(choice.k_values, choice.gaps, strict=True)
        )
        log.info("K=auto chose K=%d (eigengap by K: %s)", choice.k, curve)
        if choice.k in (choice.k_values[0], choice.k_values[-1]):
            log.warning(
                "K=auto chose K=%d, a bound of its range [%d, %d]: the eigengap found no clear "
                "number of clusters inside it. Widen pseudo_labels.auto_k (k_min, k_max) or give "
                "K; the curve is in plots/auto_k.png",
                choice.k,
                choice.k_values[0],
                choice.k_values[-1],
            )
        return choice.k, choice


def auto_k_metrics(choice: KChoice | None) -> dict[str, float]:
    """``{"auto_k/K": K, "auto_k/at_bound": 0 or 1}`` for ``metrics.json`` when K was chosen (1:
    the choice is a bound of the range, no clear number of clusters), else nothing."""
    if choice is None:
        return {}
    at_bound = choice.k in (choice.k_values[0], choice.k_values[-1])
    return {"auto_k/K": float(choice.k), "auto_k/at_bound": float(at_bound)}
