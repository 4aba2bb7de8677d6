"""AdaSTE: adaptive straight-through with a relaxed forward and a gradient-aware backward.

Le, Høier, Lin, Zach, "AdaSTE: An Adaptive Straight-Through Estimator to Train Binary Neural
Networks" (CVPR 2022); code: intellhave/AdaSTE (an optimizer, FenBP; here a per-layer
estimator whose backward sees the upstream gradient, and `binarize.train.fenbp` the optimizer).
"""

from __future__ import annotations

import torch
from torch import Tensor

from binarize.estimators.base import Estimator, require
from binarize.estimators.registry import register
from binarize.functional import sign


@register("adaste")
class AdaSTE(Estimator):
    """Relaxed forward ``w* = clip((θ + β(1+α)·sign θ)/(1+β), −1, 1)`` in training, sign(θ) in
    eval; backward ``dL/dθ = g·s(θ, g)`` with the adaptive factor of the paper.

    "Inward" means sign(g) = sign(θ) (a descent step moves θ toward 0). With βα < 1:
    saturated ``|θ| > max(ε_θ, 1 − βα)``: outward 0, inward ``clip((1+2β+βα)/((1+β)|θ|), 0, ½)``;
    mid ``ε_θ < |θ| < 1 − βα``: inward ``clip((2β(1+α) + |θ|)/((1+β)|θ|), 0, ½)``, outward
    ``1/(1+β)``; elsewhere (and |g| ≤ ε_g) ``1/(1+β)``. With βα ≥ 1: for |θ| > 1e-3 and
    |g| > ε_g inward ``clip(1/|θ|, 0, ½)``, outward 0; otherwise 1.
    ``official_asymmetry=True`` reproduces the official code's mid-region numerator
    ``2β(1+α) − θ`` (positive weights moving inward freeze); the default is symmetric.
    Schedule: ``β(p) = min(β0·growth^(p·e_ref + 1), 1/α)`` (p = e/e_ref gives the official
    per-epoch values). The paper binarizes weights only and uses no scaling factor.
    """

    paper = "AdaSTE (Le et al., CVPR 2022)"
    summary = "relaxed forward annealed to sign (β grows), adaptive gradient-aware backward"
    default_scaling = "none"  # the paper's nets have no scaling factor

    def __init__(
        self,
        alpha: float = 0.01,
        beta0: float = 0.01,
        growth: float = 1.05,
        e_ref: float = 700.0,
        official_asymmetry: bool = False,
        eps_g: float = 1e-3,
        eps_theta: float = 1e-6,
    ) -> None:
        super().__init__()
        self.alpha, self.beta0, self.growth, self.e_ref = float(alpha), float(beta0), float(growth), float(e_ref)
        self.official_asymmetry = bool(official_asymmetry)
        self.eps_g, self.eps_theta = float(eps_g), float(eps_theta)
        for key in ("alpha", "growth", "e_ref", "eps_g", "eps_theta"):
            require(self, key, getattr(self, key) > 0.0, "> 0")
        require(self, "beta0", self.beta0 >= 0.0, "≥ 0")
        self._schedule_buffer("beta", 0.0)
        self.set_progress(0.0)

    def set_progress(self, progress: float) -> None:
        self.beta.fill_(min(self.beta0 * self.growth ** (progress * self.e_ref + 1.0), 1.0 / self.alpha))

    def forward_value(self, x: Tensor) -> Tensor:
        return self.surrogate(x) if self.training else sign(x)

    def surrogate(self, x: Tensor) -> Tensor:
        """The relaxed weight w*(θ) at the current β."""
        beta = self.beta
        return ((x + beta * (1.0 + self.alpha) * sign(x)) / (1.0 + beta)).clamp(-1.0, 1.0)

    def derivative(self, x: Tensor) -> Tensor:
        """dw*/dθ = 1/(1+β) where w* is not clipped: the factor s takes without a usable g."""
        return (self.surrogate(x).abs() < 1.0).to(x.dtype) / (1.0 + self.beta)

    def backward(self, x: Tensor, grad: Tensor) -> Tensor:
        return grad * self.factor(x, grad)

    def factor(self, theta: Tensor, grad: Tensor) -> Tensor:
        """s(θ, g), the adaptive factor multiplying the upstream gradient."""
        beta, alpha = self.beta, self.alpha
        # The two regimes (βα < 1, βα ≥ 1) share one expression with 0-d constants picked by
        # `capped`, so that β never leaves its tensor (no host sync, one compiled graph): when
        # capped the mid region is empty (|θ| < 1 − βα ≤ 0), the saturated one starts at 1e-3,
        # its inward step is clip(1/|θ|, 0, ½) and the default factor is 1.
        capped = beta * alpha >= 1.0
        one = torch.ones_like(beta)
        magnitude = theta.abs()
        inward = torch.sign(grad) == torch.sign(theta)
        usable = grad.abs() > self.eps_g
        half = 0.5
        default = torch.where(capped, one, 1.0 / (1.0 + beta))
        safe = magnitude.clamp(min=self.eps_theta)
        threshold = torch.where(capped, 1e-3, (1.0 - beta * alpha).clamp(min=self.eps_theta))
        saturated = usable & (magnitude > threshold)
        mid = usable & (magnitude > self.eps_theta) & (magnitude < 1.0 - beta * alpha)
        numerator = torch.where(capped, one, 1.0 + 2.0 * beta + beta * alpha)
        saturated_in = (numerator / (torch.where(capped, one, 1.0 + beta) * safe)).clamp(0.0, half)
        # the official code's numerator 2β(1+α) − θ breaks the ±θ symmetry (see the spec)
        pull = -theta if self.official_asymmetry else magnitude
        mid_in = ((2.0 * beta * (1.0 + alpha) + pull) / ((1.0 + beta) * safe)).clamp(0.0, half)
        out = torch.where(saturated, torch.where(inward, saturated_in, 0.0), default)
        return torch.where(mid, torch.where(inward, mid_in, default), out)
