"""The Typer app: one thin module per command, registered here; `run` is the console script."""

import sys

import typer

# Typer vendors click and does not re-export its usage-error types.
from typer._click.exceptions import ClickException, NoArgsIsHelpError
from typer.exceptions import Abort

from binarize.cli import eval as eval_cli, export
from binarize.cli import convert, demo, estimators, finetune, indicators, summary

app = typer.Typer(
    help="Binarize pretrained PyTorch networks, fine-tune and deploy them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def main() -> None:
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
