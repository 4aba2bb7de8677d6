"""IR-Net's error-decay estimator (EDE); Libra-PB is the weight transform it turns on.

Qin et al., "Forward and Backward Information Retention for Accurate Binary Neural Networks"
(CVPR 2020); code: htqin/IR-Net. Libra-PB lives in `binarize.nn.libra`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from binarize.estimators.base import Estimator, require
from binarize.estimators.registry import register


@register("irnet")
class EDE(Estimator):
    """Forward sign(x); surrogate ``k·tanh(t·x)``, backward ``φ = k·t·(1 − tanh²(t·x))``.

    Schedule: ``t(p) = 10^(log10 t_min + (log10 t_max − log10 t_min)·p)``, ``k = max(1/t, 1)``.
    Selecting it turns on Libra-PB (``libra_pb`` transform, ``power_of_two`` scaling) unless
    the user chose a transform or scaling. ``t_min = 1e-3`` is the official ResNet-20 value.
    """

    paper = "IR-Net (Qin et al., CVPR 2020)"
    summary = "error-decay estimator k·tanh(t·x), t annealed t_min → t_max; Libra-PB weights"
    default_weight_transform = "libra_pb"
    default_scaling = "power_of_two"

    def __init__(self, t_min: float = 0.1, t_max: float = 10.0) -> None:
        super().__init__()
        self.t_min, self.t_max = float(t_min), float(t_max)
        require(self, "t_min", self.t_min > 0.0, "> 0")
        require(self, "t_max", self.t_max >= self.t_min, "≥ t_min")
        self._schedule_buffer("t", 0.0)
        self._schedule_buffer("k", 0.0)
        self.set_progress(0.0)

    def set_progress(self, progress: float) -> None:
        low, high = math.log10(self.t_min), math.log10(self.t_max)
        t = 10.0 ** (low + (high - low) * progress)
        self.t.fill_(t)
        self.k.fill_(max(1.0 / t, 1.0))

    def derivative(self, x: Tensor) -> Tensor:
        # k·t·(1 − tanh²(t·x)) in place on the new tensor, rounded as written: 1 − y² must not
        # become one fused multiply-add (tanh_backward's), which differs by up to 2e-9 relative
        # where it cancels (|t·x| large). Written (y² − 1)·(−k·t): the same bits (IEEE negation
        # is exact) in one pass fewer. The 0-d schedule buffers stay tensors (no host sync).
        tanh = (x * self.t).tanh_()
        return tanh.mul_(tanh).sub_(1.0).mul_(-(self.k * self.t))

    def backward(self, x: Tensor, grad: Tensor) -> Tensor:
        return self.derivative(x).mul_(grad)

    def surrogate(self, x: Tensor) -> Tensor:
        return self.k * torch.tanh(x * self.t)
