"""The data set registry: did-you-mean errors through the CLI, and data sets a user registers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset
from typer.testing import CliRunner

from binarize.cli.main import app
from binarize.data import DataRequest, DataSplits, get_datasets, register, registry, spec_names
from binarize.errors import DataError

runner = CliRunner()


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test vanish after it (the CLI help lists the registry as imported)."""
    monkeypatch.setattr(registry._DATASETS, "_entries", dict(registry._DATASETS._entries))


def _one_line_error(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)  # a traceback would raise here
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_builtin_data_sets_are_listed_as_written() -> None:
    assert spec_names() == ["digits", "mnist1d", "cifar10:PATH", "imagefolder:PATH"]


def test_a_misspelled_data_name_gets_did_you_mean_through_the_cli() -> None:
    assert _one_line_error("indicators", "binarize:digits_cnn", "--data", "digts") == (
        "error: unknown data set 'digts' — did you mean 'digits'? "
        "valid data sets: digits, mnist1d, cifar10:PATH, imagefolder:PATH"
    )
    # a folder data set is suggested as it is written, with its PATH
    assert "did you mean 'cifar10:PATH'?" in _one_line_error("indicators", "binarize:digits_cnn", "--data", "cifar:x")


def test_a_path_missing_or_unexpected_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data set 'cifar10' needs a folder — use --data cifar10:PATH, expected PATH"):
        get_datasets("cifar10")
    with pytest.raises(DataError, match=r"data set 'digits' takes no PATH \(got 'digits:/x'\) — use --data digits"):
        get_datasets("digits:/x")
    assert "imagefolder folder" in _one_line_error("indicators", "binarize:digits_cnn", "--data", f"imagefolder:{tmp_path / 'no'}")


def _blobs(request: DataRequest) -> DataSplits:
    """64 random 8×8 images of 10 classes: the digits model's input."""
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.randn(64, 1, 8, 8, generator=generator), torch.arange(64) % 10
    return DataSplits(TensorDataset(images[:48], labels[:48]), TensorDataset(images[48:], labels[48:]),
                      num_classes=10, input_shape=(1, 8, 8), name=request.spec)


@pytest.mark.usefixtures("scratch_registry")
def test_a_user_data_set_is_used_by_name_in_the_api_and_the_cli() -> None:
    assert register("blobs")(_blobs) is _blobs
    assert spec_names()[-1] == "blobs"
    splits = get_datasets("blobs")
    assert (len(splits.train), len(splits.test), splits.name) == (48, 16, "blobs")
    assert torch.equal(splits.test[0][0], _blobs(DataRequest("blobs", None, True, None)).test[0][0])
    result = runner.invoke(app, ["indicators", "binarize:digits_cnn", "--data", "blobs", "--steps", "2", "--json"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["data"] == "blobs"
    with pytest.raises(ValueError, match="data set 'blobs' is already registered"):
        register("blobs")(_blobs)


@pytest.mark.usefixtures("scratch_registry")
def test_a_user_folder_data_set_gets_the_checked_path_and_the_request(tmp_path: Path) -> None:
    seen: list[DataRequest] = []

    @register("npz", layout="expected PATH/data.npz")
    def npz(request: DataRequest) -> DataSplits:
        seen.append(request)
        return _blobs(request)

    assert spec_names()[-1] == "npz:PATH"
    assert get_datasets(f"npz:{tmp_path}", augment=False, image_size=16).name == f"npz:{tmp_path}"
    assert seen == [DataRequest(spec=f"npz:{tmp_path}", path=tmp_path, augment=False, image_size=16)]
    with pytest.raises(DataError, match=r"npz folder '.*nowhere' does not exist — expected PATH/data.npz"):
        get_datasets(f"npz:{tmp_path / 'nowhere'}")
    assert len(seen) == 1  # the loader never sees a missing folder
