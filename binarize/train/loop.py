"""``finetune``: the training loop, written out in one readable function.

Per step: set estimator progress (step / total_steps) → forward (student, and the teacher
when distilling) → loss → backward → optimizer and LR-schedule step → optional latent-weight
clipping. Per epoch: reduce training metrics over processes, evaluate, log a metrics line,
checkpoint ``last.pt`` (and ``best.pt`` when top-1 improves). After the last epoch: optional
BatchNorm re-estimation and a final evaluation.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn
from torch.utils.data import Dataset

from binarize.errors import ConfigError
from binarize.progress import set_progress
from binarize.train.batches import training_loader
from binarize.train.batchnorm import reestimate_batchnorm
from binarize.train.config import FinetuneConfig
from binarize.train.distill import distillation_loss, frozen_teacher, teacher_from_converted
from binarize.train.distributed import Distributed, local_device, setup
from binarize.train.evaluate import EvalResult, evaluate
from binarize.train.log import RunLog, Silent
from binarize.train.optim import build_optimizer, build_scheduler, clip_latent_weights, clipping_enabled
from binarize.train.state import (
    Position,
    load_training_checkpoint,
    save_training_checkpoint,
    seed_everything,
    set_rng_state,
)

#: config fields that may differ when resuming: they change how, not what, is computed
RESUME_MAY_CHANGE = ("device", "num_workers", "log_every", "compile", "checkpoint_every", "eval_batch_size")


@dataclass
class FinetuneResult:
    """The trained model (the same object that was passed in) and what the run measured."""

    model: nn.Module
    final: EvalResult | None
    best_top1: float | None
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the model)."""
        return {
            "final": None if self.final is None else self.final.to_dict(),
            "best_top1": self.best_top1,
            "steps": self.steps,
            "history": self.history,
            "checkpoints": self.checkpoints,
        }


