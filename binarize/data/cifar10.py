"""CIFAR-10 from its standard python folder (``cifar-10-batches-py``), read without running code.

The files are pickles; they are read with an unpickler that only rebuilds dicts, lists, bytes
and NumPy arrays, so a hostile file cannot execute anything. torchvision is imported when the
data set is loaded, not when it is registered: listing data sets (CLI help) stays fast.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from binarize.data.registry import DataRequest, register
from binarize.data.splits import DataSplits
from binarize.errors import DataError

if TYPE_CHECKING:
    from torchvision.transforms import v2

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
EXPECTED = f"expected PATH to be {FOLDER}/ (data_batch_1..5 and test_batch: the python version of CIFAR-10) or its parent"


class CIFAR10(Dataset):
    """Images ``[N, 3, 32, 32]`` (uint8) and labels, with a transform applied per item."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: v2.Transform) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index]), self.labels[index]


@register("cifar10", layout=EXPECTED)
def cifar10_splits(request: DataRequest) -> DataSplits:
    """Reads ``request.path`` (the batches folder or its parent) into train/test splits."""
    from torchvision.transforms import v2

    assert request.path is not None  # registered with a layout: the registry checked the folder
    folder = request.path / FOLDER if (request.path / FOLDER).is_dir() else request.path
    normalize = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)]
    augmentation = [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()] if request.augment else []
    return DataSplits(
        train=CIFAR10(*_read_batches(folder, TRAIN_FILES), v2.Compose(augmentation + normalize)),
        test=CIFAR10(*_read_batches(folder, (TEST_FILE,)), v2.Compose(normalize)),
        num_classes=10,
        input_shape=(3, 32, 32),
        name=request.spec,
    )


def _read_batches(folder: Path, files: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for file in files:
        batch = _read_batch(folder / file)
        images.append(batch[0])
        labels.append(batch[1])
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)).long()


def _read_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    if not file.is_file():
        raise DataError(f"CIFAR-10 file {str(file)!r} is missing", EXPECTED)
    try:
        with file.open("rb") as stream:
            batch = _SafeUnpickler(stream, encoding="bytes").load()
        data = np.asarray(_field(batch, "data"), dtype=np.uint8)
        labels = np.asarray(_field(batch, "labels"), dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
            raise ValueError(f"data {data.shape} and {len(labels)} labels")
        if len(labels) and (labels.min() < 0 or labels.max() > 9):
            raise ValueError("labels outside 0..9")
    except (pickle.UnpicklingError, ValueError, TypeError, KeyError, EOFError, AttributeError) as exc:
        raise DataError(f"CIFAR-10 file {str(file)!r} is malformed ({exc})", EXPECTED) from None
    return data.reshape(-1, 3, 32, 32), labels


def _field(batch: Any, key: str) -> Any:
    if not isinstance(batch, dict):
        raise ValueError("not a dict of data and labels")
    if key.encode() in batch:
        return batch[key.encode()]
    return batch[key]


class _SafeUnpickler(pickle.Unpickler):
    """Only NumPy array reconstruction is allowed; any other global is refused.

    ``_codecs.encode`` is how protocol-2 pickles written by Python 3 store array bytes.
    """

    _ALLOWED = {
        ("_codecs", "encode"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        return super().find_class(module, name)
