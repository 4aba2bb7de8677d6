"""ImageFolder trees: ``PATH/train/<class>/<image>`` and ``PATH/val/<class>/<image>``."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from binarize.data.splits import DataSplits
from binarize.errors import DataError

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
TRAIN_DIR = "train"
EVAL_DIRS = ("val", "test")
EXPECTED = "expected PATH/train/<class>/<image> and PATH/val/<class>/<image> (same class folders)"


def imagefolder_splits(path: Path, *, augment: bool, image_size: int, name: str) -> DataSplits:
    """Train with random-resized crop + flip, evaluate with resize (size·8/7) + center crop."""
    eval_dir = next((path / d for d in EVAL_DIRS if (path / d).is_dir()), None)
    if not (path / TRAIN_DIR).is_dir() or eval_dir is None:
        raise DataError(f"{str(path)!r} has no train/ and val/ folders", EXPECTED)
    to_tensor = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)]
    if augment:
        train_transform = [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
    else:
        train_transform = _eval_resize(image_size)
    train = _folder(path / TRAIN_DIR, v2.Compose(train_transform + to_tensor))
    test = _folder(eval_dir, v2.Compose(_eval_resize(image_size) + to_tensor))
    if train.classes != test.classes:
        raise DataError(f"{eval_dir.name}/ and train/ class folders differ in {str(path)!r}", EXPECTED)
    return DataSplits(train, test, len(train.classes), (3, image_size, image_size), name)


def _eval_resize(image_size: int) -> list[v2.Transform]:
    return [v2.Resize(image_size * 8 // 7, antialias=True), v2.CenterCrop(image_size)]


def _folder(path: Path, transform: v2.Transform) -> ImageFolder:
    try:
        return ImageFolder(str(path), transform=transform)
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"no images under {str(path)!r} ({exc})", EXPECTED) from None
