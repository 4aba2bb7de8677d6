"""``binarize eval``: accuracy, agreement, size and latency of a .pt, .onnx or .bnz file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import typer
from rich.table import Table

from ._common import (
    JSON_OPTION,
    TRUST_OPTION,
    check_input_shape,
    console,
    emit_json,
    handles_errors,
    one_of,
    parse_shape,
)
from binarize import ConfigError, provenance_of
from binarize.data import DataSplits, check_fits, spec_names
from binarize.analysis import (
    DeployedEval,
    DeployedModel,
    dataset_batches,
    evaluate_file,
    load_deployed,
    random_batches,
)


@handles_errors
def eval_file(
    file: Path = typer.Argument(..., metavar="FILE", help="A .pt checkpoint (or any model source), an .onnx or a .bnz file."),
    data: str | None = typer.Option(None, "--data", help=f"Labelled test data. {one_of(spec_names())}"),
    random: int | None = typer.Option(None, "--random", help="Evaluate on N random inputs (no labels: agreement and latency only)."),
    reference: str | None = typer.Option(None, "--reference", metavar="SOURCE", help="The model FILE was made from (a checkpoint or model source), for agreement. Default with --trust: the source an .onnx file records, if it still exists."),
    shape: str | None = typer.Option(None, "--input-shape", help="One batch's shape, e.g. 1,3,32,32. Default: from the data or the file."),
    batch_size: int = typer.Option(32, "--batch-size", help="Batch N for evaluation and for the batch-N latency."),
    repeats: int = typer.Option(10, "--repeats", help="Timed calls per latency (the median is reported)."),
    int8_float_layers: bool = typer.Option(False, "--int8-float-layers", help="For a .bnz file: run its float layers in int8 (onnxruntime U8S8, calibrated on random inputs)."),
    engine: str = typer.Option("packed", "--engine", help="For a .bnz file: packed (binarize's runtime) or openvino (pip install 'binarize[openvino]'; agreement is then with the packed runtime unless --reference is given)."),
    trust: bool = TRUST_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Evaluate a deployed file: accuracy, agreement with its source, size, latency."""
    if (data is None) == (random is None):
        raise ConfigError("give exactly one of --data and --random", "e.g. --data digits or --random 64")
    if batch_size < 1 or repeats < 1 or (random is not None and random < 1):
        raise ConfigError("--batch-size, --repeats and --random must be positive", "e.g. --batch-size 32 --repeats 10")
    deployed = load_deployed(file, trust=trust, int8_float_layers=int8_float_layers, engine=engine)
    recorded = deployed.recorded_source()
    peer = load_deployed(file) if engine == "openvino" and reference is None else None
    note = None
    if peer is not None:
        note = "agreement with the packed runtime on the same file"
    elif reference is None and recorded is not None and Path(recorded).exists():
        # A path read from the file is the file's word, not the user's: follow it only on --trust.
        if trust:
            reference = recorded
            note = f"agreement with {reference} (recorded at export)"
        else:
            note = f"{file} records its source {recorded}: pass --reference {recorded} to measure agreement with it"
    if note is not None and not as_json:
        console.print(note)
    reference_model: Any = None
    if reference is not None:
        from binarize import load_model

        reference_model = load_model(reference, trust=trust).eval()
    splits = None
    if data is not None:
        from binarize.data import get_datasets

        splits = get_datasets(data, augment=False)
    example_shape = _example_shape(shape, splits, deployed, reference_model)
    if splits is not None:
        check_fits(deployed, splits)
    else:
        check_input_shape(deployed, (1, *example_shape), str(file))
    if splits is not None:
        batches = dataset_batches(splits.test, batch_size)
    else:
        assert random is not None  # exactly one of --data and --random, checked above
        batches = random_batches(random, example_shape, batch_size)

    @torch.no_grad()
    def run_reference(x: torch.Tensor) -> torch.Tensor:
        return reference_model(x)

    result = evaluate_file(
        deployed, batches, example_shape,
        reference=peer if peer is not None else None if reference_model is None else run_reference,
        batch_size=batch_size, repeats=repeats,
    )
    if as_json:
        emit_json(result.to_dict())
        return
    render_eval(result)


def _example_shape(
    shape: str | None, splits: DataSplits | None, deployed: DeployedModel, reference_model: torch.nn.Module | None
) -> tuple[int, ...]:
    """One example's shape: --input-shape, else the data's, the file's, the reference's."""
    if shape is not None:
        return parse_shape(shape)[1:]
    if splits is not None:
        return tuple(splits.input_shape)
    found = deployed.example_shape()
    if found is None and reference_model is not None:
        recorded = provenance_of(reference_model).input_shape
        found = None if recorded is None else tuple(recorded[1:])
    if found is None:
        raise ConfigError(f"{deployed.path} records no input shape", "pass --input-shape, e.g. 1,3,32,32")
    return found


def render_eval(result: DeployedEval) -> None:
    """Results as tables on stderr."""
    table = Table(title=f"eval: {result.path} ({result.kind})", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("examples", f"{result.examples:,}")
    if result.accuracy is not None:
        table.add_row("accuracy (top-1)", f"{result.accuracy:.2f}%")
    if result.agreement is not None:
        table.add_row("agreement with reference", f"{100 * result.agreement:.2f}% (max |Δlogit| {result.max_abs_diff:.3g})")
    table.add_row("size on disk", f"{result.size_bytes / 1e6:.3f} MB")
    for key, value in result.latency_ms.items():
        batch, threads = key.removeprefix("batch").split("_threads")
        table.add_row(f"latency batch {batch}, {threads} thread(s)", f"{value:.2f} ms")
    console.print(table)
    if result.layer_ms:
        layers = Table(title="per-layer time (batch N, all threads)")
        layers.add_column("node")
        layers.add_column("ms", justify="right")
        for name, ms in sorted(result.layer_ms.items(), key=lambda item: -item[1]):
            layers.add_row(name, f"{ms:.3f}")
        console.print(layers)
