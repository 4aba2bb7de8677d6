"""The offline default: UCI handwritten digits (8×8, 10 classes), shipped in the package.

Licence and attribution: ``DIGITS_LICENSE.txt`` beside this file (CC BY 4.0).
"""

from __future__ import annotations

import gzip
from importlib import resources

import numpy as np
import torch
from torch.utils.data import TensorDataset

from binarize.data.registry import DataRequest, register
from binarize.data.splits import DataSplits
from binarize.errors import DataError

#: one test example in every TEST_EVERY of each class: a stratified 80/20 split that depends on
#: nothing but the file (no RNG), so it is the same on every machine and torch version.
TEST_EVERY = 5
INPUT_SHAPE = (1, 8, 8)
NUM_CLASSES = 10


def digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 examples: images ``[N, 1, 8, 8]`` scaled to [-1, 1] and labels ``[N]``."""
    try:
        with resources.files("binarize.data").joinpath("digits.csv.gz").open("rb") as raw:
            table = np.loadtxt(gzip.open(raw), delimiter=",", dtype=np.float32)
    except (OSError, ValueError) as exc:
        raise DataError(f"the packaged digits file is unreadable ({exc})", "reinstall binarize") from None
    pixels = torch.from_numpy(table[:, :-1]).reshape(-1, *INPUT_SHAPE)
    labels = torch.from_numpy(table[:, -1]).long()
    return pixels / 8.0 - 1.0, labels


def test_mask(labels: torch.Tensor) -> torch.Tensor:
    """The fixed split: True for every TEST_EVERY-th example of each class, in file order."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    for label in labels.unique():
        where = (labels == label).nonzero().flatten()
        mask[where[::TEST_EVERY]] = True
    return mask


@register("digits")
def digits_splits(request: DataRequest) -> DataSplits:
    """The digits data set with its fixed stratified split (1433 train, 364 test); it has no
    augmentation and one size, so nothing in ``request`` changes it."""
    images, labels = digits_tensors()
    mask = test_mask(labels)
    return DataSplits(
        train=TensorDataset(images[~mask], labels[~mask]),
        test=TensorDataset(images[mask], labels[mask]),
        num_classes=NUM_CLASSES,
        input_shape=INPUT_SHAPE,
        name=request.spec,
    )
