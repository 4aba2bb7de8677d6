"""Data sets for fine-tuning: the offline default (``digits``), MNIST-1D (generated locally),
CIFAR-10 folders, ImageFolder trees.

``get_datasets(spec)`` is the one entry point; ``spec`` is ``digits``, ``mnist1d``, ``cifar10:PATH`` or
``imagefolder:PATH``. A missing or malformed data set raises a one-line `DataError` that says
what layout was expected.
"""

from binarize.data.splits import DataSplits, check_fits, get_datasets, spec_names

__all__ = ["DataSplits", "check_fits", "get_datasets", "spec_names"]
