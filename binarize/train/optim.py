"""Optimizer with separate decay for latent binary weights; per-step LR schedules; clipping."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from binarize.errors import ConfigError
from binarize.nn.layers import BinaryLayer
from binarize.train.config import CLIPPING_ESTIMATORS, FinetuneConfig


def latent_weights(model: nn.Module) -> list[nn.Parameter]:
    """The latent weights behind every binary layer's signs."""
    return [m.weight for m in model.modules() if isinstance(m, BinaryLayer)]


def build_optimizer(model: nn.Module, config: FinetuneConfig) -> torch.optim.Optimizer:
    """Two parameter groups: latent binary weights (``binary_weight_decay``) and the rest
    (``weight_decay``); frozen parameters are left out."""
    binary_ids = {id(p) for p in latent_weights(model)}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if id(p) in binary_ids], "weight_decay": config.binary_weight_decay},
        {"params": [p for p in trainable if id(p) not in binary_ids], "weight_decay": config.weight_decay},
    ]
    groups = [g for g in groups if g["params"]]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    return _fenbp(groups, config)


def _fenbp(groups: list[dict], config: FinetuneConfig) -> torch.optim.Optimizer:
    try:
        from binarize.train.fenbp import FenBP
    except ImportError:
        raise ConfigError("optimizer 'fenbp' is not available in this build", "use sgd, adam or adamw") from None
    return FenBP(groups, lr=config.lr, momentum=config.momentum)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: FinetuneConfig, steps_per_epoch: int
) -> LambdaLR:
    """A per-step LR multiplier: linear warm-up, then cosine to 0, step decay, or constant."""
    total = config.epochs * steps_per_epoch
    warmup = round(config.warmup_epochs * steps_per_epoch)
    period = config.step_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
        if config.schedule == "step":
            return config.step_gamma ** (step // period)
        return 1.0

    return LambdaLR(optimizer, factor)


def clipping_enabled(model: nn.Module, config: FinetuneConfig) -> bool:
    """Whether latent weights are clipped: the config's choice, else what the estimators' papers do."""
    if config.clip_latent_weights is not None:
        return config.clip_latent_weights
    layers = [m for m in model.modules() if isinstance(m, BinaryLayer)]
    return bool(layers) and all(getattr(m.weight_estimator, "name", "") in CLIPPING_ESTIMATORS for m in layers)


@torch.no_grad()
def clip_latent_weights(model: nn.Module) -> None:
    """Clips every latent binary weight to [−1, 1] (BinaryConnect): beyond it the sign never
    flips again, so the latent value would only grow."""
    for weight in latent_weights(model):
        weight.clamp_(-1.0, 1.0)
