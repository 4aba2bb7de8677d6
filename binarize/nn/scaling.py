"""Scaling factors α multiplying the ±1 weights, one small module per rule.

A scaling module maps the (transformed) latent weight ``[O, ...]`` to α broadcastable against
it: ``[O, 1, ...]`` per output channel, or a scalar.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from binarize._registry import Registry

ScalingFactory = Callable[[Tensor], nn.Module]
_SCALINGS: Registry[ScalingFactory] = Registry("scaling")


def channel_abs_mean(weight: Tensor) -> Tensor:
    """mean|W_o| per output channel, shaped ``[O, 1, ...]``: one fused pass (an L1 norm)
    instead of materialising ``|W|`` and then reducing it."""
    dims = tuple(range(1, weight.dim()))
    return torch.linalg.vector_norm(weight, 1, dim=dims, keepdim=True) / weight[0].numel()


@_SCALINGS.register("none")
class NoScaling(nn.Module):
    """α = 1 (BinaryConnect, BinaryNet, AdaSTE)."""

    def __init__(self, weight: Tensor | None = None) -> None:
        super().__init__()

    def forward(self, weight: Tensor) -> Tensor:
        return weight.new_ones(())


@_SCALINGS.register("channel_mean")
class ChannelMeanScaling(nn.Module):
    """α_o = mean|W_o| per output channel, detached (XNOR-Net's ‖W‖₁/n, Bi-Real Net)."""

    def __init__(self, weight: Tensor | None = None) -> None:
        super().__init__()

    def forward(self, weight: Tensor) -> Tensor:
        return channel_abs_mean(weight.detach())


@_SCALINGS.register("tensor_mean")
class TensorMeanScaling(nn.Module):
    """α = mean|W| over the whole tensor, not detached (ReSTE's official code)."""

    def __init__(self, weight: Tensor | None = None) -> None:
        super().__init__()

    def forward(self, weight: Tensor) -> Tensor:
        return torch.linalg.vector_norm(weight, 1) / weight.numel()


@_SCALINGS.register("learned")
class LearnedScaling(nn.Module):
    """α_o a trainable parameter per output channel, initialised to mean|W_o|."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.alpha = nn.Parameter(channel_abs_mean(weight.detach()))

    def forward(self, weight: Tensor) -> Tensor:
        return self.alpha


def scaling_names() -> list[str]:
    """Names accepted wherever a scaling is configured."""
    return _SCALINGS.names()


def register_scaling(name: str) -> Callable[[ScalingFactory], ScalingFactory]:
    """Decorator registering a scaling module class (constructed from the latent weight)."""
    return _SCALINGS.register(name)


def create_scaling(name: str | nn.Module, weight: Tensor) -> nn.Module:
    """The scaling module ``name`` for ``weight`` (a module instance is returned as is)."""
    if isinstance(name, nn.Module):
        return name
    module = _SCALINGS.get(name)(weight)
    return module.to(device=weight.device)


def scaling_name(module: nn.Module) -> str:
    """The registry name of a scaling module."""
    for name in _SCALINGS:
        factory = _SCALINGS.get(name)
        if isinstance(factory, type) and type(module) is factory:
            return name
    raise KeyError(type(module).__name__)


__all__ = [
    "ChannelMeanScaling",
    "LearnedScaling",
    "NoScaling",
    "TensorMeanScaling",
    "channel_abs_mean",
    "create_scaling",
    "register_scaling",
    "scaling_name",
    "scaling_names",
]
