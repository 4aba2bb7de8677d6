"""ImageFolder trees: ``PATH/train/<class>/<image>`` and ``PATH/val/<class>/<image>``.

torchvision is imported when the data set is loaded, not when it is registered: listing data
sets (CLI help) stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from binarize.data.registry import DataRequest, register
from binarize.data.splits import DataSplits
from binarize.errors import DataError

if TYPE_CHECKING:
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
TRAIN_DIR = "train"
EVAL_DIRS = ("val", "test")
DEFAULT_IMAGE_SIZE = 224
EXPECTED = "expected PATH/train/<class>/<image> and PATH/val/<class>/<image> (same class folders)"


@register("imagefolder", layout=EXPECTED)
def imagefolder_splits(request: DataRequest) -> DataSplits:
    """Train with random-resized crop + flip, evaluate with resize (size·8/7) + center crop, at
    ``request.image_size`` (default 224)."""
    from torchvision.transforms import v2

    assert request.path is not None  # registered with a layout: the registry checked the folder
    path, image_size = request.path, request.image_size or DEFAULT_IMAGE_SIZE
    eval_dir = next((path / d for d in EVAL_DIRS if (path / d).is_dir()), None)
    if not (path / TRAIN_DIR).is_dir() or eval_dir is None:
        raise DataError(f"{str(path)!r} has no train/ and val/ folders", EXPECTED)
    to_tensor = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)]
    if request.augment:
        train_transform = [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
    else:
        train_transform = _eval_resize(image_size)
    train = _folder(path / TRAIN_DIR, v2.Compose(train_transform + to_tensor))
    test = _folder(eval_dir, v2.Compose(_eval_resize(image_size) + to_tensor))
    if train.classes != test.classes:
        raise DataError(f"{eval_dir.name}/ and train/ class folders differ in {str(path)!r}", EXPECTED)
    return DataSplits(train, test, len(train.classes), (3, image_size, image_size), request.spec)


def _eval_resize(image_size: int) -> list[v2.Transform]:
    from torchvision.transforms import v2

    return [v2.Resize(image_size * 8 // 7, antialias=True), v2.CenterCrop(image_size)]


def _folder(path: Path, transform: v2.Transform) -> ImageFolder:
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(path), transform=transform)
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"no images under {str(path)!r} ({exc})", EXPECTED) from None
