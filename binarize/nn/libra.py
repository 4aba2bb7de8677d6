"""IR-Net's Libra-PB: balanced, standardised weights with a power-of-two scale.

Qin et al., "Forward and Backward Information Retention for Accurate Binary Neural Networks"
(CVPR 2020). ``libra_pb`` is the weight transform ``Ŵ = (W − mean W)/std W`` per output
channel (unbiased std, neither detached); ``power_of_two`` is the scaling
``s = 2^round(log2 mean|Ŵ|)`` per output channel, detached. Together ``Q_w = sign(Ŵ)·s``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from binarize.nn.scaling import channel_abs_mean, register_scaling
from binarize.nn.transforms import register_transform


@register_transform("libra_pb")
class LibraPB(nn.Module):
    """Per-output-channel standardisation ``(W − mean)/std`` with the unbiased std."""

    def forward(self, weight: Tensor) -> Tensor:
        # layer_norm over each output channel is this standardisation in one fused kernel,
        # forward and backward, where mean, subtract, std and divide each took a pass over the
        # weights both ways (every step). It divides by the biased std: its affine weight
        # √((n−1)/n) makes that the unbiased one. eps = √tiny (1e-19 in float32, far below any
        # weight variance) keeps a constant channel finite, all zeros (hence +1), and its
        # gradient too (backward takes 1/std³, which overflows for a smaller eps).
        per_channel = weight.shape[1:]
        n = weight[0].numel()
        unbias = weight.new_full(per_channel, math.sqrt((n - 1) / n))
        return F.layer_norm(weight, per_channel, unbias, None, eps=math.sqrt(torch.finfo(weight.dtype).tiny))


@register_scaling("power_of_two")
class PowerOfTwoScaling(nn.Module):
    """α_o = 2^round(log2 mean|W_o|) per output channel, detached (Libra-PB's shift scale)."""

    def __init__(self, weight: Tensor | None = None) -> None:
        super().__init__()

    def forward(self, weight: Tensor) -> Tensor:
        return torch.pow(2.0, torch.round(torch.log2(channel_abs_mean(weight.detach()))))
