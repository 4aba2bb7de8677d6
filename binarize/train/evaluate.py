"""``evaluate``: top-1, top-5 and loss of a classifier on a data set."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from binarize.train.distributed import Distributed


@dataclass(frozen=True)
class EvalResult:
    """Accuracies in percent, mean cross-entropy loss, and the number of examples."""

    top1: float
    top5: float
    loss: float
    count: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    ddp: Distributed | None = None,
) -> EvalResult:
    """Evaluates ``model`` in eval mode (its training mode is restored afterwards).

    Under torchrun (``ddp``) each process scores every N-th example and the sums are reduced,
    so every process returns the result over the whole set.
    """
    ddp = ddp or Distributed()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    shard = Subset(data, range(ddp.rank, len(data), ddp.world_size)) if ddp.enabled else data
    was_training = model.training
    model.eval()
    correct1 = correct5 = loss_sum = 0.0
    for inputs, targets in DataLoader(shard, batch_size=batch_size):
        inputs, targets = inputs.to(device), targets.to(device)
        logits = model(inputs).float()
        loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == targets[:, None]
        correct1 += hits[:, 0].sum().item()
        correct5 += hits.any(dim=1).sum().item()
    model.train(was_training)
    correct1, correct5, loss_sum, count = ddp.sum([correct1, correct5, loss_sum, float(len(shard))], device)
    count = max(count, 1.0)
    return EvalResult(100.0 * correct1 / count, 100.0 * correct5 / count, loss_sum / count, int(count))
