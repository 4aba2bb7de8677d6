"""``binarize convert``: a float model in, a binary checkpoint and a report out."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import typer
from rich.table import Table

from binarize import (
    ACTIVATION_POLICIES,
    BinarizeConfig,
    LayerConfig,
    LayerRule,
    check_output,
    convert as convert_model,
    provenance_of,
    save_checkpoint,
    set_provenance,
)
from ._common import (
    ARCH_OPTION,
    FORCE_OPTION,
    JSON_OPTION,
    NUM_CLASSES_OPTION,
    TRUST_OPTION,
    WEIGHTS_OPTION,
    check_input_shape,
    console,
    emit_json,
    handles_errors,
    load_source,
    one_of,
    parse_key_values,
    parse_shape,
)
from binarize.conversion import ConversionReport
from binarize.estimators import names as estimator_names
from binarize.nn import scaling_names


#: the library's conversion defaults, which every option below starts from
DEFAULTS = BinarizeConfig()


@handles_errors
def convert(
    source: str = typer.Argument(..., metavar="SOURCE", help="torchvision:NAME, binarize:NAME, timm:NAME, a state dict (with --arch), a .pt2 archive or a saved module."),
    estimator: str | None = typer.Option(None, "--estimator", "-e", help=f"Estimator for weights and (unless --input-estimator) inputs; see `binarize estimators`. {one_of(estimator_names())} Default: {DEFAULTS.layer.weight_estimator} for weights, {DEFAULTS.layer.input_estimator} for inputs."),
    estimator_arg: list[str] = typer.Option([], "--estimator-arg", metavar="KEY=VALUE", help="Weight estimator hyperparameter, e.g. o_end=3."),
    input_estimator: str | None = typer.Option(None, "--input-estimator", help=f"Input (activation) estimator. {one_of([*estimator_names(), 'none'])} none: float activations. Default: --estimator's, else {DEFAULTS.layer.input_estimator}."),
    input_estimator_arg: list[str] = typer.Option([], "--input-estimator-arg", metavar="KEY=VALUE", help="Input estimator hyperparameter. Default: the --estimator-arg values when the estimators match."),
    scaling: str | None = typer.Option(None, "--scaling", help=f"Scaling α. {one_of(scaling_names())} Default: the estimator's paper choice, else channel_mean."),
    weight_transform: str | None = typer.Option(None, "--weight-transform", help="Weight transform before binarizing (libra_pb) or 'none'. Default: the estimator's own."),
    keep_first: bool = typer.Option(DEFAULTS.keep_first, "--keep-first/--binarize-first", help="Keep the first weighted layer float."),
    keep_last: bool = typer.Option(DEFAULTS.keep_last, "--keep-last/--binarize-last", help="Keep the last weighted layer float."),
    keep_depthwise: bool = typer.Option(DEFAULTS.keep_depthwise, "--keep-depthwise/--binarize-depthwise", help="Keep depthwise convolutions float."),
    keep_downsample: bool = typer.Option(DEFAULTS.keep_downsample, "--keep-downsample/--binarize-downsample", help="Keep 1x1 strided (shortcut) convolutions float; with the defaults this is the Bi-Real policy."),
    min_fan_in: int = typer.Option(DEFAULTS.min_fan_in, "--min-fan-in", help="Keep layers with a shorter dot product (C/g·kh·kw) float."),
    rule: list[str] = typer.Option([], "--rule", metavar="PATTERN=ACTION", help="PATTERN=float|binary|key:value,... where PATTERN is an fqn, re:REGEX or type:CLASS (fqn > re > type)."),
    strict: bool = typer.Option(DEFAULTS.strict, "--strict", help="Fail instead of warning when torch.fx cannot trace the model (else layers are swapped by name) or a --rule matches no layer."),
    activation_policy: str = typer.Option(DEFAULTS.activation_policy, "--activation-policy", help=f"Binary layers fed by ReLU/ReLU6/Hardsigmoid/Sigmoid: bypass binarizes the pre-activation, hardtanh clips to [-1, 1], keep warns. {one_of(ACTIVATION_POLICIES)}"),
    min_informative_fraction: float = typer.Option(DEFAULTS.min_informative_fraction, "--min-informative-fraction", help="Binary layers whose input's rarer sign is present but rarer than this on the example input get a learned per-channel threshold (sign(x − τ)); 0 turns it off."),
    shape: str | None = typer.Option(None, "--input-shape", help="Example input shape, e.g. 1,3,224,224 (recorded for summary/export)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Output checkpoint. Default: <source name>.binarized.pt."),
    arch: str | None = ARCH_OPTION,
    weights: Path | None = WEIGHTS_OPTION,
    num_classes: int | None = NUM_CLASSES_OPTION,
    trust: bool = TRUST_OPTION,
    force: bool = FORCE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Convert a float model into a binary one and save it as a checkpoint."""
    layer = LayerConfig.named(
        estimator,
        parse_key_values(estimator_arg, "--estimator-arg"),
        input_estimator=input_estimator,
        input_estimator_args=parse_key_values(input_estimator_arg, "--input-estimator-arg") if input_estimator_arg else None,
        scaling=scaling,
        weight_transform=weight_transform,
    )
    config = BinarizeConfig(
        layer=layer,
        keep_first=keep_first,
        keep_last=keep_last,
        keep_depthwise=keep_depthwise,
        keep_downsample=keep_downsample,
        min_fan_in=min_fan_in,
        rules=tuple(LayerRule.parse(text, layer) for text in rule),
        strict=strict,
        activation_policy=activation_policy,
        min_informative_fraction=min_informative_fraction,
    )
    out = output or default_output(source)
    check_output(out, force=force)
    model = load_source(source, weights=weights, arch=arch, trust=trust, num_classes=num_classes)
    if shape is not None:
        dims = parse_shape(shape)
        check_input_shape(model, dims, source)  # it is recorded: it must fit
        set_provenance(model, provenance_of(model).replace(input_shape=dims))
    recorded = provenance_of(model).input_shape
    example = None if recorded is None else (torch.randn(recorded),)
    with warnings.catch_warnings():  # the report lists convert's warnings (and --json carries them)
        warnings.simplefilter("ignore")
        binary = convert_model(model, config, example_inputs=example)
    save_checkpoint(binary, out, force=force)
    report = provenance_of(binary).report
    assert report is not None, "convert records its report"
    if as_json:
        emit_json(report.to_dict() | {"output": str(out), "config": config.to_dict()})
        return
    render_report(report)
    console.print(f"saved [bold]{out}[/bold]")


