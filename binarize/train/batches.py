"""Seeded, shardable, resumable batch order.

Epoch ``e`` visits the permutation DistributedSampler draws from ``seed + e`` (sharded by rank,
so N processes with batch B/N see exactly the batches one process with batch B sees), split into
full batches (the incomplete last one is dropped). Resuming at batch ``k`` skips indices, not
batches: no sample is loaded or augmented twice, so the RNG stream stays the uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from binarize.errors import ConfigError
from binarize.train.distributed import Distributed


class EpochBatches(Sampler[list[int]]):
    """Batch sampler for one process: ``set_epoch(e, start)`` before each epoch."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, ddp: Distributed) -> None:
        self.sampler = DistributedSampler(
            dataset, num_replicas=ddp.world_size, rank=ddp.rank, shuffle=True, seed=seed, drop_last=False
        )
        self.batch_size = batch_size
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.sampler.set_epoch(epoch)
        self.start = start

    def __len__(self) -> int:
        """Full batches in an epoch (the same on every rank)."""
        return len(self.sampler) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        indices = list(self.sampler)
        for batch in range(self.start, len(self)):
            yield indices[batch * self.batch_size : (batch + 1) * self.batch_size]


def training_loader(
    dataset: Dataset, *, batch_size: int, seed: int, ddp: Distributed, num_workers: int, pin_memory: bool
) -> tuple[DataLoader, EpochBatches]:
    """A loader of this process's share of each global batch, and its batch sampler."""
    if batch_size % ddp.world_size:
        raise ConfigError(
            f"batch size {batch_size} does not split evenly over {ddp.world_size} processes",
            f"use a multiple of {ddp.world_size}",
        )
    batches = EpochBatches(dataset, batch_size // ddp.world_size, seed, ddp)
    if len(batches) == 0:
        raise ConfigError(
            f"the training set ({len(dataset)} examples) is smaller than one batch of {batch_size}",
            "use a smaller --batch-size",
        )
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, pin_memory=pin_memory)
    return loader, batches
