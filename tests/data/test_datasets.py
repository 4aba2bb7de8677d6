"""Data sets: the shipped digits split, CIFAR-10 and ImageFolder layouts made on the fly."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from binarize.data import get_datasets
from binarize.errors import DataError


def test_digits_split_is_fixed_and_stratified() -> None:
    splits = get_datasets("digits")
    assert (len(splits.train), len(splits.test)) == (1433, 364)
    assert splits.num_classes == 10 and splits.input_shape == (1, 8, 8)
    test_labels = torch.stack([label for _, label in splits.test])
    assert torch.bincount(test_labels, minlength=10).min() >= 35  # every class ~1/5 in test
    image, label = splits.train[0]
    assert image.shape == (1, 8, 8) and image.min() == -1.0 and image.max() <= 1.0
    # the first row of the UCI file is a 0 (all classes' first example goes to test)
    assert int(test_labels[0]) == 0
    again = get_datasets("digits")
    assert torch.equal(again.train.tensors[0], splits.train.tensors[0])


def _write_cifar(folder: Path, per_batch: int = 4) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


def test_cifar10_python_layout(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "cifar-10-batches-py")
    splits = get_datasets(f"cifar10:{tmp_path}")
    assert (len(splits.train), len(splits.test), splits.num_classes) == (20, 4, 10)
    image, label = splits.test[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    raw = pickle.loads((tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes())
    expected = (raw[b"data"][0, :1024].reshape(32, 32) / 255.0 - 0.4914) / 0.2470
    assert torch.allclose(image[0], torch.from_numpy(expected).float(), atol=1e-5)
    assert int(label) == raw[b"labels"][0]
    train_image, _ = splits.train[0]
    assert train_image.shape == (3, 32, 32)


def test_cifar10_missing_and_malformed(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        get_datasets(f"cifar10:{tmp_path / 'nowhere'}")
    _write_cifar(tmp_path / "c")
    (tmp_path / "c" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3.*missing.*data_batch_1..5"):
        get_datasets(f"cifar10:{tmp_path / 'c'}")
    (tmp_path / "c" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="malformed"):
        get_datasets(f"cifar10:{tmp_path / 'c'}")


def test_cifar10_refuses_code_in_pickles(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "c")

    class Evil:
        def __reduce__(self):  # noqa: D105
            return (print, ("pwned",))

    (tmp_path / "c" / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataError, match="refused global builtins.print"):
        get_datasets(f"cifar10:{tmp_path / 'c'}")


def _write_imagefolder(root: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(3):
                pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")


def test_imagefolder_layout(tmp_path: Path) -> None:
    _write_imagefolder(tmp_path)
    splits = get_datasets(f"imagefolder:{tmp_path}", image_size=16)
    assert (len(splits.train), len(splits.test), splits.num_classes) == (6, 6, 2)
    assert splits.input_shape == (3, 16, 16)
    image, label = splits.test[5]
    assert image.shape == (3, 16, 16) and int(label) == 1
    assert splits.train[0][0].shape == (3, 16, 16)


def test_imagefolder_and_unknown_errors(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="no train/ and val/"):
        get_datasets(f"imagefolder:{tmp_path}")
    with pytest.raises(DataError, match="unknown data set 'mnist'.*digits"):
        get_datasets("mnist")
    for message in (str(pytest.raises(DataError, get_datasets, "mnist").value),):
        assert "\n" not in message
