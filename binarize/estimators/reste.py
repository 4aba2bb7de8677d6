"""ReSTE: the rectified straight-through estimator (power-function surrogate).

Wu, Zheng, Liu, Zheng, "Estimator Meets Equilibrium Perspective: A Rectified Straight Through
Estimator for Binary Neural Networks Training" (ICCV 2023); code: DravenALG/ReSTE.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from binarize.estimators.base import Estimator, require
from binarize.estimators.registry import register
from binarize.functional import indicator, sign


@register("reste")
class ReSTE(Estimator):
    """Forward sign(x); surrogate ``f(x) = sign(x)·min(|x|, t)^(1/o)``, linearised on |x| ≤ m.

    Backward (branch order as in the official code, the chord last):
    ``φ = m^(1/o)/m`` for |x| ≤ m (the chord slope, finite at 0, even beyond t when t < m),
    ``φ = (1/o)·|x|^((1−o)/o)`` for m < |x| ≤ t, ``φ = 0`` for |x| > max(t, m).
    Schedule: ``o(p) = 1 + (o_end − 1)·(1 − cos(π·p/2))``; at o = 1, φ ≡ 1 on |x| ≤ t.
    The paper's scaling is one scalar per layer, mean|W|, not detached (``tensor_mean``).
    """

    paper = "ReSTE (Wu et al., ICCV 2023)"
    summary = "power-function surrogate |x|^(1/o), o annealed 1 → o_end (cosine)"
    default_scaling = "tensor_mean"

    def __init__(self, o_end: float = 3.0, t: float = 1.5, m: float = 0.1) -> None:
        super().__init__()
        self.o_end, self.t, self.m = float(o_end), float(t), float(m)
        require(self, "o_end", self.o_end >= 1.0, "≥ 1 (o anneals from 1 to o_end)")
        require(self, "t", self.t > 0.0, "> 0")
        require(self, "m", self.m > 0.0, "> 0")  # t < m is allowed (the official branch order handles it)
        self._schedule_buffer("o", 1.0)

    def set_progress(self, progress: float) -> None:
        self.o.fill_(1.0 + (self.o_end - 1.0) * (1.0 - math.cos(math.pi * progress / 2.0)))

    def derivative(self, x: Tensor) -> Tensor:
        o, magnitude = self.o, x.abs()
        top = max(self.t, self.m)
        # Official branch order: the chord slope is assigned last, so |x| ≤ m gets it even
        # where |x| > t (possible only with t < m), and φ = 0 only beyond max(t, m).
        # Branch weights: 1 inside m, 1/o beyond it (0·k + 1 and 1·k + 1 with k = 1/o − 1);
        # zeroed beyond the top by a 1-byte mask. Two allocations, where two float indicators
        # blended with `lerp` took three (10–25 % of this rule's time on a ResNet-18, measured).
        branch = indicator(torch.gt, magnitude, self.m).mul_(1.0 / o - 1.0).add_(1.0)
        beyond = magnitude > top
        # |x|^((1−o)/o) as exp/log in place (half the cost of `pow` on CPU). Clamped to [m, top]
        # first: at |x| = m it is the chord m^(1/o)/m itself, and 0 and ∞ stay finite.
        power = magnitude.clamp_(min=self.m, max=top).log_().mul_((1.0 - o) / o).exp_()
        return power.mul_(branch).masked_fill_(beyond, 0.0)

    def backward(self, x: Tensor, grad: Tensor) -> Tensor:
        return self.derivative(x).mul_(grad)

    def surrogate(self, x: Tensor) -> Tensor:
        magnitude = x.abs()
        power = sign(x) * magnitude.clamp(max=self.t).pow(1.0 / self.o)
        return torch.where(magnitude <= self.m, x * self._chord(), power)

    def _chord(self) -> Tensor:
        """m^(1/o)/m, the slope of the linear piece on |x| ≤ m (a 0-d tensor: no host sync)."""
        return self.m ** (1.0 / self.o) / self.m

    def indicator_surrogate(self, x: Tensor) -> Tensor:
        """The official code's f for the estimating error: ``sign(x)·|x|^(1/o_end)``, no clip."""
        return sign(x) * x.abs().pow(1.0 / self.o_end)