def default_output(source: str) -> Path:
    """``torchvision:resnet18`` → ``resnet18.binarized.pt``; ``dir/m.pt`` → ``dir/m.binarized.pt``."""
    if ":" in source and not Path(source).exists():
        return Path(f"{source.split(':', 1)[1]}.binarized.pt")
    path = Path(source)
    return path.with_name(f"{path.stem}.binarized.pt")


def render_report(report: ConversionReport) -> None:
    """The conversion report as a table on stderr, with warnings and counts."""
    table = Table(title=f"conversion ({report.mode})")
    for column in ("layer", "type", "shape", "params", "decision", "weights/inputs", "scaling"):
        table.add_column(column, overflow="fold")
    for row in report.rows:
        estimators = f"{row.weight_estimator}/{row.input_estimator or 'float'}" if row.binarized else ""
        table.add_row(
            row.fqn,
            row.type,
            "×".join(map(str, row.shape)),
            f"{row.params:,}",
            f"[green]{row.reason}[/green]" if row.binarized else row.reason,
            estimators,
            row.scaling or "",
        )
    console.print(table)
    if report.leaves:
        console.print(f"traced with opaque leaves (their layers swapped by name): {', '.join(report.leaves)}")
    for rewrite in report.activation_rewrites:
        console.print(f"[cyan]{report.activation_policy}:[/cyan] {rewrite}")
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    counts = report.to_dict()["counts"]
    console.print(
        f"binarized {counts['binarized_layers']}/{counts['layers']} layers, "
        f"{counts['binarized_params']:,} of {counts['total_params']:,} parameters "
        f"({100 * counts['binarized_fraction']:.1f}%)"
    )
