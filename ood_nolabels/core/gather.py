"""Per-split outputs back in dataset order, whichever process computed each batch.

Lightning shards every loader with a DistributedSampler, which pads the last shard with repeated
samples. Each batch carries its dataset indices, so after an all-gather the rows are put back in
dataset order and the padded duplicates dropped: every rank ends with the exact full matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def unique_by_index(features: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Rows of ``features`` sorted by dataset index, keeping one row per index."""
    order = torch.argsort(indices, stable=True)
    indices, features = indices[order], features[order]
    keep = torch.ones_like(indices, dtype=torch.bool)
    keep[1:] = indices[1:] != indices[:-1]
    return features[keep]


def gather_features(
    chunks: Sequence[tuple[torch.Tensor, torch.Tensor]],
    all_gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``(features, indices)`` batches of one split -> its features in dataset order.

    With ``all_gather`` (more than one rank) every rank's batches are gathered first; ranks hold
    equally many samples because the DistributedSampler pads, and the padding is dropped here.
    """
    features = torch.cat([f for f, _ in chunks])
    indices = torch.cat([i for _, i in chunks])
    if all_gather is not None:
        features = all_gather(features).flatten(0, 1)
        indices = all_gather(indices).flatten(0, 1)
    return unique_by_index(features, indices).cpu()
