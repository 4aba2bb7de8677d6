"""``binarize demo``: the offline end-to-end run and its table."""

from __future__ import annotations

import io
from pathlib import Path

import typer
from rich.table import Table

from ._common import JSON_OPTION, console, emit_json, handles_errors


@handles_errors
def demo(
    seed: int = typer.Option(0, "--seed", help="Seed of float training and fine-tuning."),
    output: Path = typer.Option(None, "--output", "-o", help="Folder for fine-tuning checkpoints and metrics (none by default)."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Train a float digits CNN, binarize it with ReSTE, fine-tune with distillation, export to
    ONNX and .bnz, and compare every stage."""
    from binarize import run_demo

    if json_output:  # stdout only: progress and tables are dropped
        emit_json(run_demo(seed=seed, output_dir=output, stream=io.StringIO()).to_dict())
        return
    console.print("[bold]binarize demo[/]: digits (offline), float → ReSTE W1A1 → fine-tuned with distillation")
    result = run_demo(seed=seed, output_dir=output)
    table = Table(title=f"{result.model} on digits (test split, 364 images)")
    for column in ("stage", "top-1 %", "top-5 %", "size", "binary params"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for row in result.rows:
        table.add_row(row.stage, f"{row.top1:.2f}", f"{row.top5:.2f}", f"{row.size_bytes / 1024:.1f} KiB", str(row.binary_params))
    console.print(table)
    deployed = Table(title="deployed forms of the fine-tuned binary model (test split, 1 thread)")
    for column in ("form", "file", "top-1 %", "agreement", "max |Δlogit|", "size", "batch 1", "batch 64"):
        deployed.add_column(column, justify="left" if column in ("form", "file") else "right")
    for form in result.deployment:
        deployed.add_row(
            form.form, form.file, f"{form.top1:.2f}", f"{100 * form.agreement:.1f}%", f"{form.max_abs_diff:.1e}",
            f"{form.size_bytes / 1024:.1f} KiB", f"{form.latency_batch1_ms:.3f} ms", f"{form.latency_batch64_ms:.3f} ms",
        )
    console.print(deployed)
    gap = result.checks["gap_points"]
    verdict = "within" if result.checks["finetuned_within_3_points_of_float"] else "NOT within"
    console.print(f"fine-tuned binary is {gap:.2f} points below float: {verdict} 3 points")
