"""``binarize finetune``: train a converted model (or convert a float one first), with
distillation, checkpoints and exact resume; the same command runs under torchrun."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from binarize.cli._common import (
    ARCH_OPTION,
    FORCE_OPTION,
    JSON_OPTION,
    TRUST_OPTION,
    WEIGHTS_OPTION,
    console,
    emit_json,
    handles_errors,
)
from binarize.errors import ConfigError, OutputExistsError

#: command-line option → FinetuneConfig field; a flag left at None keeps the recipe's value
FLAG_FIELDS = (
    "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "binary_weight_decay", "schedule",
    "warmup_epochs", "label_smoothing", "distill_weight", "temperature", "bn_reestimate_batches", "seed",
    "device", "amp", "compile", "num_workers", "checkpoint_every",
)


@handles_errors
def finetune(
    model: str = typer.Argument(None, help="Model: a converted checkpoint, or a float source (torchvision:NAME, binarize:NAME, file) converted first. Default: the recipe's model."),
    recipe: Path = typer.Option(None, "--recipe", "-r", help="Recipe file (recipes/NAME[.toml]); flags override it."),
    data: str = typer.Option(None, "--data", "-d", help="Data: digits, cifar10:PATH or imagefolder:PATH. Default: the recipe's, else digits."),
    output: Path = typer.Option(None, "--output", "-o", help="Run folder for last.pt, best.pt, metrics.jsonl. Default: <model>-<estimator>-finetune."),
    resume: Path = typer.Option(None, "--resume", help="Continue a run exactly from its last.pt (its settings are used)."),
    estimator: str = typer.Option(None, "--estimator", "-e", help="Estimator for weights and inputs when converting a float model. Default: the recipe's, else reste."),
    input_estimator: str = typer.Option(None, "--input-estimator", help="Estimator for inputs, or none for float activations. Default: as --estimator."),
    activation_policy: str = typer.Option(None, "--activation-policy", help="When converting: bypass, hardtanh or keep for binary layers fed by ReLU-type activations. Default: recipe, else bypass."),
    teacher: str = typer.Option(None, "--teacher", help="Float teacher source. Default: the float model (or the converted model's latent weights)."),
    distill: bool = typer.Option(True, "--distill/--no-distill", help="Distill from the float teacher."),
    epochs: int = typer.Option(None, "--epochs", help="Epochs. Default: recipe, else 10."),
    batch_size: int = typer.Option(None, "--batch-size", "-b", help="Global batch size. Default: recipe, else 64."),
    optimizer: str = typer.Option(None, "--optimizer", help="sgd, adam, adamw or fenbp. Default: recipe, else adam."),
    lr: float = typer.Option(None, "--lr", help="Peak learning rate. Default: recipe, else 1e-3."),
    momentum: float = typer.Option(None, "--momentum", help="SGD/FenBP momentum. Default: recipe, else 0.9."),
    weight_decay: float = typer.Option(None, "--weight-decay", help="Decay of non-binary parameters. Default: recipe, else 0."),
    binary_weight_decay: float = typer.Option(None, "--binary-weight-decay", help="Decay of latent binary weights. Default: recipe, else 0."),
    schedule: str = typer.Option(None, "--schedule", help="cosine, step or constant. Default: recipe, else cosine."),
    warmup_epochs: float = typer.Option(None, "--warmup-epochs", help="Linear warm-up epochs. Default: recipe, else 0."),
    label_smoothing: float = typer.Option(None, "--label-smoothing", help="Label smoothing. Default: recipe, else 0."),
    distill_weight: float = typer.Option(None, "--distill-weight", help="Weight of the KL term. Default: recipe, else 0.5."),
    temperature: float = typer.Option(None, "--temperature", help="Distillation temperature. Default: recipe, else 2."),
    bn_reestimate_batches: int = typer.Option(None, "--bn-reestimate", help="Batches of final BatchNorm re-estimation (0 off). Default: recipe, else 0."),
    seed: int = typer.Option(None, "--seed", help="Seed of every RNG. Default: recipe, else 0."),
    device: str = typer.Option(None, "--device", help="auto, cpu or cuda. Default: auto."),
    amp: bool = typer.Option(None, "--amp/--no-amp", help="bf16 autocast on CUDA. Default: off."),
    compile: bool = typer.Option(None, "--compile/--no-compile", help="torch.compile the training model. Default: off."),
    num_workers: int = typer.Option(None, "--workers", help="Data loader workers. Default: 0."),
    checkpoint_every: int = typer.Option(None, "--checkpoint-every", help="Also write last.pt every N steps (0: epoch ends). Default: 0."),
    weights: Path = WEIGHTS_OPTION,
    arch: str = ARCH_OPTION,
    trust: bool = TRUST_OPTION,
    force: bool = FORCE_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Fine-tune a binary model; `torchrun --nproc_per_node=N $(which binarize) finetune ...` for DDP."""
    from binarize.data import get_datasets
    from binarize.train import FinetuneConfig
    from binarize.train import finetune as run_finetune
    from binarize.train.recipe import load_recipe
    from binarize.train.distributed import teardown
    from binarize.train.state import load_training_checkpoint

    flags = {name: value for name, value in locals().items() if name in FLAG_FIELDS and value is not None}
    loaded = load_recipe(recipe) if recipe is not None else None
    main_process = int(os.environ.get("RANK", "0")) == 0
    if resume is not None:
        payload = load_training_checkpoint(resume)
        config = FinetuneConfig.from_dict(payload["config"]).replace(**_resume_safe(flags))
        binary, teacher_model = _model_from_checkpoint(payload, trust), None
        run_dir = output or resume.parent
    else:
        config = (loaded.finetune if loaded else FinetuneConfig()).replace(**flags)
        source = model or (loaded.model if loaded else None)
        if source is None:
            raise ConfigError("no model given", "pass MODEL (e.g. binarize:digits_cnn) or a recipe with [recipe] model")
        binary, teacher_model = _prepare(source, loaded, estimator, input_estimator, activation_policy, teacher, distill,
                                          weights, arch, trust)
        run_dir = output or Path(f"{_stem(source)}-{_estimator_name(binary)}-finetune")
        if main_process and run_dir.exists() and any(run_dir.iterdir()) and not force:
            raise OutputExistsError(f"run folder {run_dir} exists", "pass --force, choose another -o, or --resume its last.pt")
    if not distill:
        config = config.replace(distill_weight=0.0)
    data_spec = data or (loaded.data if loaded and loaded.data else "digits")
    shape = getattr(binary, "binarize_input_shape", None) or getattr(binary, "input_shape", None)
    splits = get_datasets(data_spec, image_size=shape[-1] if shape else None)
    if main_process:
        console.print(f"finetune {(getattr(binary, 'binarize_source', None) or {}).get('name', '')} on {splits.name}: "
                      f"{len(splits.train)} train / {len(splits.test)} test, output {run_dir}")
    try:
        result = run_finetune(binary, splits.train, config=config, teacher=teacher_model, eval_data=splits.test,
                              resume_from=resume, output_dir=run_dir)
    finally:
        teardown()  # leaves the torchrun process group, if this run joined one
    if not main_process:
        return
    _render(result, loaded)
    if json_output:
        emit_json(result.to_dict() | {"output": str(run_dir), "config": config.to_dict(), "data": splits.name}
                  | ({"reference_top1": loaded.reference_top1} if loaded else {}))


