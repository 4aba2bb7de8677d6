"""``binarize estimators``: the registered estimators, their papers and hyperparameters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from binarize import estimators as registry
from binarize import check_output
from ._common import FORCE_OPTION, JSON_OPTION, console, emit_json, handles_errors


@handles_errors
def estimators(
    plot: Path | None = typer.Option(None, "--plot", help="Also draw every estimator's surrogate and backward on [-2, 2] into this PNG (scheduled ones at progress 0, 0.5, 1)."),
    force: bool = FORCE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """List every estimator with its paper, summary and hyperparameter defaults."""
    rows: list[dict[str, Any]] = [
        {
            "name": name,
            "paper": registry.get(name).paper,
            "summary": registry.get(name).summary,
            "hparams": registry.defaults(name),
            "default_scaling": registry.get(name).default_scaling,
            "default_weight_transform": registry.get(name).default_weight_transform,
        }
        for name in registry.names()
    ]
    written = None
    if plot is not None:
        from binarize.analysis import plot_estimators

        check_output(plot, force=force)

        written = plot_estimators(plot, force=force)
    if as_json:
        emit_json({"estimators": rows} | ({"plot": str(written)} if written else {}))
        return
    table = Table(title="estimators")
    for column in ("name", "paper", "summary", "hyperparameters (defaults)", "paper's weight setup"):
        table.add_column(column)
    for row in rows:
        hparams = ", ".join(f"{k}={v}" for k, v in row["hparams"].items()) or "—"
        setup = ", ".join(
            f"{label}={row[key]}" for label, key in (("transform", "default_weight_transform"), ("scaling", "default_scaling")) if row[key]
        )
        table.add_row(row["name"], row["paper"], row["summary"], hparams, setup or "—")
    console.print(table)
    if written:
        console.print(f"saved [bold]{written}[/bold]")
