"""``binarize estimators [--plot]`` and ``binarize convert --estimator NAME --estimator-arg``."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from binarize import load_checkpoint
from binarize.cli.main import app
from binarize.estimators import names

runner = CliRunner()


def test_estimators_json_lists_papers_hparams_and_paper_defaults() -> None:
    result = runner.invoke(app, ["estimators", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)["estimators"]}
    assert list(rows) == names()
    assert rows["reste"]["hparams"] == {"o_end": 3.0, "t": 1.5, "m": 0.1}
    assert rows["reste"]["default_scaling"] == "tensor_mean"
    assert (rows["irnet"]["default_weight_transform"], rows["irnet"]["default_scaling"]) == ("libra_pb", "power_of_two")
    assert rows["adaste"]["hparams"]["official_asymmetry"] is False and rows["adaste"]["default_scaling"] == "none"
    assert all(row["paper"] for row in rows.values())


def test_estimators_plot_writes_a_png(tmp_path) -> None:
    out = tmp_path / "estimators.png"
    result = runner.invoke(app, ["estimators", "--plot", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(result.stdout)["plot"] == str(out)
    again = runner.invoke(app, ["estimators", "--plot", str(out)])
    assert again.exit_code == 1 and "--force" in again.output


def test_plot_curves_follow_the_schedule() -> None:
    from binarize.analysis.plots import estimator_curves, is_scheduled

    assert [n for n in names() if is_scheduled(n)] == ["reste", "irnet", "adaste"]
    start, end = estimator_curves("reste", 0.0), estimator_curves("reste", 1.0)
    middle = len(start["x"]) // 2
    assert abs(start["x"][middle]) < 1e-12
    assert start["phi"][middle] == pytest.approx(1.0) and end["phi"][middle] == pytest.approx(10 ** (2 / 3) / 1.0, rel=1e-9)


@pytest.mark.parametrize("name", names())
def test_convert_accepts_every_estimator_and_its_args(tmp_path, name: str) -> None:
    out = tmp_path / "model.pt"
    args = {"reste": ["o_end=2.5"], "irnet": ["t_min=0.001"], "adaste": ["official_asymmetry=true"],
            "dste": ["s=0.5"], "psa": ["s=2"], "clipped_ste": [], "ste": [], "approxsign": []}[name]
    command = ["convert", "binarize:digits_cnn", "--estimator", name, "-o", str(out), "--json"]
    for arg in args:
        command += ["--estimator-arg", arg]
    if name == "psa":  # the digits network has BN and residual adds between its binary convs
        result = runner.invoke(app, command)
        assert result.exit_code == 1
        assert "error: psa cannot pass node 'block1.bn'" in result.output and "use --estimator dste" in result.output
        return
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    model = load_checkpoint(out)
    layer = model.get_submodule("block1.conv")
    assert layer.weight_estimator.name == name
    for arg in args:
        key, value = arg.split("=")
        assert str(getattr(layer.weight_estimator, key)).lower() == value.lower() or float(getattr(layer.weight_estimator, key)) == float(value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--estimator", "rest"], "error: unknown estimator 'rest' — did you mean 'reste'? valid estimators: ste,"),
        (["--estimator", "reste", "--estimator-arg", "o_ed=3"], "has no hyperparameter 'o_ed' — did you mean 'o_end'? valid keys: o_end, t, m"),
        (["--estimator", "reste", "--estimator-arg", "o_end=abc"], "reste.o_end='abc' is not a float — give a float like o_end=3.0"),
        (["--estimator", "psa", "--estimator-arg", "objective=softmax"], "psa objective 'softmax' is unknown — use one of identity, log_softmax"),
    ],
)
def test_bad_estimator_names_and_args_are_one_line_errors(tmp_path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["convert", "binarize:digits_cnn", "-o", str(tmp_path / "m.pt"), *args])
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_psa_checkpoint_round_trip_relinks_the_chain(tmp_path) -> None:
    from torch import nn

    from binarize import BinarizeConfig, LayerConfig, convert, save_checkpoint

    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 16), nn.Flatten(), nn.Linear(16, 4))
    config = BinarizeConfig(layer=LayerConfig(weight_estimator="psa", input_estimator="psa"), keep_last=False, min_fan_in=0)
    binary = convert(model, config)
    path = save_checkpoint(binary, tmp_path / "psa.pt")
    loaded = load_checkpoint(path, model=model).train()
    estimator = loaded.get_submodule("3").input_estimator
    assert estimator._producer is loaded.get_submodule("1") and estimator._is_output
    x = torch.randn(5, 8)
    torch.manual_seed(0)
    loaded(x).sum().backward()
    assert loaded.get_submodule("0").weight.grad.abs().sum() > 0
