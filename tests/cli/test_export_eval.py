"""``binarize export`` and ``binarize eval`` through Typer's runner and one real process."""

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
from typer.testing import CliRunner

from binarize import convert, load_checkpoint, save_checkpoint
from binarize.cli.main import app
from binarize.data import get_datasets
from binarize.models import create
from binarize import Provenance, set_provenance

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A converted digits CNN (random weights) saved as a checkpoint."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "digits.pt"
    model = create("digits_cnn").eval()
    set_provenance(model, Provenance(source={"kind": "binarize", "name": "digits_cnn", "kwargs": {}}))
    save_checkpoint(convert(model, example_inputs=(torch.randn(1, 1, 8, 8),)), path)
    return path


def test_export_onnx_and_packed_then_eval_each(tmp_path, checkpoint):
    onnx_path, bnz_path = tmp_path / "d.onnx", tmp_path / "d.bnz"
    result = run("export", checkpoint, "--onnx", onnx_path, "--packed", bnz_path, "--input-shape", "1,1,8,8", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["onnx"]["passed"] and payload["onnx"]["max_abs_diff"] <= 1e-4
    assert payload["onnx"]["top1_agreement"] == 1.0
    assert payload["packed"]["size_bytes"] == bnz_path.stat().st_size
    assert onnx.load(str(onnx_path)).graph.input[0].type.tensor_type.shape.dim[0].dim_param

    # Accuracy on the digits test split must equal evaluating the checkpoint in PyTorch.
    test = get_datasets("digits", augment=False).test
    model = load_checkpoint(checkpoint).eval()
    with torch.no_grad():
        inputs = torch.stack([test[i][0] for i in range(len(test))])
        labels = torch.tensor([int(test[i][1]) for i in range(len(test))])
        expected_accuracy = 100.0 * float((model(inputs).argmax(1) == labels).float().mean())
    for path in (checkpoint, onnx_path, bnz_path):
        evaluated = run("eval", path, "--data", "digits", "--reference", checkpoint, "--repeats", "2", "--json")
        assert evaluated.exit_code == 0, evaluated.output
        numbers = json.loads(evaluated.stdout)
        assert numbers["examples"] == len(test)
        assert numbers["accuracy"] == pytest.approx(expected_accuracy)
        assert numbers["agreement"] == 1.0 and numbers["max_abs_diff"] <= 1e-4
        assert numbers["size_bytes"] == path.stat().st_size
        assert set(numbers["latency_ms"]) >= {"batch1_threads1", "batch32_threads1"}
        assert all(ms > 0 for ms in numbers["latency_ms"].values())
        assert (numbers["layer_ms"] is not None) == (path == bnz_path)
    assert numbers["kind"] == "packed" and len(numbers["layer_ms"]) > 4


def test_eval_random_inputs_without_labels(tmp_path, checkpoint):
    onnx_path = tmp_path / "d.onnx"
    assert run("export", checkpoint, "--onnx", onnx_path, "--input-shape", "1,1,8,8").exit_code == 0
    untrusted = run("eval", onnx_path, "--random", "10", "--batch-size", "4", "--repeats", "1", "--json")
    assert json.loads(untrusted.stdout)["agreement"] is None  # a path read from the file needs --trust
    result = run("eval", onnx_path, "--random", "10", "--batch-size", "4", "--repeats", "1", "--json", "--trust")
    assert result.exit_code == 0, result.output
    numbers = json.loads(result.stdout)
    assert numbers["examples"] == 10 and numbers["accuracy"] is None
    # The export recorded its source, so with --trust eval compares with it without --reference.
    recorded = {prop.key: prop.value for prop in onnx.load(str(onnx_path)).metadata_props}
    assert recorded["binarize.source"] == str(checkpoint.resolve())
    assert numbers["agreement"] is not None and numbers["max_abs_diff"] is not None
    assert set(numbers["latency_ms"]) >= {"batch1_threads1", "batch4_threads1"}
    checkpoint_only = run("eval", checkpoint, "--random", "4", "--repeats", "1", "--json")
    assert json.loads(checkpoint_only.stdout)["agreement"] is None  # a checkpoint records no reference


def test_export_int8_float_layers_reports_agreement(tmp_path, checkpoint):
    path = tmp_path / "q.onnx"
    result = run("export", checkpoint, "--onnx", path, "--input-shape", "1,1,8,8", "--int8-float-layers",
                 "--calibration-data", "digits", "--json")
    assert result.exit_code == 0, result.output
    int8 = json.loads(result.stdout)["onnx"]["int8"]
    assert int8["nodes"] == ["/stem/Conv", "/fc/Gemm"]  # the binary blocks stay ±1
    assert 0 < int8["max_abs_diff"] < 1.0 and 0 < int8["top1_agreement"] <= 1.0
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "{ckpt}"], "nothing to export"),
        (["export", "{ckpt}", "--onnx", "{existing}"], "exists — pass --force"),
        (["export", "{ckpt}", "--onnx", "{tmp}/x.onnx", "--opset", "13"], "opset 13 is too old"),
        (["eval", "{ckpt}"], "exactly one of --data and --random"),
        (["eval", "{ckpt}", "--data", "digits", "--random", "3"], "exactly one of --data and --random"),
        (["eval", "{tmp}/missing.onnx", "--random", "3"], "not found"),
        (["eval", "{existing}", "--random", "3"], "cannot read"),
        (["eval", "{ckpt}", "--data", "nope"], "unknown data set"),
    ],
)
def test_errors_are_one_line(tmp_path, checkpoint, args, message):
    existing = tmp_path / "existing.onnx"
    existing.write_bytes(b"not onnx")
    filled = [a.format(ckpt=checkpoint, existing=existing, tmp=tmp_path) for a in args]
    result = run(*filled)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert existing.read_bytes() == b"not onnx"


def test_real_process_exports_and_evaluates(tmp_path, checkpoint):
    binarize = [str(Path(sys.executable).with_name("binarize"))]
    exported = subprocess.run(
        [*binarize, "export", str(checkpoint), "--onnx", str(tmp_path / "d.onnx"), "--input-shape", "1,1,8,8"],
        capture_output=True, text=True, timeout=300,
    )
    assert exported.returncode == 0, exported.stderr
    assert "max |Δlogit| vs PyTorch" in exported.stderr and exported.stdout == ""
    evaluated = subprocess.run(
        [*binarize, "eval", str(tmp_path / "d.onnx"), "--random", "8", "--repeats", "1", "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["kind"] == "onnx"
