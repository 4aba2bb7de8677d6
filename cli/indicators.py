"""``binarize indicators``: ReSTE's estimating error and gradient stability over a few steps."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from binarize import BinarizeConfig, LayerConfig, convert, indicators as measure
from binarize.analysis import IndicatorReport, binary_layers
from ._common import (
    ARCH_OPTION,
    JSON_OPTION,
    NUM_CLASSES_OPTION,
    TRUST_OPTION,
    WEIGHTS_OPTION,
    console,
    emit_json,
    handles_errors,
    load_source,
    one_of,
    parse_key_values,
)
from binarize.data import check_fits, get_datasets, spec_names
from binarize.estimators import names as estimator_names
from binarize.train import CONVERT_ESTIMATOR, DEFAULT_DATA


@handles_errors
def indicators(
    model: str = typer.Argument(..., metavar="SOURCE", help="A binarize checkpoint, or a float model source (converted with --estimator first)."),
    data: str = typer.Option(DEFAULT_DATA, "--data", help=f"Data set. {one_of(spec_names())}"),
    steps: int = typer.Option(20, "--steps", help="Optimizer steps to measure (on a copy; the model file is not changed)."),
    progress: float | None = typer.Option(None, "--progress", help="Hold every estimator schedule at this progress in [0, 1]. Default: the model's own."),
    lr: float = typer.Option(0.01, "--lr", help="SGD learning rate of the measured steps."),
    batch_size: int = typer.Option(64, "--batch-size", help="Batch size of the measured steps."),
    seed: int = typer.Option(0, "--seed", help="Seed for batch order and stochastic estimators."),
    estimator: str = typer.Option(CONVERT_ESTIMATOR, "--estimator", "-e", help=f"Estimator used to convert a float SOURCE (ignored for converted models). {one_of(estimator_names())}"),
    estimator_arg: list[str] = typer.Option([], "--estimator-arg", metavar="KEY=VALUE", help="Its hyperparameter, e.g. o_end=3."),
    arch: str | None = ARCH_OPTION,
    weights: Path | None = WEIGHTS_OPTION,
    num_classes: int | None = NUM_CLASSES_OPTION,
    trust: bool = TRUST_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Measure estimating error e and gradient stability s (ReSTE's equilibrium indicators)."""
    loaded = load_source(model, weights=weights, arch=arch, trust=trust, num_classes=num_classes)
    if not binary_layers(loaded):
        layer = LayerConfig.named(estimator, parse_key_values(estimator_arg, "--estimator-arg"))
        loaded = convert(loaded, BinarizeConfig(layer=layer))
    splits = get_datasets(data, augment=False)
    check_fits(loaded, splits)
    report = measure(loaded, splits.train, steps=steps, progress=progress, lr=lr, batch_size=batch_size, seed=seed)
    if as_json:
        emit_json(report.to_dict() | {"model": model, "data": splits.name})
        return
    render(report)


def render(report: IndicatorReport) -> None:
    """Per-step table and the run summaries on stderr."""
    table = Table(title=f"indicators over {len(report.steps)} steps ({len(report.layers)} binary layers)")
    for column in ("step", "loss", "estimating error e", "gradient stability s"):
        table.add_column(column, justify="right")
    for step in report.steps:
        table.add_row(str(step.step), f"{step.loss:.4f}", f"{step.error:.4f}", f"{step.stability:.3e}")
    console.print(table)
    console.print(f"mean e = {report.error:.4f}   Σ s = {report.stability:.4e}")
