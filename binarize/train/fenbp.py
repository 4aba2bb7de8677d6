"""FenBP: AdaSTE's official optimizer, momentum with bias correction on ``g + λ·θ``.

Le et al., "AdaSTE" (CVPR 2022); code: intellhave/AdaSTE. With μ the momentum, t the step:

    m ← μ·m + (1 − μ)·(g + λ·θ),    θ ← θ − lr·m/(1 − μᵗ)

where g is the parameter's gradient (for AdaSTE layers already ``g⊙s``: the estimator's
backward applies the adaptive factor) and λ the ``weight_decay`` of the parameter group.

Scaling chosen by binarize: the official code uses ``N²·g + θ`` with N = 10 × training-set size
and lr 3e-4. Dividing by N² gives the same direction as ``g + θ/N²``: here λ = 1/N² and
lr = 3e-4·N² reproduce it exactly, while the defaults (λ = 0, lr 3e-4) make FenBP plain
bias-corrected momentum on the mean-batch gradient, comparable with the other optimizers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer


class FenBP(Optimizer):
    """Bias-corrected momentum on ``grad + weight_decay·θ`` (see the module docstring)."""

    def __init__(
        self, params: Iterable[Any], lr: float = 3e-4, momentum: float = 0.9, weight_decay: float = 0.0
    ) -> None:
        if lr <= 0 or not 0.0 <= momentum < 1.0 or weight_decay < 0:
            raise ValueError(f"FenBP needs lr > 0, 0 ≤ momentum < 1, weight_decay ≥ 0 (got {lr}, {momentum}, {weight_decay})")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            mu, lr, decay = group["momentum"], group["lr"], group["weight_decay"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["momentum_buffer"] = torch.zeros_like(param)
                state["step"] += 1
                direction = param.grad.add(param, alpha=decay) if decay else param.grad
                buffer = state["momentum_buffer"]
                buffer.mul_(mu).add_(direction, alpha=1.0 - mu)
                param.sub_(buffer, alpha=lr / (1.0 - mu ** state["step"]))
        return loss
