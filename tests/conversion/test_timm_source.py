"""``timm:NAME`` as a model source, with ``--weights`` and checkpoint replay."""

import json
import sys

import pytest
import torch
from binarize.cli.main import app
from typer.testing import CliRunner

from binarize import load_checkpoint
from binarize.errors import ModelSourceError
from binarize.sources import build_architecture
from binarize import provenance_of

runner = CliRunner()


def test_timm_resnet18_converts_through_the_cli_with_weights(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False)
    for value in model.state_dict().values():  # weights unlike a fresh model's
        if value.is_floating_point():
            value.add_(0.01 * torch.randn_like(value))
    weights = tmp_path / "r18.pth"
    torch.save(model.state_dict(), weights)
    out = tmp_path / "r18.pt"
    args = ["convert", "timm:resnet18", "--weights", str(weights), "--input-shape", "2,3,32,32", "-o", str(out), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["counts"]["binarized_layers"] == 19 and len(report["activation_rewrites"]) == 19
    assert all(0.0 < p < 1.0 for p in report["input_signs"].values())
    binary = load_checkpoint(out)  # replays timm:resnet18 and the plan
    assert provenance_of(binary).source["kind"] == "timm"
    assert torch.equal(binary.get_submodule("layer1.0.conv1").weight, model.layer1[0].conv1.weight)
    assert torch.equal(binary.get_submodule("fc").weight, model.fc.weight)


def test_timm_unknown_name_suggests_the_closest():
    pytest.importorskip("timm")
    with pytest.raises(ModelSourceError, match="did you mean timm:resnet18"):
        build_architecture("timm:resnet1")


def test_timm_missing_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(ModelSourceError, match=r"pip install 'binarize\[timm\]'"):
        build_architecture("timm:resnet18")
    result = runner.invoke(app, ["convert", "timm:resnet18", "-o", "never.pt"])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "binarize[timm]" in result.output
