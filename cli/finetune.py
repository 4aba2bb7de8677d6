"""``binarize finetune``: train a converted model (or convert a float one first), with
distillation, checkpoints and exact resume; the same command runs under torchrun."""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from ._common import (
    ARCH_OPTION,
    FORCE_OPTION,
    JSON_OPTION,
    NUM_CLASSES_OPTION,
    TRUST_OPTION,
    WEIGHTS_OPTION,
    console,
    emit_json,
    handles_errors,
    load_source,
    one_of,
)
from binarize import (
    ACTIVATION_POLICIES,
    ARCHITECTURE_PREFIXES,
    BinarizeConfig,
    BinarizeError,
    ConfigError,
    Interrupted,
    LayerConfig,
    OutputExistsError,
    provenance_of,
    check_output,
)
from binarize.data import spec_names
from binarize.estimators import names as estimator_names
from binarize.train import CONVERT_ESTIMATOR, DEFAULT_DATA, OPTIMIZERS, SCHEDULES, FinetuneConfig, recipe_names

#: What a run writes into its folder (removed by --force before a new run starts there).
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl")

#: command-line option → FinetuneConfig field; a flag left at None keeps the recipe's value
FLAG_FIELDS = (
    "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "binary_weight_decay", "schedule",
    "warmup_epochs", "label_smoothing", "distill_weight", "temperature", "bn_reestimate_batches", "seed",
    "device", "amp", "compile", "num_workers", "checkpoint_every",
)


def _default(field: str) -> str:
    """The help text's default of a training flag: the recipe's value, else `FinetuneConfig`'s."""
    return f"Default: recipe, else {getattr(FinetuneConfig(), field)}."


