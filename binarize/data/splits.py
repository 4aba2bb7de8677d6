"""What a data set is (`DataSplits`) and whether a model can use it (`check_fits`).

Loaders build `DataSplits`; `binarize.data.registry` finds the loader a spec names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from binarize._probe import forward_once
from binarize.errors import DataError, first_line


@dataclass(frozen=True)
class DataSplits:
    """A train and a test set with what a model needs to know about them.

    Attributes:
        train: the training set (augmented where the data set has augmentations).
        test: the evaluation set (deterministic transforms only).
        num_classes: number of labels.
        input_shape: one example's shape, ``(C, H, W)`` or ``(C, L)``.
        name: the spec it was made from, e.g. ``digits`` or ``cifar10:/data/cifar``.
    """

    train: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, ...]
    name: str


def check_fits(model: Callable[[torch.Tensor], Any], splits: DataSplits) -> None:
    """Refuses, as one `DataError`, data the model cannot be trained or scored on: examples it
    cannot take (channels, size) or a class count other than its number of outputs (labels
    past the last output crash; fewer classes than outputs would train silently on a wrong task)."""
    example = splits.test[0][0].unsqueeze(0)
    try:
        output = forward_once(model, example)
    except Exception as exc:  # models fail on a wrong input with many error types
        raise DataError(
            f"{splits.name} examples ({'×'.join(map(str, splits.input_shape))}) do not fit the model ({first_line(exc, 120)})",
            "use the data the model was built for, or a model built for this data",
        ) from None
    outputs = output.shape[-1] if isinstance(output, torch.Tensor) else None
    if outputs is not None and outputs != splits.num_classes:
        raise DataError(
            f"{splits.name} has {splits.num_classes} classes but the model has {outputs} outputs",
            f"use data with {outputs} classes, or a model with {splits.num_classes} outputs "
            f"(--num-classes {splits.num_classes} builds a named architecture so)",
        )