def finetune(
    model: nn.Module,
    train_data: Dataset,
    *,
    config: FinetuneConfig,
    teacher: nn.Module | None = None,
    eval_data: Dataset | None = None,
    resume_from: str | Path | None = None,
    output_dir: str | Path | None = None,
    stream: TextIO | None = None,
) -> FinetuneResult:
    """Trains the converted ``model`` in place and returns a `FinetuneResult`.

    Args:
        model: a converted (binary) model; trained in place.
        train_data: a Dataset of ``(input, label)`` pairs.
        config: the run's settings.
        teacher: the float model to distill from (``config.distill_weight`` > 0), e.g.
            the model ``model`` was converted from; kept frozen.
        eval_data: evaluated after every epoch (top-1/top-5/loss).
        resume_from: a ``last.pt`` of an earlier run: continues exactly where it stopped.
            ``config`` must be the run's config (see ``RESUME_MAY_CHANGE``).
        output_dir: where ``last.pt``, ``best.pt`` and ``metrics.jsonl`` go (none when None).
        stream: where progress is printed (stderr by default).

    Under torchrun every process calls this with the same arguments; see
    `binarize.train.distributed`.
    """
    device = local_device(config.device)
    ddp = setup(device)
    directory = Path(output_dir) if output_dir is not None else None
    seed_everything(config.seed + ddp.rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False  # autotuning picks kernels by timing: not reproducible
    resume = load_training_checkpoint(resume_from) if resume_from is not None else None
    if resume is not None:
        _check_resume_config(resume["config"], config)
        model.load_state_dict(resume["model"]["state_dict"])
        if resume["teacher"] is not None:
            teacher = teacher if teacher is not None else teacher_from_converted(model)
            teacher.load_state_dict(resume["teacher"])
    model.to(device)
    if teacher is not None:
        teacher = frozen_teacher(teacher.to(device))
    if config.distill_weight == 0:
        teacher = None

    loader, batches = training_loader(
        train_data,
        batch_size=config.batch_size,
        seed=config.seed,
        ddp=ddp,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
    )
    steps_per_epoch = len(batches)  # after sharding: the number each process runs
    total_steps = config.epochs * steps_per_epoch
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch)
    position, totals, best = Position(), [0.0, 0.0, 0.0], None
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        position, totals, best = Position(**resume["position"]), list(resume["totals"]), resume["best"]
        set_rng_state(resume["rng"])
    train_model = ddp.wrap(model, device)
    if config.compile:
        train_model = torch.compile(train_model)
    clip = clipping_enabled(model, config)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if config.amp and device.type == "cuda" else contextlib.nullcontext()
    if directory is not None and ddp.is_main:
        directory.mkdir(parents=True, exist_ok=True)
    log = RunLog(total_steps, directory=directory, log_every=config.log_every, stream=stream) if ddp.is_main else Silent()

    def checkpoint(name: str) -> None:
        if directory is not None and ddp.is_main:
            save_training_checkpoint(
                directory / name, model=model, optimizer=optimizer, scheduler=scheduler, teacher=teacher,
                config=config.to_dict(), position=position, totals=totals, best=best,
            )

    history: list[dict[str, Any]] = []
    try:
        for epoch in range(position.epoch, config.epochs):
            batches.set_epoch(epoch, start=position.batch)
            # the loader draws worker seeds from its own generator, seeded per epoch, so that
            # (re)starting an epoch's iterator never consumes the global RNG being restored
            loader.generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
            model.train()
            pending, counted = torch.zeros(2, dtype=torch.float64, device=device), 0
            for inputs, targets in loader:
                set_progress(model, position.step / total_steps)
                inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
                with autocast:
                    logits = train_model(inputs)
                    with torch.no_grad():
                        teacher_logits = teacher(inputs) if teacher is not None else None
                    loss = distillation_loss(
                        logits.float(), targets, None if teacher_logits is None else teacher_logits.float(),
                        weight=config.distill_weight, temperature=config.temperature,
                        label_smoothing=config.label_smoothing,
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                if clip:
                    clip_latent_weights(model)
                position.batch += 1
                position.step += 1
                # the loss sum and the correct count stay on the device: read (a host sync) at log time only
                pending += torch.stack([loss.detach().double() * len(targets), (logits.argmax(1) == targets).sum().double()])
                counted += len(targets)
                checkpoint_now = config.checkpoint_every and position.step % config.checkpoint_every == 0 and position.batch < steps_per_epoch
                if position.batch == 1 or position.step % config.log_every == 0 or position.batch == steps_per_epoch or checkpoint_now:
                    loss_sum, correct = pending.tolist()
                    totals = [totals[0] + loss_sum, totals[1] + correct, totals[2] + counted]
                    pending.zero_()
                    counted = 0
                log.step(position.step, epoch, totals[0] / max(totals[2], 1), 100 * totals[1] / max(totals[2], 1))
                if checkpoint_now:
                    checkpoint("last.pt")
                    _announce(log, directory, position)
            loss_sum, correct, count = ddp.sum(totals, device)
            entry: dict[str, Any] = {
                "epoch": epoch + 1,
                "step": position.step,
                "lr": scheduler.get_last_lr()[0],
                "train_loss": loss_sum / max(count, 1),
                "train_top1": 100 * correct / max(count, 1),
            }
            result = evaluate(model, eval_data, batch_size=config.eval_batch_size, device=device, ddp=ddp) if eval_data is not None else None
            improved = result is not None and (best is None or result.top1 > best)
            if result is not None:
                entry |= {"eval_top1": result.top1, "eval_top5": result.top5, "eval_loss": result.loss}
                best = max(best or result.top1, result.top1)
            position = Position(epoch + 1, 0, position.step)
            totals = [0.0, 0.0, 0.0]
            history.append(entry)
            log.record(entry)
            checkpoint("last.pt")
            if improved:
                checkpoint("best.pt")
        final = _finish(model, train_data, eval_data, config, device, ddp, log)
        if final is not None and (best is None or final.top1 > best):
            best = final.top1
            checkpoint("best.pt")
        checkpoint("last.pt")
    finally:
        log.close()
    paths = {} if directory is None else {n: str(directory / f"{n}.pt") for n in ("last", "best") if (directory / f"{n}.pt").exists()}
    return FinetuneResult(model, final, best, position.step, history, paths)


def _finish(
    model: nn.Module, train_data: Dataset, eval_data: Dataset | None, config: FinetuneConfig,
    device: torch.device, ddp: Distributed, log: RunLog,
) -> EvalResult | None:
    """BatchNorm re-estimation (if asked) and the final evaluation."""
    if config.bn_reestimate_batches:
        count = reestimate_batchnorm(
            model, train_data, batches=config.bn_reestimate_batches, batch_size=config.batch_size, device=device
        )
        log.record({"bn_reestimated_layers": count, "bn_batches": config.bn_reestimate_batches})
    if eval_data is None:
        return None
    result = evaluate(model, eval_data, batch_size=config.eval_batch_size, device=device, ddp=ddp)
    log.record({"final_top1": result.top1, "final_top5": result.top5, "final_loss": result.loss})
    return result


def _announce(log: RunLog, directory: Path | None, position: Position) -> None:
    """A plain line naming the checkpoint just written (scripts and tests wait for it)."""
    if directory is not None and not isinstance(log, Silent):
        print(f"checkpoint {directory / 'last.pt'} step {position.step}", file=log.stream, flush=True)


def _check_resume_config(saved: dict[str, Any], config: FinetuneConfig) -> None:
    current = config.to_dict()
    changed = [k for k, v in saved.items() if k not in RESUME_MAY_CHANGE and current.get(k) != v]
    if changed:
        raise ConfigError(
            f"resuming with a different config ({changed[0]}={current.get(changed[0])!r}, checkpoint has {saved[changed[0]]!r})",
            "resume with the checkpoint's settings (binarize finetune --resume uses them)",
        )
