"""MNIST-1D: generated locally by the mnist1d package (never downloaded), deterministic."""

from __future__ import annotations

import random
import socket
import sys

import numpy as np
import pytest

from binarize.data import get_datasets
from binarize.data.mnist1d import mnist1d_arrays
from binarize.errors import DataError

pytest.importorskip("mnist1d")


def test_generation_is_offline_deterministic_and_the_standard_split(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("MNIST-1D generation tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.chdir(tmp_path)  # the package's download path writes ./mnist1d_data.pkl
    mnist1d_arrays.cache_clear()
    np.random.seed(7)
    random.seed(7)
    numpy_before, python_before = np.random.get_state()[1].copy(), random.getstate()
    first = mnist1d_arrays(42)
    # the caller's RNG streams are untouched
    assert np.array_equal(np.random.get_state()[1], numpy_before) and random.getstate() == python_before
    mnist1d_arrays.cache_clear()
    second = mnist1d_arrays(42)
    assert first is not second
    for key in ("x", "y", "x_test", "y_test"):
        assert np.array_equal(first[key], second[key]), key
    assert list(tmp_path.iterdir()) == []  # nothing cached or downloaded
    # the package's default arguments: 5,000 signals of 40 samples, 80/20 split, seed 42
    assert first["x"].shape == (4000, 40) and first["x_test"].shape == (1000, 40)
    assert first["y"][:10].tolist() == [2, 6, 4, 5, 6, 6, 6, 0, 3, 1]
    assert np.bincount(first["y_test"]).tolist() == [102, 104, 89, 106, 106, 98, 99, 96, 98, 102]
    assert first["x"][0, :4] == pytest.approx([-0.33200567, -0.47191037, -0.77869708, -1.00974083], abs=1e-7)


def test_get_datasets_mnist1d_gives_float_signals():
    splits = get_datasets("mnist1d")
    assert (len(splits.train), len(splits.test)) == (4000, 1000)
    assert splits.num_classes == 10 and splits.input_shape == (1, 40) and splits.name == "mnist1d"
    signal, label = splits.train[0]
    assert signal.shape == (1, 40) and str(signal.dtype) == "torch.float32" and int(label) == 2


def test_missing_package_is_one_line_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "mnist1d", None)
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(DataError) as error:
        mnist1d_arrays.__wrapped__(42)  # past the cache, which may hold the arrays already
    assert "pip install 'binarize[mnist1d]'" in str(error.value) and "\n" not in str(error.value)
