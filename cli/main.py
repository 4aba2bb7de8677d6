"""The Typer app: one thin module per command, registered here."""

import typer

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
