"""The Typer app: one thin module per command, registered here; `run` is the console script."""

import sys
import typing
from typing import Any
from pathlib import Path

import typer
from typer.core import TyperGroup

# Typer vendors click and does not re-export its usage-error types.
from typer._click.core import Context
from typer._click.exceptions import ClickException, NoArgsIsHelpError
from typer.exceptions import Abort

import binarize

from . import eval as eval_cli, export
from . import convert, demo, estimators, finetune, indicators, summary

#: Placeholders in the style of the tools users know (click's own): ``--lr FLOAT``, not ``<float>``.
PLACEHOLDERS = {str: "TEXT", int: "INTEGER", float: "FLOAT", Path: "PATH"}


class ConventionalHelp(TyperGroup):
    """Every command's parameters get the usual placeholders (TEXT, INTEGER, FLOAT, PATH;
    arguments by name in capitals, e.g. SOURCE), and repeatable options say so in their help.
    An option that sets its own ``metavar`` keeps it."""

    def get_command(self, ctx: Context, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        params: list[Any] = command.params if command is not None else []  # Typer's own parameter types
        for param in params:
            annotation = param.type_descriptor.annotation
            repeatable = typing.get_origin(annotation) is list
            if param.param_type_name == "argument":
                _conventional_argument(param)
            elif param.metavar is None and annotation is not bool:
                param.metavar = PLACEHOLDERS.get(typing.get_args(annotation)[0] if repeatable else annotation)
            if repeatable and "[repeatable]" not in (param.help or ""):
                param.help = f"{param.help or ''}  [repeatable]".strip()
        return command


def _conventional_argument(argument: typer.core.TyperArgument) -> None:
    """``SOURCE`` (required) or ``[MODEL]`` (optional) in the usage line, no ``<str>`` beside it."""
    argument.metavar = argument.metavar or argument.name.upper()
    usage = argument.metavar if argument.required else f"[{argument.metavar}]"
    argument._usage_display_name = lambda: usage  # type: ignore[method-assign]  # Typer would write {SOURCE}
    argument.display_type_rich = lambda ctx: None  # type: ignore[method-assign]


def show_version(value: bool) -> None:
    if value:
        typer.echo(f"binarize {binarize.__version__}")
        raise typer.Exit()


app = typer.Typer(
    cls=ConventionalHelp,
    help="Binarize pretrained PyTorch networks, fine-tune and deploy them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", "-V", callback=show_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """binarize: convert, fine-tune, export and evaluate binary neural networks."""


app.command("convert")(convert.convert)
app.command("summary")(summary.summary)
app.command("estimators")(estimators.estimators)
app.command("indicators")(indicators.indicators)
app.command("export")(export.export)
app.command("eval")(eval_cli.eval_file)
app.command("finetune")(finetune.finetune)
app.command("demo")(demo.demo)


def run() -> None:
    """The ``binarize`` console script: the app, with usage errors (an unknown option, a bad
    or missing value) printed as one line, ``error: <what> — <fix>``, and exit status 1."""
    command = typer.main.get_command(app)
    try:
        code = command.main(standalone_mode=False)
    except NoArgsIsHelpError as err:  # bare `binarize` or `binarize CMD`: show the help
        err.show()
        code = err.exit_code
    except ClickException as err:
        context = getattr(err, "ctx", None)
        where = context.command_path if context is not None else "binarize"
        typer.echo(f"error: {' '.join(err.format_message().split())} — see '{where} --help'", err=True)
        code = 1
    except Abort:
        typer.echo("error: aborted — run the command again", err=True)
        code = 1
    sys.exit(code)
