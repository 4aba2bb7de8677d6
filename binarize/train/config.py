"""`FinetuneConfig`: every knob of the fine-tuning loop, frozen and validated."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from binarize.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw", "fenbp")
SCHEDULES = ("cosine", "step", "constant")
DEVICES = ("auto", "cpu", "cuda")
#: estimators whose papers clip latent weights to [−1, 1] after each step (BinaryConnect, BinaryNet)
CLIPPING_ESTIMATORS = ("ste", "clipped_ste")
#: The estimator (weights and inputs) a float model is converted with for fine-tuning when no
#: recipe names one; `binarize finetune` and `binarize indicators` use it.
CONVERT_ESTIMATOR = "reste"
#: The data set a run uses when neither the caller nor the recipe names one: offline, in the package.
DEFAULT_DATA = "digits"


@dataclass(frozen=True)
class FinetuneConfig:
    """How `finetune` trains a converted model.

    Attributes:
        epochs: passes over the training set.
        batch_size: global batch size (split evenly across torchrun processes).
        optimizer: ``sgd``, ``adam``, ``adamw`` or ``fenbp`` (AdaSTE's optimizer).
        lr: peak learning rate.
        momentum: SGD/FenBP momentum.
        weight_decay: decay of every parameter except the latent binary weights.
        binary_weight_decay: decay of the latent binary weights (0, as Bi-Real and ReActNet
            fine-tuning do: decay pulls latent weights to 0, where signs flip at random).
        schedule: ``cosine`` (to 0 after warm-up), ``step`` (×``step_gamma`` every
            ``step_epochs``) or ``constant``.
        warmup_epochs: linear warm-up length (may be fractional).
        step_epochs: period of the ``step`` schedule.
        step_gamma: factor of the ``step`` schedule.
        label_smoothing: cross-entropy label smoothing.
        clip_latent_weights: clip latent binary weights to [−1, 1] after each step; ``None``
            does it for the estimators whose papers do (``ste``, ``clipped_ste``).
        distill_weight: weight w of the distillation term: loss = (1−w)·CE + w·T²·KL; used
            only when there is a teacher.
        temperature: distillation temperature T.
        bn_reestimate_batches: after training, re-estimate BatchNorm statistics over this many
            training batches (0: off).
        seed: seeds every RNG; with the same seed two runs give the same weights.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        amp: bf16 autocast on CUDA.
        compile: wrap the training model in ``torch.compile``.
        num_workers: data loader workers (exact resume is guaranteed with 0).
        eval_batch_size: batch size of evaluation.
        checkpoint_every: also write ``last.pt`` every this many steps (0: at epoch ends only).
        log_every: print a progress line every this many steps when not on a terminal.
    """

    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    binary_weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    step_epochs: int = 30
    step_gamma: float = 0.1
    label_smoothing: float = 0.0
    clip_latent_weights: bool | None = None
    distill_weight: float = 0.5
    temperature: float = 2.0
    bn_reestimate_batches: int = 0
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    compile: bool = False
    num_workers: int = 0
    eval_batch_size: int = 256
    checkpoint_every: int = 0
    log_every: int = 50

    def __post_init__(self) -> None:
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("device", self.device, DEVICES)
        for name in ("epochs", "batch_size", "step_epochs", "eval_batch_size", "log_every"):
            _at_least(name, getattr(self, name), 1)
        for name in ("bn_reestimate_batches", "seed", "num_workers", "checkpoint_every"):
            _at_least(name, getattr(self, name), 0)
        _positive("lr", self.lr)
        _positive("temperature", self.temperature)
        _positive("step_gamma", self.step_gamma)
        for name in ("momentum", "label_smoothing", "distill_weight"):
            _in_unit(name, getattr(self, name), upper_open=name == "label_smoothing")
        for name in ("weight_decay", "binary_weight_decay", "warmup_epochs"):
            _at_least(name, getattr(self, name), 0.0)
        if self.warmup_epochs > self.epochs:
            raise ConfigError(
                f"warmup_epochs={self.warmup_epochs} exceeds epochs={self.epochs}",
                "use a warm-up shorter than the run",
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FinetuneConfig:
        """Builds a config from a mapping, rejecting unknown keys and mistyped values."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = [key for key in data if key not in fields]
        if unknown:
            raise ConfigError(f"unknown finetune key {unknown[0]!r}", f"valid keys: {', '.join(fields)}")
        return cls(**{key: _typed(key, value, getattr(cls, key)) for key, value in data.items()})

    def replace(self, **changes: Any) -> FinetuneConfig:
        """A copy with ``changes`` (validated like `from_dict`)."""
        return FinetuneConfig.from_dict(self.to_dict() | changes)


def _typed(key: str, value: Any, default: Any) -> Any:
    """Checks ``value`` against the type of the field's default (ints are accepted as floats)."""
    if key == "clip_latent_weights":
        expected: tuple[type, ...] = (bool, type(None))
    elif isinstance(default, bool):
        expected = (bool,)
    elif isinstance(default, float):
        expected = (int, float)
    else:
        expected = (type(default),)
    if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
        names = " or ".join("none" if t is type(None) else t.__name__ for t in expected)
        raise ConfigError(f"finetune {key}={value!r} is not a {names}", f"write e.g. {key} = {default!r}")
    return float(value) if isinstance(default, float) and isinstance(value, (int, float)) else value


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} {value!r} is not supported", f"use one of: {', '.join(choices)}")


def _at_least(name: str, value: float, low: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= low):
        raise ConfigError(f"{name}={value!r} is invalid", f"use a number ≥ {low}")


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name}={value!r} is invalid", "use a positive number")


def _in_unit(name: str, value: float, *, upper_open: bool) -> None:
    ok = isinstance(value, (int, float)) and 0 <= value and (value < 1 if upper_open else value <= 1)
    if not ok:
        raise ConfigError(f"{name}={value!r} is outside [0, 1{')' if upper_open else ']'}", "use a value in that range")
