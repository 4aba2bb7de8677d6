"""``binarize convert`` / ``summary`` / ``estimators`` through Typer's runner and a real process."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from typer.testing import CliRunner

from binarize.cli.main import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_convert_then_summary_reproduces_bireal_resnet18(tmp_path):
    out = tmp_path / "r18.binarized.pt"
    result = run("convert", "torchvision:resnet18", "--estimator", "ste", "--keep-downsample", "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["output"] == str(out) and report["counts"]["binarized_layers"] == 16
    summary = run("summary", str(out), "--json")
    assert summary.exit_code == 0, summary.output
    totals = json.loads(summary.stdout)["totals"]
    assert round(totals["bops"] / 1e9, 3) == 1.676
    assert round(totals["flops"] / 1e6, 1) == 137.8
    assert round(totals["ops"] / 1e6) == 164
    assert round(totals["float_bits"] / 1e6, 1) == 374.1
    assert round(totals["binarized_bits"] / 1e6, 1) == 33.5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["convert", "torchvision:resnet18", "--estimator", "clipped_st"], "did you mean 'clipped_ste'"),
        (["convert", "torchvision:resnet18", "--estimator-arg", "o_end=3"], "has no hyperparameter 'o_end'"),
        (["convert", "torchvision:resnet18", "--estimator-arg", "oops"], "is not KEY=VALUE"),
        (["convert", "torchvision:resnet18", "--rule", "re:layer[=float"], "does not compile"),
        (["convert", "missing-model.pt"], "not found"),
        (["convert", "madeup:thing"], "not found"),
        (["summary", "torchvision:resnet18", "--input-shape", "1,x"], "not a list of positive integers"),
    ],
)
def test_user_errors_are_one_line_and_exit_1(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = run(*args)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_not_touched_without_force(tmp_path):
    out = tmp_path / "keep.pt"
    out.write_bytes(b"precious")
    result = run("convert", "torchvision:resnet18", "-o", str(out))
    assert result.exit_code == 1 and "--force" in result.stderr
    assert out.read_bytes() == b"precious"


def test_pickled_module_refused_without_trust(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(torchvision.models.get_model("resnet18"), path)
    result = run("convert", str(path))
    assert result.exit_code == 1 and "runs code" in result.stderr and "--trust" in result.stderr
    assert run("convert", str(path), "--trust").exit_code == 0
    assert (tmp_path / "whole.binarized.pt").exists()


def test_state_dict_with_arch_and_default_output_name(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(torchvision.models.get_model("resnet18").state_dict(), path)
    result = run("convert", str(path), "--arch", "torchvision:resnet18", "--input-estimator", "none", "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)["layers"]
    assert all(row["input_estimator"] is None for row in rows)
    assert Path(json.loads(result.stdout)["output"]) == tmp_path / "weights.binarized.pt"


def test_estimators_lists_the_registry():
    result = run("estimators", "--json")
    names = [row["name"] for row in json.loads(result.stdout)["estimators"]]
    assert {"ste", "clipped_ste"} <= set(names)


def test_real_subprocess_prints_report_and_error(tmp_path):
    binary = Path(sys.executable).with_name("binarize")
    ok = subprocess.run([str(binary), "convert", "torchvision:resnet18", "-o", str(tmp_path / "r.pt")], capture_output=True, text=True)
    assert ok.returncode == 0 and "binarized 19/21 layers" in ok.stderr and ok.stdout == ""
    bad = subprocess.run([str(binary), "convert", "torchvision:resnet18", "-o", str(tmp_path / "r.pt")], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["convert", "torchvision:resnet18", "--bogus"], "error: No such option: --bogus — see 'binarize convert --help'"),
        (["convert", "torchvision:resnet18", "--min-fan-in", "abc"], "error: Invalid value for '--min-fan-in'"),
        (["summary"], "error: Missing argument 'SOURCE'."),
    ],
)
def test_usage_errors_are_one_line_and_exit_1_from_the_console_script(args, message):
    binary = Path(sys.executable).with_name("binarize")
    done = subprocess.run([str(binary), *args], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.startswith(message) and done.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "weights", "inputs", "input_args"),
    [
        # no --estimator: the library's defaults (plain ste on inputs multiplied deep nets' gradients by each input's spread)
        ((), "ste", "clipped_ste", {}),
        (("-e", "reste", "--estimator-arg", "o_end=2"), "reste", "reste", {"o_end": "2"}),
        (("-e", "reste", "--input-estimator", "ste"), "reste", "ste", {}),
        (("--input-estimator", "none"), "ste", None, {}),
    ],
)
def test_convert_defaults_are_the_librarys(tmp_path, args, weights, inputs, input_args):
    result = run("convert", "binarize:resnet20", *args, "-o", str(tmp_path / "m.pt"), "--json")
    assert result.exit_code == 0, result.output
    layer = json.loads(result.stdout)["config"]["layer"]
    assert (layer["weight_estimator"], layer["input_estimator"], layer["input_estimator_args"]) == (weights, inputs, input_args)


def test_convert_min_informative_fraction_sets_the_threshold_cut_off(tmp_path):
    # resnet20's first binary conv reads the float stem through BN and ReLU (bypassed): not nearly one-signed,
    # so a cut-off of 0.5 (the largest) is what gives every binary layer a threshold
    counts = {}
    for cut_off in ("0", "0.5"):
        result = run("convert", "binarize:resnet20", "--min-informative-fraction", cut_off, "-o", str(tmp_path / f"{cut_off}.pt"), "--json")
        assert result.exit_code == 0, result.output
        payload = json.loads(result.stdout)
        assert payload["config"]["min_informative_fraction"] == float(cut_off)
        counts[cut_off] = sum(bool(row.get("input_threshold")) for row in payload["layers"])
    assert counts["0"] == 0 and counts["0.5"] > 0
    refused = run("convert", "binarize:resnet20", "--min-informative-fraction", "0.7", "-o", str(tmp_path / "x.pt"))
    assert refused.exit_code == 1 and "outside [0, 0.5]" in refused.stderr