@handles_errors
def finetune(
    model: str = typer.Argument(None, metavar="SOURCE", help="Model: a converted checkpoint, or a float source (torchvision:NAME, binarize:NAME, file) converted first. Default: the recipe's model."),
    recipe: str = typer.Option(None, "--recipe", "-r", metavar="RECIPE", help=f"An installed recipe by name or a recipe file (PATH[.toml]); flags override it. Installed: {', '.join(recipe_names())}."),
    data: str = typer.Option(None, "--data", "-d", help=f"Data. {one_of(spec_names())} Default: the recipe's, else {DEFAULT_DATA}."),
    output: Path = typer.Option(None, "--output", "-o", help="Run folder for last.pt, best.pt, metrics.jsonl. Default: <model>-<estimator>-finetune."),
    resume: Path = typer.Option(None, "--resume", help="Continue a run exactly from its last.pt (its settings are used)."),
    estimator: str = typer.Option(None, "--estimator", "-e", help=f"Estimator for weights and inputs when converting a float model. {one_of(estimator_names())} Default: the recipe's, else {CONVERT_ESTIMATOR}."),
    input_estimator: str = typer.Option(None, "--input-estimator", help="Estimator for inputs (as --estimator), or none for float activations. Default: as --estimator."),
    activation_policy: str = typer.Option(None, "--activation-policy", help=f"When converting: what binary layers fed by ReLU-type activations read. {one_of(ACTIVATION_POLICIES)} Default: recipe, else {BinarizeConfig().activation_policy}."),
    teacher: str = typer.Option(None, "--teacher", metavar="SOURCE", help="Float teacher source. Default: the float model (or the converted model's latent weights)."),
    distill: bool = typer.Option(None, "--distill/--no-distill", help="Distill from the float teacher. Default: on, off when the teacher has random weights (an architecture name without --weights)."),
    epochs: int = typer.Option(None, "--epochs", help=f"Epochs. {_default('epochs')}"),
    batch_size: int = typer.Option(None, "--batch-size", "-b", help=f"Global batch size. {_default('batch_size')}"),
    optimizer: str = typer.Option(None, "--optimizer", help=f"Optimizer. {one_of(OPTIMIZERS)} {_default('optimizer')}"),
    lr: float = typer.Option(None, "--lr", help=f"Peak learning rate. {_default('lr')}"),
    momentum: float = typer.Option(None, "--momentum", help=f"SGD/FenBP momentum. {_default('momentum')}"),
    weight_decay: float = typer.Option(None, "--weight-decay", help=f"Decay of non-binary parameters. {_default('weight_decay')}"),
    binary_weight_decay: float = typer.Option(None, "--binary-weight-decay", help=f"Decay of latent binary weights. {_default('binary_weight_decay')}"),
    schedule: str = typer.Option(None, "--schedule", help=f"Learning-rate schedule. {one_of(SCHEDULES)} {_default('schedule')}"),
    warmup_epochs: float = typer.Option(None, "--warmup-epochs", help=f"Linear warm-up epochs. {_default('warmup_epochs')}"),
    label_smoothing: float = typer.Option(None, "--label-smoothing", help=f"Label smoothing. {_default('label_smoothing')}"),
    distill_weight: float = typer.Option(None, "--distill-weight", help=f"Weight of the KL term. {_default('distill_weight')}"),
    temperature: float = typer.Option(None, "--temperature", help=f"Distillation temperature. {_default('temperature')}"),
    bn_reestimate_batches: int = typer.Option(None, "--bn-reestimate", help=f"Batches of final BatchNorm re-estimation (0 off). {_default('bn_reestimate_batches')}"),
    seed: int = typer.Option(None, "--seed", help=f"Seed of every RNG. {_default('seed')}"),
    device: str = typer.Option(None, "--device", help="One of: auto, cpu, cuda. Default: auto."),
    amp: bool = typer.Option(None, "--amp/--no-amp", help="bf16 autocast on CUDA. Default: off."),
    compile: bool = typer.Option(None, "--compile/--no-compile", help="torch.compile the training model. Default: off."),
    num_workers: int = typer.Option(None, "--workers", help="Data loader workers. Default: 0."),
    checkpoint_every: int = typer.Option(None, "--checkpoint-every", help="Also write last.pt every N steps (0: epoch ends). Default: 0."),
    weights: Path = WEIGHTS_OPTION,
    num_classes: int | None = NUM_CLASSES_OPTION,
    arch: str = ARCH_OPTION,
    trust: bool = TRUST_OPTION,
    force: bool = FORCE_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Fine-tune a binary model; `torchrun --nproc_per_node=N $(which binarize) finetune ...` for DDP."""
    from binarize.data import check_fits, get_datasets
    from binarize.train import finetune as run_finetune
    from binarize.train import load_recipe, load_training_checkpoint, seed_everything, teardown

    flags = {name: value for name, value in locals().items() if name in FLAG_FIELDS and value is not None}
    loaded = load_recipe(recipe) if recipe is not None else None
    main_process = int(os.environ.get("RANK", "0")) == 0
    teacher_note = None
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
        distill, teacher_note = _decide_distillation(distill, teacher or source, weights if teacher is None else None)
        seed_everything(config.seed)  # before the float model is built: its initial weights are random
        binary, teacher_model = _prepare(source, loaded, estimator, input_estimator, activation_policy, teacher, distill,
                                          weights, arch, trust, num_classes)
        run_dir = output or Path(f"{_stem(source)}-{_estimator_name(binary)}-finetune")
        if main_process:
            _claim_run_folder(run_dir, force)
    if distill is False:
        config = config.replace(distill_weight=0.0)
    data_spec = data or (loaded.data if loaded and loaded.data else DEFAULT_DATA)
    shape = provenance_of(binary).input_shape
    splits = get_datasets(data_spec, image_size=shape[-1] if shape else None)
    check_fits(binary, splits)
    if main_process and not json_output:
        if teacher_note:
            console.print(teacher_note)
        console.print(f"finetune {(provenance_of(binary).source or {}).get('name', '')} on {splits.name}: "
                      f"{len(splits.train)} train / {len(splits.test)} test, output {run_dir}")
    try:
        result = run_finetune(binary, splits.train, config=config, teacher=teacher_model, eval_data=splits.test,
                              resume_from=resume, output_dir=run_dir,
                              stream=io.StringIO() if json_output else None)  # --json: stdout only
    except KeyboardInterrupt:
        raise _interrupted(run_dir) from None
    except (BinarizeError, OSError):
        if main_process and resume is None:
            _discard_unfinished(run_dir)
        raise
    finally:
        teardown()  # leaves the torchrun process group, if this run joined one
    if not main_process:
        return
    if not json_output:
        _render(result, loaded)
    else:
        emit_json(result.to_dict() | {"output": str(run_dir), "config": config.to_dict(), "data": splits.name}
                  | ({"reference_top1": loaded.reference_top1} if loaded else {}))


def _prepare(source: str, loaded: Any, estimator: str | None, input_estimator: str | None,
             activation_policy: str | None, teacher: str | None, distill: bool, weights: Path | None,
             arch: str | None, trust: bool, num_classes: int | None) -> tuple[Any, Any]:
    """The binary model to train and its float teacher."""
    from binarize import convert, load_model
    from binarize.nn import BinaryLayer
    from binarize.train import teacher_from_converted

    model = load_source(source, weights=weights, arch=arch, trust=trust, num_classes=num_classes)
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
            layer = LayerConfig.named(estimator or CONVERT_ESTIMATOR, input_estimator=input_estimator,
                                      scaling=layer.scaling, weight_transform=layer.weight_transform)
        elif input_estimator is not None:
            layer = dataclasses.replace(layer, input_estimator=input_estimator, input_estimator_args={})
        policy = {} if activation_policy is None else {"activation_policy": activation_policy}
        binary = convert(model, dataclasses.replace(config, layer=layer, **policy))
        default_teacher = model if distill else None  # convert copied it: the float model is intact
    teacher_model = load_model(teacher, trust=trust) if teacher and distill else default_teacher
    return binary, teacher_model


def _decide_distillation(distill: bool | None, teacher: str, weights: Path | None) -> tuple[bool, str | None]:
    """Whether to distil, and what to tell the user: on unless asked otherwise, or unless the
    teacher is an architecture name without weights (a random teacher only teaches noise)."""
    if not (teacher.startswith(ARCHITECTURE_PREFIXES) and weights is None):
        return distill is not False, None
    if distill:
        return True, f"warning: distilling from {teacher}, which has random weights (no --weights)"
    note = None if distill is False else (
        f"note: the teacher {teacher} has random weights (no --weights), so distillation is off; "
        "--weights or --teacher give a trained one, --distill forces it")
    return False, note


def _interrupted(run_dir: Path) -> Interrupted:
    """Where a run stopped by Ctrl-C can continue: the last.pt it wrote, if any."""
    from binarize.train import load_training_checkpoint

    last = run_dir / "last.pt"
    if not last.exists():
        return Interrupted(f"interrupted before the first checkpoint; nothing to resume in {run_dir}",
                           "run the command again with --force (--checkpoint-every N also saves within epochs)")
    position = load_training_checkpoint(last)["position"]
    return Interrupted(
        f"interrupted; {last} holds step {position['step']} (epoch {position['epoch'] + 1}, "
        f"{position['batch']} batches in)",
        f"continue with: binarize finetune --resume {last}",
    )


def _claim_run_folder(run_dir: Path, force: bool) -> None:
    """Makes sure a new run may write into ``run_dir``: refuses one that holds an earlier run
    (saying how to resume it when it left a last.pt), and with ``force`` clears that run's
    files, so that a stale metrics.jsonl is never appended to."""
    check_output(run_dir, force=force, folder=True)
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return
    if not force:
        last = run_dir / "last.pt"
        if last.exists():
            raise OutputExistsError(f"run folder {run_dir} holds an earlier run",
                                    f"continue it with --resume {last}, start over with --force, or choose another -o")
        raise OutputExistsError(f"run folder {run_dir} holds a run that stopped before its first checkpoint",
                                "start over with --force (it clears that run's files) or choose another -o")
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)


def _discard_unfinished(run_dir: Path) -> None:
    """After a failed new run: its files go unless it left a last.pt to resume from (then the
    next run in that folder says how to resume), so that nothing stray blocks a rerun."""
    if (run_dir / "last.pt").exists():
        return
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    if run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()


def _model_from_checkpoint(payload: dict[str, Any], trust: bool) -> Any:
    from binarize import model_from_record

    return model_from_record(payload["model"], trust=trust)


def _resume_safe(flags: dict[str, Any]) -> dict[str, Any]:
    from binarize.train import RESUME_MAY_CHANGE

    ignored = [k for k in flags if k not in RESUME_MAY_CHANGE]
    if ignored:
        raise ConfigError(f"--{ignored[0].replace('_', '-')} given with --resume",
                          "a resumed run keeps its settings; only device, workers and checkpointing may change")
    return flags


def _stem(source: str) -> str:
    return Path(source.split(":", 1)[-1]).stem or "model"


def _estimator_name(model: Any) -> str:
    from binarize.nn import BinaryLayer

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
