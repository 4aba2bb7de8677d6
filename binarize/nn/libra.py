"""IR-Net's Libra-PB: balanced, standardised weights with a power-of-two scale.

Qin et al., "Forward and Backward Information Retention for Accurate Binary Neural Networks"
(CVPR 2020). ``libra_pb`` is the weight transform ``Ŵ = (W − mean W)/std W`` per output
channel (unbiased std, neither detached); ``power_of_two`` is the scaling
``s = 2^round(log2 mean|Ŵ|)`` per output channel, detached. Together ``Q_w = sign(Ŵ)·s``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from binarize.nn.scaling import channel_abs_mean, register_scaling
from binarize.nn.transforms import register_transform


def _channel_dims(weight: Tensor) -> tuple[int, ...]:
    return tuple(range(1, weight.dim()))


@register_transform("libra_pb")
class LibraPB(nn.Module):
    """Per-output-channel standardisation ``(W − mean)/std`` with the unbiased std."""

    def forward(self, weight: Tensor) -> Tensor:
        dims = _channel_dims(weight)
        centred = weight - weight.mean(dim=dims, keepdim=True)
        # A constant channel has std 0: keep it finite (all zeros, hence +1) instead of NaN.
        std = centred.std(dim=dims, keepdim=True, correction=1)
        return centred / std.clamp(min=torch.finfo(weight.dtype).tiny)


@register_scaling("power_of_two")
class PowerOfTwoScaling(nn.Module):
    """α_o = 2^round(log2 mean|W_o|) per output channel, detached (Libra-PB's shift scale)."""

    def __init__(self, weight: Tensor | None = None) -> None:
        super().__init__()

    def forward(self, weight: Tensor) -> Tensor:
        return torch.pow(2.0, torch.round(torch.log2(channel_abs_mean(weight.detach()))))
