"""DSTE: stochastic binary activations with the derivative of their expectation as gradient.

Shekhovtsov, Yanush, Flach, "Path Sample-Analytic Gradient Estimators for Stochastic Binary
Networks" (NeurIPS 2020), the baseline "deterministic straight-through"; code:
shekhovt/PSA-Neurips2020.
"""

from __future__ import annotations

import torch
from torch import Tensor

from binarize.estimators.base import Estimator, require
from binarize.estimators.registry import register
from binarize.functional import sign


def sample_sign(probability: Tensor, uniform: Tensor) -> Tensor:
    """``sign(P − u)``: +1 with probability P for u ~ U(0, 1) (sign(0) = +1)."""
    return sign(probability - uniform)


@register("dste")
class DSTE(Estimator):
    """x = sign(a − Z), Z logistic with scale s, i.e. P(x = +1) = σ(a/s).

    Forward: a sample in training (and in eval when ``sample_eval``), ``sign(a)`` otherwise;
    freezing is always deterministic. Backward ``φ = (2/s)·σ'(a/s)``, surrogate
    ``tanh(a/(2s)) = E[x]``. Samples come from torch's global RNG: seed it to reproduce.
    """

    paper = "PSA / DSTE (Shekhovtsov et al., NeurIPS 2020)"
    summary = "stochastic sign(a − logistic noise); gradient of E[x] = tanh(a/2s)"
    stochastic = True

    def __init__(self, s: float = 1.0, sample_eval: bool = False) -> None:
        super().__init__()
        self.s = float(s)
        require(self, "s", self.s > 0.0, "> 0")
        self.sample_eval = bool(sample_eval)

    def uniform(self, like: Tensor) -> Tensor:
        """The U(0, 1) draws behind a sample (a method so that tests can fix them)."""
        return torch.rand_like(like)

    def forward_value(self, x: Tensor) -> Tensor:
        if self.training or self.sample_eval:
            return sample_sign(torch.sigmoid(x / self.s), self.uniform(x))
        return sign(x)

    def derivative(self, x: Tensor) -> Tensor:
        p = torch.sigmoid(x / self.s)
        return (2.0 / self.s) * p * (1.0 - p)

    def surrogate(self, x: Tensor) -> Tensor:
        return torch.tanh(x / (2.0 * self.s))
