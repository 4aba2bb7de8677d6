"""``--num-classes``: a named architecture built for the user's class count, through every
step (convert → checkpoint → finetune), and refused where the model file has its own head."""

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

import binarize
from binarize.cli.main import app

from test_cli_errors import assert_one_line, files_in

runner = CliRunner()


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def _imagefolder(root: Path, classes: int, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / f"c{c}" / f"{i}.png")
    return root


def test_torchvision_model_with_the_data_sets_class_count_converts_saves_and_trains(tmp_path):
    converted = tmp_path / "r18.pt"
    result = run("convert", "torchvision:resnet18", "--num-classes", 3, "--input-shape", "1,3,32,32", "-o", converted)
    assert result.exit_code == 0, result.output
    model = binarize.load_model(converted)
    assert binarize.provenance_of(model).source["kwargs"] == {"num_classes": 3}
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 3)

    data = _imagefolder(tmp_path / "images", classes=3)
    result = run("finetune", converted, "--data", f"imagefolder:{data}", "--epochs", 1, "-b", 3,
                 "-o", tmp_path / "run", "--json")
    assert result.exit_code == 0, result.output
    history = json.loads(result.stdout)["history"]
    assert np.isfinite(history[-1]["train_loss"])


def test_a_class_count_mismatch_names_the_option(tmp_path):
    data = _imagefolder(tmp_path / "images", classes=2)
    result = run("finetune", "binarize:resnet20", "--data", f"imagefolder:{data}", "--epochs", 1, "-o", tmp_path / "run")
    assert_one_line(result, "has 2 classes but the model has 10 outputs", "--num-classes 2")
    assert not (tmp_path / "run").exists()


def test_num_classes_is_refused_for_a_file_that_holds_a_whole_model(tmp_path):
    converted = tmp_path / "digits.pt"
    assert run("convert", "binarize:digits_cnn", "-o", converted).exit_code == 0
    before = files_in(tmp_path)
    result = run("convert", converted, "--num-classes", 4, "-o", tmp_path / "again.pt")
    assert_one_line(result, "num_classes applies to a named architecture", "--num-classes")
    assert files_in(tmp_path) == before


def test_a_state_dict_with_its_architecture_built_for_its_class_count(tmp_path):
    trained = binarize.models.create("digits_cnn", num_classes=4)
    path = tmp_path / "state.pt"
    torch.save(trained.state_dict(), path)
    loaded = binarize.load_model(path, arch="binarize:digits_cnn", num_classes=4).eval()
    example = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(loaded(example), trained.eval()(example), rtol=0, atol=0)
