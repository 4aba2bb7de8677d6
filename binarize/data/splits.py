"""``get_datasets``: a data set spec string → train/test `DataSplits`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
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
            f"use data with {outputs} classes, or a model with {splits.num_classes} outputs",
        )


def spec_names() -> list[str]:
    """The data set kinds ``get_datasets`` understands."""
    return ["digits", "mnist1d", "cifar10:PATH", "imagefolder:PATH"]


def get_datasets(spec: str, *, augment: bool = True, image_size: int | None = None) -> DataSplits:
    """The train/test splits that ``spec`` names.

    Args:
        spec: ``digits`` (offline, shipped in the package: a fixed stratified 80/20 split),
            ``mnist1d`` (generated locally by the ``mnist1d`` package, its standard split),
            ``cifar10:PATH`` (the python-pickle folder ``cifar-10-batches-py`` or its parent) or
            ``imagefolder:PATH`` (``PATH/train/<class>/*`` and ``PATH/val/<class>/*``).
        augment: random crop + flip on the training split (CIFAR-10, ImageFolder).
        image_size: ImageFolder crop size (default 224; evaluation resizes to size·8/7 first).
    """
    kind, sep, location = spec.partition(":")
    if kind == "digits" and not sep:
        from binarize.data.digits import digits_splits

        return digits_splits()
    if kind == "mnist1d" and not sep:
        from binarize.data.mnist1d import mnist1d_splits

        return mnist1d_splits()
    if kind in ("cifar10", "imagefolder") and sep:
        path = Path(location).expanduser()
        if not path.is_dir():
            raise DataError(f"{kind} folder {str(path)!r} does not exist", _LAYOUTS[kind])
        if kind == "cifar10":
            from binarize.data.cifar10 import cifar10_splits

            return cifar10_splits(path, augment=augment, name=spec)
        from binarize.data.imagefolder import imagefolder_splits

        return imagefolder_splits(path, augment=augment, image_size=image_size or 224, name=spec)
    raise DataError(
        f"unknown data set {spec!r}",
        f"use one of: {', '.join(spec_names())} (e.g. --data digits, --data cifar10:~/data/cifar)",
    )


_LAYOUTS = {
    "cifar10": "expected PATH to be 'cifar-10-batches-py' (data_batch_1..5, test_batch) or its parent",
    "imagefolder": "expected PATH/train/<class>/<image> and PATH/val/<class>/<image>",
}
