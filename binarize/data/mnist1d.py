"""MNIST-1D (Greydanus & Kobak, 2020): 1-D digit signals, generated locally.

The ``mnist1d`` package's own procedural generator (``make_dataset``) runs with the package's
default arguments (5,000 signals of length 40, 10 classes, seed 42, the first 80 % for
training), which is the split its README's baselines use (float: logistic regression 32 %,
MLP 68 %, CNN 94 %, GRU 91 %). Its ``get_dataset`` is never called: that function downloads a
pickle and writes a cache file into the working directory.
"""

from __future__ import annotations

import random
from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import TensorDataset

from binarize.data.registry import DataRequest, register
from binarize.data.splits import DataSplits
from binarize.errors import DataError

NUM_CLASSES = 10
#: the package default (``final_seq_length``): one channel of 40 samples
INPUT_SHAPE = (1, 40)
DEFAULT_SEED = 42


@lru_cache(maxsize=4)
def mnist1d_arrays(seed: int = DEFAULT_SEED) -> dict[str, np.ndarray]:
    """``x``/``y`` (train) and ``x_test``/``y_test`` as the generator makes them for ``seed``.

    The generator seeds numpy's and Python's global RNGs; their states are restored afterwards
    so that generating the data set does not change the caller's random streams.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise DataError("MNIST-1D needs the mnist1d package, which is not installed", "pip install 'binarize[mnist1d]'") from None
    args = get_dataset_args()
    args.seed = int(seed)
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    return {key: np.ascontiguousarray(data[key]) for key in ("x", "y", "x_test", "y_test")}


@register("mnist1d")
def mnist1d_splits(request: DataRequest) -> DataSplits:
    """The standard MNIST-1D split (4,000 train, 1,000 test signals ``[1, 40]``) of the
    package's default seed; it has no augmentation and one length, so ``request`` changes nothing."""
    arrays = mnist1d_arrays(DEFAULT_SEED)

    def tensors(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        signals = torch.from_numpy(x.astype(np.float32)).unsqueeze(1)
        return TensorDataset(signals, torch.from_numpy(y.astype(np.int64)))

    return DataSplits(
        train=tensors(arrays["x"], arrays["y"]),
        test=tensors(arrays["x_test"], arrays["y_test"]),
        num_classes=NUM_CLASSES,
        input_shape=INPUT_SHAPE,
        name=request.spec,
    )
