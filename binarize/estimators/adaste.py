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
from binarize.functional import indicator, training_sign


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
    chunked = True  # ~25 elementwise passes: in cache-resident chunks up to a third cheaper on the CPU

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
        return self.surrogate(x) if self.training else training_sign(x)

    def surrogate(self, x: Tensor) -> Tensor:
        """The relaxed weight w*(θ) at the current β."""
        beta = self.beta
        # ±β(1+α) as sign(θ)·β(1+α) rounds it (a 0-d product in θ's dtype), picked by one `lerp`
        # on the 1.0/0.0 of θ ≥ 0 (exact at 0 and 1), then (θ + ·)/(1+β) in place. No `out=`
        # into an input of the `lerp`s here: aliased, they take a 3× slower path (profiled).
        shift = x.new_ones(()).mul_(beta * (1.0 + self.alpha))
        positive = indicator(torch.ge, x, 0.0)
        return torch.lerp(-shift, shift, positive).add_(x).div_(1.0 + beta).clamp_(-1.0, 1.0)

    def derivative(self, x: Tensor) -> Tensor:
        """dw*/dθ = 1/(1+β) where w* is not clipped: the factor s takes without a usable g."""
        return (self.surrogate(x).abs() < 1.0).to(x.dtype) / (1.0 + self.beta)

    def backward(self, x: Tensor, grad: Tensor) -> Tensor:
        return self.factor(x, grad).mul_(grad)

    def factor(self, theta: Tensor, grad: Tensor) -> Tensor:
        """s(θ, g), the adaptive factor multiplying the upstream gradient."""
        beta, alpha = self.beta, self.alpha
        # The two regimes (βα < 1, βα ≥ 1) share one expression with 0-d constants picked by
        # `capped`, so that β never leaves its tensor (no host sync, one compiled graph): when
        # capped the mid region is empty (|θ| < 1 − βα ≤ 0), the saturated one starts at 1e-3,
        # its inward step is clip(1/|θ|, 0, ½) and the default factor is 1.
        capped = beta * alpha >= 1.0
        one = torch.ones_like(beta)

        def constant(capped_value: Tensor | float, value: Tensor) -> Tensor:  # 0-d, in θ's dtype
            return torch.where(capped, capped_value, value).to(theta.dtype)

        default = constant(one, 1.0 / (1.0 + beta))
        # Branches as 1.0/0.0 weights blended with `lerp` (exact at 0 and 1; `where` on full
        # tensors is a slow kernel on CPU), computed in place on four tensors this rule creates
        # (a, b, c, d below): each pass reads and writes what the previous one left in cache.
        magnitude = theta.abs()  # a
        below = indicator(torch.lt, magnitude, 1.0 - beta * alpha)  # c
        mid = indicator(torch.gt, magnitude, self.eps_theta).mul_(below)  # b
        # inward factor clip((A + B·pull)/(D·|θ|), 0, ½): (A, B) = (2β(1+α), 1) in the mid region,
        # (1 + 2β + βα, 0) when saturated; the official code's pull −θ breaks the ±θ symmetry.
        # A + pull is rounded once, as the A + 1·pull it stands for.
        mid_numerator = (2.0 * beta * (1.0 + alpha)).to(theta.dtype)
        if self.official_asymmetry:
            numerator = torch.sub(mid_numerator, theta, out=below)
        else:
            numerator = torch.add(magnitude, mid_numerator, out=below)
        inward_factor = torch.lerp(constant(one, 1.0 + 2.0 * beta + beta * alpha), numerator, mid)
        # D·|θ|, as D·max(|θ|, ε_θ) wherever the factor is used (|θ| > ε_θ there); elsewhere
        # 0 at most, where the numerator is 1 + 2β + βα ≥ 1: +∞ clipped to ½, never NaN
        denominator = torch.mul(magnitude, constant(one, 1.0 + beta))  # d
        inward_factor.div_(denominator).clamp_(0.0, 0.5)
        saturated = torch.gt(magnitude, constant(1e-3, (1.0 - beta * alpha).clamp(min=self.eps_theta)), out=denominator)
        # outward: the default in the mid region, 0 when saturated; inward: sign(g) = sign(θ),
        # read only where |g| > ε_g and |θ| > ε_θ, both nonzero, so θ·g > 0 says it
        chosen = torch.mul(mid, default, out=magnitude)
        region = mid.add_(saturated)
        chosen.lerp_(inward_factor, torch.mul(theta, grad, out=denominator).gt_(0.0))
        usable = torch.abs(grad, out=inward_factor).gt_(self.eps_g).mul_(region)
        return torch.lerp(default, chosen, usable)
