"""``--activation-policy`` on the command line."""

import json

from typer.testing import CliRunner

from binarize.cli.main import app

runner = CliRunner()


def test_unknown_policy_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "m.pt"
    result = runner.invoke(app, ["convert", "binarize:digits_cnn", "--activation-policy", "clip", "-o", str(out)])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "unknown activation policy 'clip'" in result.output and "bypass, hardtanh, keep" in result.output
    assert not out.exists()


def test_policy_is_recorded_in_the_report_and_the_checkpoint_config(tmp_path):
    out = tmp_path / "m.pt"
    result = runner.invoke(app, ["convert", "binarize:digits_cnn", "--activation-policy", "hardtanh", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["activation_policy"] == "hardtanh" and report["config"]["activation_policy"] == "hardtanh"
