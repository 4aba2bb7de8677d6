"""ApproxSign: Bi-Real Net's piecewise-quadratic surrogate of sign (ReActNet's RSign uses it).

Liu et al., "Bi-Real Net" (ECCV 2018).
"""

from __future__ import annotations

import torch
from torch import Tensor

from binarize.estimators.base import Estimator
from binarize.estimators.registry import register
from binarize.functional import sign


@register("approxsign")
class ApproxSign(Estimator):
    """Forward sign(x); backward ``φ = 2 + 2x`` on [−1, 0), ``2 − 2x`` on [0, 1), 0 elsewhere.

    Surrogate ``f(x) = 2x + x²`` on [−1, 0), ``2x − x²`` on [0, 1), sign(x) elsewhere.
    Bi-Real binarizes activations with it; its weights use ``channel_mean`` scaling.
    """

    paper = "Bi-Real Net (Liu et al., ECCV 2018)"
    summary = "piecewise-quadratic surrogate, φ = 2 − 2|x| on |x| < 1"

    def derivative(self, x: Tensor) -> Tensor:
        # 2 − 2|x| in place on the new |x| (the same rounding: 2|x| is exact)
        return x.abs().mul_(-2.0).add_(2.0).clamp_(min=0.0)

    def backward(self, x: Tensor, grad: Tensor) -> Tensor:
        return self.derivative(x).mul_(grad)

    def surrogate(self, x: Tensor) -> Tensor:
        return torch.where(x.abs() < 1.0, 2.0 * x - x * x.abs(), sign(x))
