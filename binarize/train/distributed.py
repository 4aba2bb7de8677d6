"""torchrun support: one `Distributed` context, set up from the environment torchrun writes.

Under ``torchrun --nproc_per_node=N`` each process sees ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE``; the loop then wraps the model in DistributedDataParallel (gloo on CPU, nccl on
CUDA), shards batches with DistributedSampler, reduces metrics, and lets rank 0 alone write.
Without those variables everything is a single process and nothing here touches torch.distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that prints, logs and checkpoints."""
        return self.rank == 0

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` in DistributedDataParallel when distributed, else as is."""
        if not self.enabled:
            return model
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sum of ``values`` over every process."""
        if not self.enabled:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def setup(device: torch.device) -> Distributed:
    """Joins the torchrun process group when launched by torchrun (idempotent)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(
        rank=dist.get_rank(), local_rank=int(os.environ.get("LOCAL_RANK", "0")), world_size=dist.get_world_size()
    )


def local_device(requested: str) -> torch.device:
    """``auto``/``cpu``/``cuda`` → the device of this process (``cuda:LOCAL_RANK`` under torchrun)."""
    use_cuda = requested == "cuda" or (requested == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            from binarize.errors import ConfigError

            raise ConfigError("device cuda was asked for but CUDA is not available", "use --device cpu or auto")
        index = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def teardown() -> None:
    """Leaves the process group (end of a torchrun job)."""
    if dist.is_initialized():
        dist.destroy_process_group()
