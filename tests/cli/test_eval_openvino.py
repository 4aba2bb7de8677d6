"""``binarize eval FILE.bnz --engine openvino``: agreement with the packed runtime, and refusals."""

import json

import pytest
import torch
from typer.testing import CliRunner

from binarize import convert
from binarize.cli.main import app
from binarize.models import create
from binarize.packed import save_packed

pytest.importorskip("openvino")
runner = CliRunner()


@pytest.fixture(scope="module")
def digits_bnz(tmp_path_factory):
    torch.manual_seed(0)
    x = torch.randn(4, 1, 8, 8)
    model = convert(create("digits_cnn").eval(), example_inputs=(x,)).eval()
    return save_packed(model, tmp_path_factory.mktemp("models") / "digits.bnz", (x,))


def test_eval_on_openvino_agrees_with_the_packed_runtime(digits_bnz):
    result = runner.invoke(app, ["eval", str(digits_bnz), "--engine", "openvino", "--data", "digits",
                                 "--repeats", "2", "--json"])
    assert result.exit_code == 0, result.output
    numbers = json.loads(result.stdout)
    assert numbers["kind"] == "packed on openvino"
    assert numbers["agreement"] == 1.0 and numbers["max_abs_diff"] <= 1e-4
    packed = json.loads(runner.invoke(app, ["eval", str(digits_bnz), "--data", "digits", "--repeats", "2",
                                            "--json"]).stdout)
    assert numbers["accuracy"] == packed["accuracy"]


@pytest.mark.parametrize(("args", "message"), [
    (["--engine", "tensorrt"], "unknown engine 'tensorrt'"),
    (["--engine", "openvino", "--int8-float-layers"], "--int8-float-layers is an option of the packed runtime"),
])
def test_engine_errors_are_one_line(digits_bnz, args, message):
    result = runner.invoke(app, ["eval", str(digits_bnz), "--random", "4", *args])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


def test_openvino_runs_only_packed_files(tmp_path):
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"")
    result = runner.invoke(app, ["eval", str(onnx_file), "--random", "4", "--engine", "openvino"])
    assert result.exit_code == 1 and "--engine openvino runs .bnz files" in result.output
