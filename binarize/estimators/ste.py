"""BinaryConnect's straight-through estimator and BinaryNet's clipped variant.

Courbariaux et al., "BinaryConnect" (NeurIPS 2015) and "Binarized Neural Networks" (2016).
"""

from __future__ import annotations

from torch import Tensor

from binarize.estimators.base import Estimator
from binarize.estimators.registry import register


@register("ste")
class STE(Estimator):
    """Forward sign(x); backward φ(x) = 1 (identity surrogate f(x) = x)."""

    paper = "BinaryConnect (Courbariaux et al., NeurIPS 2015)"
    summary = "straight-through: identity gradient"

    def derivative(self, x: Tensor) -> Tensor:
        return x.new_ones(()).expand_as(x)

    def surrogate(self, x: Tensor) -> Tensor:
        return x


@register("clipped_ste")
class ClippedSTE(Estimator):
    """Forward sign(x); backward φ(x) = 1{|x| ≤ 1} (inclusive), surrogate hardtanh."""

    paper = "BinaryNet (Hubara, Courbariaux et al., NeurIPS 2016)"
    summary = "straight-through, gradient cancelled where |x| > 1"

    def derivative(self, x: Tensor) -> Tensor:
        return (x.abs() <= 1).to(x.dtype)

    def surrogate(self, x: Tensor) -> Tensor:
        return x.clamp(-1.0, 1.0)
