"""``binarize estimators``: the registered estimators, their papers and hyperparameters."""

from __future__ import annotations

import typer
from rich.table import Table

from binarize import estimators as registry
from binarize.cli._common import console, emit_json, handles_errors


@handles_errors
def estimators(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """List every estimator with its paper, summary and hyperparameter defaults."""
    rows = [
        {
            "name": name,
            "paper": registry.get(name).paper,
            "summary": registry.get(name).summary,
            "hparams": registry.defaults(name),
        }
        for name in registry.names()
    ]
    if as_json:
        emit_json({"estimators": rows})
        return
    table = Table(title="estimators")
    for column in ("name", "paper", "summary", "hyperparameters (defaults)"):
        table.add_column(column)
    for row in rows:
        hparams = ", ".join(f"{k}={v}" for k, v in row["hparams"].items()) or "—"
        table.add_row(row["name"], row["paper"], row["summary"], hparams)
    console.print(table)
