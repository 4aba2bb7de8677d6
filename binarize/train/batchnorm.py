"""BatchNorm re-estimation: recompute running statistics for the final binary weights.

The running means and variances tracked during training mix statistics of weights that changed
as signs flipped; one pass with the final weights gives the statistics the model will see.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, Dataset


@torch.no_grad()
def reestimate_batchnorm(
    model: nn.Module, data: Dataset, *, batches: int, batch_size: int, device: torch.device
) -> int:
    """Resets every BatchNorm's statistics and re-accumulates them (a cumulative average)
    over the first ``batches`` batches of ``data`` in order. Returns the number of BN layers."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not norms or batches <= 0:
        return 0
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average: every batch counts the same
    was_training = model.training
    model.train()
    for index, (inputs, _) in enumerate(DataLoader(data, batch_size=batch_size)):
        if index >= batches:
            break
        model(inputs.to(device))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.train(was_training)
    return len(norms)
