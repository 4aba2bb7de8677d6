"""``binarize indicators MODEL --data digits``: Typer's runner and one real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from binarize.cli.main import app

runner = CliRunner()


def test_indicators_on_a_checkpoint_leave_the_file_unchanged(tmp_path) -> None:
    out = tmp_path / "digits.pt"
    assert runner.invoke(app, ["convert", "binarize:digits_cnn", "-e", "reste", "-o", str(out)]).exit_code == 0
    before = out.read_bytes()
    result = runner.invoke(app, ["indicators", str(out), "--data", "digits", "--steps", "3", "--progress", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["layers"] == ["block1.conv", "block2.conv"] and len(report["steps"]) == 3
    assert report["error"] > 0 and report["stability"] > 0 and report["progress"] == 1.0
    assert out.read_bytes() == before


def test_indicators_convert_a_float_source_and_fail_in_one_line() -> None:
    binarize = Path(sys.executable).with_name("binarize")
    result = subprocess.run(
        [str(binarize), "indicators", "binarize:digits_cnn", "-e", "irnet", "--steps", "2"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "mean e =" in result.stderr and "Σ s =" in result.stderr and result.stdout == ""
    bad = runner.invoke(app, ["indicators", "binarize:digits_cnn", "--data", "mnist"])
    assert bad.exit_code == 1 and bad.output.startswith("error: ") and len(bad.output.strip().splitlines()) == 1