def _prepare(source: str, loaded: Any, estimator: str | None, input_estimator: str | None,
             activation_policy: str | None, teacher: str | None, distill: bool, weights: Path | None,
             arch: str | None, trust: bool) -> tuple[Any, Any]:
    """The binary model to train and its float teacher."""
    from binarize.config import BinarizeConfig
    from binarize import convert
    from binarize.nn.layers import BinaryLayer
    from binarize.sources import load_model
    from binarize.train.distill import teacher_from_converted

    model = load_model(source, weights=weights, arch=arch, trust=trust)
    is_binary = any(isinstance(m, BinaryLayer) for m in model.modules())
    if is_binary and activation_policy is not None:
        raise ConfigError("--activation-policy given with an already converted model",
                          "convert the float model again with binarize convert --activation-policy")
    if is_binary:
        binary, default_teacher = model, (teacher_from_converted(model) if distill else None)
    else:
        config = loaded.convert if loaded else BinarizeConfig()
        layer = config.layer
        if estimator is not None or loaded is None:
            name = estimator or "reste"
            layer = type(layer)(weight_estimator=name, input_estimator=name, scaling=layer.scaling,
                                weight_transform=layer.weight_transform)
        if input_estimator is not None:
            layer = type(layer)(**(layer.to_dict() | {"input_estimator": input_estimator, "input_estimator_args": {}}))
        policy = {} if activation_policy is None else {"activation_policy": activation_policy}
        binary = convert(model, type(config)(**(_config_fields(config) | {"layer": layer} | policy)))
        default_teacher = model if distill else None  # convert copied it: the float model is intact
    teacher_model = load_model(teacher, trust=trust) if teacher and distill else default_teacher
    return binary, teacher_model


def _config_fields(config: Any) -> dict[str, Any]:
    import dataclasses

    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def _model_from_checkpoint(payload: dict[str, Any], trust: bool) -> Any:
    from binarize.checkpoint import model_from_record

    return model_from_record(payload["model"], trust=trust)


def _resume_safe(flags: dict[str, Any]) -> dict[str, Any]:
    from binarize.train.loop import RESUME_MAY_CHANGE

    ignored = [k for k in flags if k not in RESUME_MAY_CHANGE]
    if ignored:
        raise ConfigError(f"--{ignored[0].replace('_', '-')} given with --resume",
                          "a resumed run keeps its settings; only device, workers and checkpointing may change")
    return flags


def _stem(source: str) -> str:
    return Path(source.split(":", 1)[-1]).stem or "model"


def _estimator_name(model: Any) -> str:
    from binarize.nn.layers import BinaryLayer

    layer = next((m for m in model.modules() if isinstance(m, BinaryLayer)), None)
    return getattr(layer.weight_estimator, "name", "binary") if layer is not None else "float"


def _render(result: Any, loaded: Any) -> None:
    table = Table(title="finetune result")
    table.add_column("metric")
    table.add_column("value", justify="right")
    if result.final is not None:
        table.add_row("final top-1 %", f"{result.final.top1:.2f}")
        table.add_row("final top-5 %", f"{result.final.top5:.2f}")
        table.add_row("final loss", f"{result.final.loss:.4f}")
    if result.best_top1 is not None:
        table.add_row("best top-1 %", f"{result.best_top1:.2f}")
    if loaded is not None and loaded.reference_top1 is not None:
        table.add_row("paper reference top-1 %", f"{loaded.reference_top1:.2f}")
    table.add_row("steps", str(result.steps))
    for name, path in result.checkpoints.items():
        table.add_row(f"{name} checkpoint", path)
    console.print(table)
