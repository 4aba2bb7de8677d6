"""``binarize summary``: parameters, bits, memory and BOPs/FLOPs per layer."""

from __future__ import annotations

from pathlib import Path

import torch
import typer
from rich.table import Table

from binarize import ConfigError, ModelSummary, provenance_of, summarize
from ._common import (
    ARCH_OPTION,
    JSON_OPTION,
    NUM_CLASSES_OPTION,
    TRUST_OPTION,
    WEIGHTS_OPTION,
    check_input_shape,
    console,
    emit_json,
    handles_errors,
    load_source,
    parse_shape,
)


@handles_errors
def summary(
    model: str = typer.Argument(..., metavar="SOURCE", help="A binarize checkpoint or any model source (see `binarize convert --help`)."),
    shape: str | None = typer.Option(None, "--input-shape", help="Input shape, e.g. 1,3,224,224. Default: the one recorded with the model."),
    arch: str | None = ARCH_OPTION,
    weights: Path | None = WEIGHTS_OPTION,
    num_classes: int | None = NUM_CLASSES_OPTION,
    trust: bool = TRUST_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Summarize a model: per-layer params, binary vs float, bits, MACs as BOPs and FLOPs."""
    loaded = load_source(model, weights=weights, arch=arch, trust=trust, num_classes=num_classes)
    dims = parse_shape(shape) if shape else provenance_of(loaded).input_shape
    if dims is None:
        raise ConfigError(f"no input shape is recorded for {model}", "pass --input-shape, e.g. 1,3,224,224")
    check_input_shape(loaded, dims, model)
    result = summarize(loaded, (torch.randn(dims),))
    if as_json:
        emit_json(result.to_dict())
        return
    render_summary(result)


def render_summary(result: ModelSummary) -> None:
    """Per-layer table and totals on stderr."""
    table = Table(title=f"summary at input {'×'.join(map(str, result.input_shape))}")
    for column in ("layer", "type", "params", "weights", "inputs", "MACs", "BOPs", "FLOPs", "bits"):
        table.add_column(column, justify="right" if column not in ("layer", "type", "weights", "inputs") else "left")
    for layer in result.layers:
        table.add_row(
            layer.fqn, layer.type, f"{layer.params:,}", layer.weights, layer.inputs,
            f"{layer.macs:,}", f"{layer.bops:,}", f"{layer.flops:,}", f"{layer.bits:,}",
        )
    console.print(table)
    totals = Table(title="totals", show_header=False)
    totals.add_column("what")
    totals.add_column("value", justify="right")
    rows = [
        ("parameters", f"{result.params / 1e6:.2f} M ({result.binary_params / 1e6:.2f} M binary)"),
        ("BOPs", f"{result.bops / 1e9:.3f} G"),
        ("FLOPs", f"{result.flops / 1e6:.1f} M"),
        ("OPs = BOPs/64 + FLOPs", f"{result.ops / 1e6:.1f} M"),
        ("size float32", f"{result.float_bits / 1e6:.1f} Mbit ({result.float_bits / 8e6:.2f} MB)"),
        ("size binarized", f"{result.binarized_bits / 1e6:.1f} Mbit ({result.binarized_bits / 8e6:.2f} MB)"),
        ("compression", f"{result.compression:.1f}×"),
    ]
    for what, value in rows:
        totals.add_row(what, value)
    console.print(totals)
