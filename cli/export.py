"""``binarize export``: a binary model to ONNX (checked with onnxruntime) and/or packed ``.bnz``
(ONNX whose binary layers are 1-bit ``binarize`` ops, checked with the packed runtime)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import torch
import typer
from rich.table import Table

from binarize import ConfigError, check_output, export_onnx, provenance_of
from ._common import (
    ARCH_OPTION,
    FORCE_OPTION,
    JSON_OPTION,
    NUM_CLASSES_OPTION,
    TRUST_OPTION,
    WEIGHTS_OPTION,
    check_input_shape,
    takes_batch,
    console,
    emit_json,
    handles_errors,
    load_source,
    one_of,
    parse_shape,
)
from binarize.data import spec_names
from binarize.export import DEFAULT_OPSET, SOURCE_KEY, ExportResult, QuantizeResult, quantize_float_layers


@handles_errors
def export(
    model: str = typer.Argument(..., metavar="SOURCE", help="A binarize checkpoint or any model source (see `binarize convert --help`)."),
    onnx_path: Path | None = typer.Option(None, "--onnx", help="Write ONNX here (standard ops, dynamic batch; checked with onnxruntime)."),
    packed_path: Path | None = typer.Option(None, "--packed", help="Write the packed file here: ONNX with 1-bit binarize ops (.bnz; run by binarize.load_packed)."),
    shape: str | None = typer.Option(None, "--input-shape", help="Example input shape, e.g. 1,3,224,224. Default: the one recorded with the model."),
    opset: int = typer.Option(DEFAULT_OPSET, "--opset", help="ONNX opset (17 or newer)."),
    check: bool = typer.Option(True, "--check/--no-check", help="Compare the written files with PyTorch on example inputs."),
    int8_float_layers: bool = typer.Option(False, "--int8-float-layers", help="Quantize the ONNX file's float layers (first/last) to int8 (U8S8 QDQ static quantization)."),
    calibration_data: str | None = typer.Option(None, "--calibration-data", metavar="DATA", help=f"Data for int8 calibration. {one_of(spec_names())} Default: random inputs."),
    arch: str | None = ARCH_OPTION,
    weights: Path | None = WEIGHTS_OPTION,
    num_classes: int | None = NUM_CLASSES_OPTION,
    trust: bool = TRUST_OPTION,
    force: bool = FORCE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Freeze a binary model and write it as ONNX and/or packed .bnz."""
    if onnx_path is None and packed_path is None:
        raise ConfigError("nothing to export", "give --onnx OUT.onnx and/or --packed OUT.bnz")
    for out in (onnx_path, packed_path):
        if out is not None:
            check_output(out, force=force)
    loaded = load_source(model, weights=weights, arch=arch, trust=trust, num_classes=num_classes)
    dims = parse_shape(shape) if shape else provenance_of(loaded).input_shape
    if dims is None:
        raise ConfigError(f"no input shape is recorded for {model}", "pass --input-shape, e.g. 1,3,224,224")
    check_input_shape(loaded, dims, model)
    # A batch of two at least, so that the check compares more than one prediction, unless the
    # model takes only its recorded batch (a torch.export archive specialised to it).
    batch = max(2, dims[0])
    if batch != dims[0] and not takes_batch(loaded, (batch, *dims[1:])):
        batch = dims[0]
    example = (torch.randn((batch, *dims[1:]), generator=torch.Generator().manual_seed(0)),)
    payload: dict[str, Any] = {"model": model, "input_shape": list(dims)}
    recorded = {SOURCE_KEY: str(Path(model).resolve()) if Path(model).exists() else model}
    if onnx_path is not None:
        result = export_onnx(loaded, onnx_path, example, check=check, opset=opset, force=force, metadata=recorded)
        payload["onnx"] = result.to_dict()
        if not as_json:
            render_onnx(result)
        if int8_float_layers:
            quantized = quantize(loaded, onnx_path, dims, calibration_data)
            payload["onnx"]["int8"] = quantized.to_dict()
            if not as_json:
                console.print(
                    f"int8 float layers: {', '.join(quantized.nodes)} → {quantized.size_bytes / 1e6:.2f} MB; "
                    f"vs PyTorch max |Δlogit| {quantized.max_abs_diff:.3g}, top-1 agreement {100 * quantized.top1_agreement:.1f}%"
                )
    if packed_path is not None:
        from binarize.packed import save_packed

        written = save_packed(loaded, packed_path, example, force=force, check=check, metadata=recorded)
        payload["packed"] = {"path": str(written), "size_bytes": written.stat().st_size, "checked": check}
        if not as_json:
            console.print(f"saved [bold]{written}[/bold] ({written.stat().st_size / 1e6:.2f} MB"
                          f"{', agrees with PyTorch' if check else ''})")
    if as_json:
        emit_json(payload)


def quantize(model: torch.nn.Module, path: Path, dims: tuple[int, ...], calibration_data: str | None) -> QuantizeResult:
    """Int8 float layers calibrated on ``calibration_data`` (or random inputs), checked on
    held-out inputs of the same kind."""
    from binarize import freeze

    if calibration_data is not None:
        from binarize.data import get_datasets

        splits = get_datasets(calibration_data, augment=False)
        loader = torch.utils.data.DataLoader(splits.train, batch_size=32, shuffle=False)
        calibration = [inputs for inputs, _ in itertools.islice(loader, 8)]
        check_inputs = next(iter(torch.utils.data.DataLoader(splits.test, batch_size=64)))[0]
    else:
        generator = torch.Generator().manual_seed(1)
        calibration = [torch.randn((16, *dims[1:]), generator=generator) for _ in range(4)]
        check_inputs = torch.randn((16, *dims[1:]), generator=generator)
    return quantize_float_layers(path, calibration, freeze(model), check_inputs)


def render_onnx(result: ExportResult) -> None:
    """The ONNX export and its parity numbers on stderr."""
    table = Table(title=f"ONNX export: {result.path}", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("exporter / opset", f"{result.exporter} / {result.opset}")
    table.add_row("size", f"{result.size_bytes / 1e6:.2f} MB")
    table.add_row("batch", "dynamic" if result.dynamic_batch else "fixed (the model takes only its recorded batch)")
    table.add_row("operators", ", ".join(result.operators))
    if result.checked and result.top1_agreement is not None:  # the parity check sets both
        table.add_row("checked batches", ", ".join(map(str, result.batch_sizes)))
        table.add_row("max |Δlogit| vs PyTorch", f"{result.max_abs_diff:.3g} (tolerance {result.tolerance:g})")
        table.add_row("top-1 agreement", f"{100 * result.top1_agreement:.1f}%")
    console.print(table)
    console.print(f"saved [bold]{result.path}[/bold]" + (" (onnx.checker and onnxruntime parity passed)" if result.checked else " (not checked)"))
