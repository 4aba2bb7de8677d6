"""``binarize finetune`` and ``binarize demo`` through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from binarize.loading import load_checkpoint
from binarize.cli.main import app
from binarize.nn.layers import BinaryLayer

RECIPE = Path(__file__).parents[2] / "binarize" / "recipes" / "digits_demo.toml"
runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_finetune_a_float_zoo_model_with_a_recipe_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _invoke("finetune", "--recipe", str(RECIPE), "--epochs", "1", "--batch-size", "128",
                     "--bn-reestimate", "2", "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["config"]["epochs"] == 1 and summary["config"]["lr"] == 1e-3  # flag over recipe
    assert summary["reference_top1"] == 98.35 and summary["data"] == "digits"
    assert summary["steps"] == 1433 // 128 and 0 <= summary["final"]["top1"] <= 100
    assert {p.name for p in out.iterdir()} >= {"last.pt", "best.pt", "metrics.jsonl"}
    model = load_checkpoint(out / "last.pt")
    layers = [m for m in model.modules() if isinstance(m, BinaryLayer)]
    assert len(layers) == 2 and all(m.weight_estimator.name == "reste" for m in layers)

    again = _invoke("finetune", "--recipe", str(RECIPE), "-o", str(out))
    assert again.exit_code == 1 and f"holds an earlier run — continue it with --resume {out / 'last.pt'}" in again.output
    resumed = _invoke("finetune", "--resume", str(out / "last.pt"), "--json")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["steps"] == summary["steps"]  # finished run: nothing more to do
    changed = _invoke("finetune", "--resume", str(out / "last.pt"), "--lr", "0.1")
    assert changed.exit_code == 1 and "--lr given with --resume" in changed.output


def test_finetune_errors_are_one_line(tmp_path: Path) -> None:
    result = _invoke("finetune", "binarize:digits_cnn", "--data", "mnist", "-o", str(tmp_path / "x"))
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: unknown data set 'mnist' — did you mean 'mnist1d'? "
        "valid data sets: digits, mnist1d, cifar10:PATH, imagefolder:PATH"
    ]
    result = _invoke("finetune", "binarize:digits_cnn", "--optimizer", "lamb", "-o", str(tmp_path / "y"))
    assert result.exit_code == 1 and "error: optimizer 'lamb' is not supported" in result.output
    result = _invoke("finetune", "binarize:digits_cnn", "--estimator", "rest", "-o", str(tmp_path / "z"))
    assert result.exit_code == 1 and "did you mean 'reste'" in result.output


def test_finetune_subprocess_reports_a_bad_recipe(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[finetune]\nepochs = 0\n")
    done = subprocess.run([str(Path(sys.executable).with_name("binarize")), "finetune", "--recipe", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: recipe {bad}: epochs=0 is invalid — use a number ≥ 1"


@pytest.mark.slow
def test_demo_prints_the_table_and_meets_the_target() -> None:
    result = _invoke("demo", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["stage"]: row for row in json.loads(result.stdout)["rows"]}
    float_top1 = rows["float"]["top1"]
    assert float_top1 > 95 and rows["binary (reste), fine-tuned"]["top1"] >= float_top1 - 3
    assert rows["binary (reste), fine-tuned"]["size_bytes"] * 4 < rows["float"]["size_bytes"]
    deployed = {row["form"]: row for row in json.loads(result.stdout)["deployment"]}
    assert len(deployed) == 3 and all(row["agreement"] == 1.0 for row in deployed.values())
    assert all(row["top1"] == rows["binary (reste), fine-tuned"]["top1"] for row in deployed.values())
    assert deployed["packed .bnz (ONNX + 1-bit kernels)"]["size_bytes"] * 3 < deployed["ONNX (onnxruntime)"]["size_bytes"]
