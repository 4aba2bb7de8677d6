"""Issue #12 §5: a CLI that behaves like the tools its users know — -h and --version, the usual
placeholders, repeatable options marked, full option names at 80 columns, valid choices in
the help, installed recipes by name, and --json that leaves stderr quiet."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from binarize.cli.main import app
from binarize.data import spec_names
from binarize.estimators import names as estimator_names
from binarize.nn.scaling import scaling_names
from binarize.train.config import OPTIMIZERS, SCHEDULES
from binarize.train.recipe import load_recipe, recipe_names, recipe_path

runner = CliRunner()
COMMANDS = ("convert", "summary", "estimators", "indicators", "export", "eval", "finetune", "demo")


def help_of(*command: str) -> str:
    result = runner.invoke(app, [*command, "-h"], terminal_width=80, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.stdout


def click_command(name: str):
    group = typer.main.get_command(app)
    return group.get_command(typer.Context(group), name)


def test_short_help_and_version():
    assert "Commands:" in help_of() and "convert" in help_of()
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"binarize {version('binarize')}"
    done = subprocess.run([str(Path(sys.executable).with_name("binarize")), "-V"], check=False, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"binarize {version('binarize')}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_name_is_visible_at_80_columns_with_usual_placeholders(command):
    text = help_of(command)
    assert all(len(line) <= 80 for line in text.splitlines())
    for param in click_command(command).params:
        for name in [*param.opts, *param.secondary_opts]:
            if name.startswith("-"):
                assert name in text.replace("\n", " "), f"{name} not shown in full"
    assert "<str>" not in text and "<int>" not in text and "<path>" not in text and "{" not in text.split("\n")[0]


def test_placeholders_and_repeatable_options():
    text = " ".join(help_of("convert").split())
    assert "convert [OPTIONS] SOURCE" in text
    assert "--min-fan-in INTEGER" in text and "-o, --output PATH" in text and "--input-shape TEXT" in text
    assert "--estimator-arg KEY=VALUE" in text and "--rule PATTERN=ACTION" in text
    assert text.count("[repeatable]") == 3  # --estimator-arg, --input-estimator-arg, --rule
    assert "--lr FLOAT" in " ".join(help_of("finetune").split())


def test_valid_choices_are_listed_in_the_help():
    convert = " ".join(help_of("convert").split())
    assert f"One of: {', '.join(estimator_names())}." in convert
    assert f"One of: {', '.join(scaling_names())}." in convert
    finetune = " ".join(help_of("finetune").split())
    for names in (OPTIMIZERS, SCHEDULES, spec_names(), estimator_names()):
        assert f"One of: {', '.join(names)}." in finetune
    assert f"One of: {', '.join(spec_names())}." in " ".join(help_of("eval").split())


def test_recipes_are_installed_with_the_package_and_found_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the source tree: the installed files are found
    assert "reste_resnet20_cifar10" in recipe_names() and "digits_demo" in recipe_names()
    installed = recipe_path("reste_resnet20_cifar10")
    assert installed.parent.name == "recipes" and installed.parent.parent.name == "binarize"
    assert load_recipe("reste_resnet20_cifar10").model == "binarize:resnet20"
    own = tmp_path / "mine.toml"
    own.write_text('[recipe]\nmodel = "binarize:digits_cnn"\n')
    assert load_recipe(str(tmp_path / "mine")).model == "binarize:digits_cnn"  # by path, .toml added
    result = runner.invoke(app, ["finetune", "--recipe", "reste_resnet20_cifar1"])
    assert result.exit_code == 1 and "did you mean 'reste_resnet20_cifar10'?" in result.stderr
    assert "digits_demo" in " ".join(help_of("finetune").split())


def test_pyproject_ships_the_recipes_as_package_data():
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert '"recipes/*.toml"' in pyproject
    assert not (Path(__file__).parents[2] / "recipes").exists()  # one copy: binarize/recipes


#: One command chain (each step uses the files of the one before), each with --json.
JSON_CHAIN = (
    ["convert", "binarize:digits_cnn", "--rule", "nothing=float", "-o", "{tmp}/x.pt", "--json"],
    ["summary", "binarize:digits_cnn", "--json"],
    ["estimators", "--json"],
    ["export", "{tmp}/x.pt", "--onnx", "{tmp}/x.onnx", "--packed", "{tmp}/x.bnz", "--json"],
    ["eval", "{tmp}/x.onnx", "--random", "8", "--repeats", "1", "--json"],
    ["indicators", "{tmp}/x.pt", "--steps", "2", "--json"],
    ["finetune", "{tmp}/x.pt", "--epochs", "1", "--batch-size", "512", "-o", "{tmp}/run", "--json"],
)


def test_json_keeps_stderr_quiet(tmp_path):
    for args in JSON_CHAIN:
        result = runner.invoke(app, [arg.replace("{tmp}", str(tmp_path)) for arg in args])
        assert result.exit_code == 0, (args[0], result.output)
        assert result.stderr == "", args[0]
        assert isinstance(json.loads(result.stdout), dict)


def test_json_drops_python_warnings_that_would_reach_stderr(monkeypatch, recwarn):
    import warnings

    from binarize.cli import summary as summary_cli

    real = summary_cli.summarize

    def warning_summarize(*args, **kwargs):
        warnings.warn("a library's warning", UserWarning, stacklevel=1)
        return real(*args, **kwargs)

    monkeypatch.setattr(summary_cli, "summarize", warning_summarize)
    quiet = runner.invoke(app, ["summary", "binarize:digits_cnn", "--json"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert not [w for w in recwarn if "a library's warning" in str(w.message)]
    loud = runner.invoke(app, ["summary", "binarize:digits_cnn"])  # (pytest records what would print)
    assert loud.exit_code == 0 and [w for w in recwarn if "a library's warning" in str(w.message)]
