"""The data set registry: ``register`` a loader under a name, ``get_datasets(spec)`` calls it.

A spec is ``NAME`` or, for a data set registered with a folder ``layout``, ``NAME:PATH``.
Unknown names get the did-you-mean `DataError` every binarize registry gives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from binarize._registry import Registry
from binarize.data.splits import DataSplits
from binarize.errors import DataError


@dataclass(frozen=True)
class DataRequest:
    """What a spec asks a loader for.

    Attributes:
        spec: the whole spec, e.g. ``digits`` or ``cifar10:~/data/cifar`` (the `DataSplits` name).
        path: the folder after ``NAME:`` (user-expanded, known to exist); None for a data set
            registered without a layout.
        augment: whether the training split should be augmented (random crops, flips).
        image_size: the input size the caller needs, where the data set can resize (None: its own).
    """

    spec: str
    path: Path | None
    augment: bool
    image_size: int | None


Loader = Callable[[DataRequest], DataSplits]


@dataclass(frozen=True)
class _DataSet:
    load: Loader
    #: what PATH must hold, quoted when it is missing; None: the data set takes no PATH
    layout: str | None


_DATASETS: Registry[_DataSet] = Registry(
    "data set", error=DataError, usage=lambda name, entry: f"{name}:PATH" if entry.layout else name
)


def register(name: str, *, layout: str | None = None) -> Callable[[Loader], Loader]:
    """Decorator registering ``loader(request) -> DataSplits`` as data set ``name``.

    With ``layout`` (a sentence saying what the folder must hold) the data set is named as
    ``NAME:PATH`` and the loader gets ``request.path``, an existing folder. Example::

        import torch
        from torch.utils.data import TensorDataset
        from binarize.data import DataSplits, get_datasets, register

        @register("blobs")
        def blobs(request):
            x, y = torch.randn(100, 1, 8, 8), torch.randint(0, 10, (100,))
            half = TensorDataset(x[:50], y[:50]), TensorDataset(x[50:], y[50:])
            return DataSplits(*half, num_classes=10, input_shape=(1, 8, 8), name=request.spec)

        get_datasets("blobs")  # or `binarize finetune ... --data blobs` in the same process
    """

    def decorate(loader: Loader) -> Loader:
        _DATASETS.register(name)(_DataSet(loader, layout))
        return loader

    return decorate


def spec_names() -> list[str]:
    """The registered data sets as specs are written: ``digits``, ``cifar10:PATH``, …"""
    return _DATASETS.usages()


def get_datasets(spec: str, *, augment: bool = True, image_size: int | None = None) -> DataSplits:
    """The train/test splits that ``spec`` names.

    Args:
        spec: a registered name (`spec_names`), ``NAME:PATH`` where the data set reads a folder.
            Built in: ``digits`` (offline, shipped in the package: a fixed stratified 80/20
            split), ``mnist1d`` (generated locally by the ``mnist1d`` package, its standard
            split), ``cifar10:PATH`` (the python-pickle folder ``cifar-10-batches-py`` or its
            parent) and ``imagefolder:PATH`` (``PATH/train/<class>/*`` and ``PATH/val/<class>/*``).
        augment: random crop + flip on the training split (CIFAR-10, ImageFolder).
        image_size: ImageFolder crop size (default 224; evaluation resizes to size·8/7 first).

    >>> get_datasets("digits").num_classes
    10
    """
    name, sep, location = spec.partition(":")
    entry = _DATASETS.get(name)
    if entry.layout is None:
        if sep:
            raise DataError(f"data set {name!r} takes no PATH (got {spec!r})", f"use --data {name}")
        path = None
    else:
        if not location:
            raise DataError(f"data set {name!r} needs a folder", f"use --data {name}:PATH, {entry.layout}")
        path = Path(location).expanduser()
        if not path.is_dir():
            raise DataError(f"{name} folder {str(path)!r} does not exist", entry.layout)
    return entry.load(DataRequest(spec=spec, path=path, augment=augment, image_size=image_size))
