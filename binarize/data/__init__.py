"""Data sets for fine-tuning: the offline default (``digits``), MNIST-1D (generated locally),
CIFAR-10 folders, ImageFolder trees, and any a user registers.

``get_datasets(spec)`` is the one entry point; ``spec`` is a registered name such as ``digits``
or ``mnist1d``, or ``NAME:PATH`` for one that reads a folder (``cifar10:PATH``,
``imagefolder:PATH``). ``register(name)`` adds a data set. A missing, malformed or misspelled
data set raises a one-line `DataError` that says what was expected.
"""

from binarize.data.registry import DataRequest, get_datasets, register, spec_names
from binarize.data.splits import DataSplits, check_fits

# Importing the loader modules registers them, in the order `spec_names` lists them.
from binarize.data import digits  # noqa: F401  isort: skip
from binarize.data import mnist1d  # noqa: F401  isort: skip
from binarize.data import cifar10  # noqa: F401  isort: skip
from binarize.data import imagefolder  # noqa: F401  isort: skip

__all__ = ["DataRequest", "DataSplits", "check_fits", "get_datasets", "register", "spec_names"]
