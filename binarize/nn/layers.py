"""Binary Conv1d/Conv2d/Linear: latent float weights, ±1 weights and inputs in forward.

Each layer has four plain slots: ``weight_estimator``, ``input_estimator`` (None keeps float
activations, i.e. W1A32), ``scaling`` (α from the latent weight) and ``weight_transform``
(applied to the latent weight first, e.g. Libra-PB). The output is
``op(x_b, weight_estimator(T(W))) · α + bias``: α multiplies the output per channel rather
than the weights, so that with ±1 inputs and weights the accumulation is exact integers, as in
the frozen model, ONNX and the packed runtime (scaling the weights first rounds, and inputs
near 0 could then take another sign downstream).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from binarize.estimators import Estimator, create
from binarize.functional import sign
from binarize.nn.geometry import ConvGeometry
from binarize.nn.scaling import NoScaling, create_scaling
from binarize.nn.transforms import create_transform

FloatLayer = TypeVar("FloatLayer", nn.Conv1d, nn.Conv2d, nn.Linear)


class BinaryLayer(nn.Module):
    """Shared behaviour of the binary layers; not instantiated on its own."""

    float_type: type[nn.Module]
    weight: nn.Parameter
    weight_estimator: Estimator
    input_estimator: Estimator | None
    scaling: nn.Module
    weight_transform: nn.Module | None

    def _init_slots(
        self,
        weight_estimator: str | Estimator,
        input_estimator: str | Estimator | None,
        scaling: str | nn.Module,
        weight_transform: str | nn.Module | None,
    ) -> None:
        self.weight_transform = create_transform(weight_transform)
        self.weight_estimator = create(weight_estimator)
        self.input_estimator = None if input_estimator in (None, "none") else create(input_estimator)
        self.scaling = create_scaling(scaling, self.transformed_weight().detach())

    def transformed_weight(self) -> Tensor:
        """The latent weight after ``weight_transform``: what gets binarized and scaled."""
        return self.weight if self.weight_transform is None else self.weight_transform(self.weight)

    def binary_weight(self) -> Tensor:
        """The effective weight ``±1 · α`` with the estimators' gradients attached."""
        latent = self.transformed_weight()
        return self.weight_estimator(latent) * self.scaling(latent)

    def binarize_input(self, x: Tensor) -> Tensor:
        return x if self.input_estimator is None else self.input_estimator(x)

    def _binary_forward(self, x: Tensor, op: Callable[[Tensor, Tensor], Tensor], channel_dim: int) -> Tensor:
        """``op(x_b, signs) · α + bias`` with α and bias broadcast along ``channel_dim``."""
        latent = self.transformed_weight()
        out = op(self.binarize_input(x), self.weight_estimator(latent))
        bias = None if self.bias is None else _along(self.bias, out.dim(), channel_dim)
        if isinstance(self.scaling, NoScaling):  # α = 1: no pass over the output at all
            return out if bias is None else out.add_(bias)
        # In place on op's new output (op's backward does not need it): no output-sized
        # allocation. Autograd keeps `out` only when α itself takes a gradient; then the
        # product is a new tensor. Not fused into one FMA (addcmul): the frozen model, ONNX and
        # the packed runtime round out·α and + bias separately, and training must match them
        # bit for bit.
        alpha = _along(self.scaling(latent), out.dim(), channel_dim)
        out = out * alpha if alpha.requires_grad and torch.is_grad_enabled() else out.mul_(alpha)
        return out if bias is None else out.add_(bias)

    @torch.no_grad()
    def frozen_weight(self) -> tuple[Tensor, Tensor]:
        """Deterministic ``(signs, alpha)``: signs in {−1, +1} shaped like ``weight`` and α
        broadcastable against it, such that eval-mode forward uses ``signs · alpha``."""
        latent = self.transformed_weight()
        return sign(latent), self.scaling(latent).expand(
            (latent.shape[0],) + (1,) * (latent.dim() - 1)
        ).clone()

    @classmethod
    def from_float(
        cls,
        layer: nn.Module,
        *,
        weight_estimator: str | Estimator = "ste",
        input_estimator: str | Estimator | None = "ste",
        scaling: str | nn.Module = "channel_mean",
        weight_transform: str | nn.Module | None = None,
    ) -> BinaryLayer:
        """A binary copy of the float ``layer`` (hyperparameters, device, dtype, weights)."""
        if type(layer) is not cls.float_type and not isinstance(layer, cls.float_type):
            raise TypeError(f"{cls.__name__}.from_float expects {cls.float_type.__name__}")
        binary = cls(
            **cls._float_kwargs(layer),
            device=layer.weight.device,
            dtype=layer.weight.dtype,
            weight_estimator=weight_estimator,
            input_estimator=input_estimator,
            scaling=scaling,
            weight_transform=weight_transform,
            latent_weight=layer.weight.detach(),
        )
        if layer.bias is not None:
            binary.bias.data.copy_(layer.bias.detach())
        binary.train(layer.training)
        return binary

    def to_float(self) -> nn.Module:
        """The float layer with the latent weight (and bias): undoes ``from_float``."""
        layer = self.float_type(
            **self._float_kwargs(self), device=self.weight.device, dtype=self.weight.dtype
        )
        layer.weight.data.copy_(self.weight.detach())
        if self.bias is not None:
            layer.bias.data.copy_(self.bias.detach())
        layer.train(self.training)
        return layer

    @staticmethod
    def _float_kwargs(layer: Any) -> dict[str, Any]:
        raise NotImplementedError

    def _load_latent(self, latent_weight: Tensor | None) -> None:
        if latent_weight is not None:
            with torch.no_grad():
                self.weight.copy_(latent_weight)


def _along(values: Tensor, dims: int, channel_dim: int) -> Tensor:
    """Per-channel ``values`` (any shape with O elements, or a scalar) shaped to broadcast
    along ``channel_dim`` of a ``dims``-dimensional output."""
    if values.numel() == 1:
        return values.reshape(())
    shape = [1] * dims
    shape[channel_dim] = -1
    return values.reshape(shape)


def _conv_kwargs(layer: Any) -> dict[str, Any]:
    return {
        "in_channels": layer.in_channels,
        "out_channels": layer.out_channels,
        "bias": layer.bias is not None,
        **asdict(ConvGeometry.of(layer)),
    }


class _BinaryConv(BinaryLayer):
    """Constructor and forward shared by the binary convolutions."""

    _float_kwargs = staticmethod(_conv_kwargs)

    def __init__(
        self,
        *args: Any,
        weight_estimator: str | Estimator = "ste",
        input_estimator: str | Estimator | None = "ste",
        scaling: str | nn.Module = "channel_mean",
        weight_transform: str | nn.Module | None = None,
        latent_weight: Tensor | None = None,
        **kwargs: Any,
    ) -> None:
        self.float_type.__init__(self, *args, **kwargs)
        self._load_latent(latent_weight)
        self._init_slots(weight_estimator, input_estimator, scaling, weight_transform)

    def forward(self, x: Tensor) -> Tensor:
        return self._binary_forward(x, lambda inputs, signs: self._conv_forward(inputs, signs, None), 1)


class BinaryConv2d(_BinaryConv, nn.Conv2d):
    """`nn.Conv2d` with binary weights (and inputs unless ``input_estimator`` is None)."""

    float_type = nn.Conv2d


class BinaryConv1d(_BinaryConv, nn.Conv1d):
    """`nn.Conv1d` with binary weights (and inputs unless ``input_estimator`` is None)."""

    float_type = nn.Conv1d


class BinaryLinear(BinaryLayer, nn.Linear):
    """`nn.Linear` with binary weights (and inputs unless ``input_estimator`` is None)."""

    float_type = nn.Linear

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        weight_estimator: str | Estimator = "ste",
        input_estimator: str | Estimator | None = "ste",
        scaling: str | nn.Module = "channel_mean",
        weight_transform: str | nn.Module | None = None,
        latent_weight: Tensor | None = None,
    ) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias, device=device, dtype=dtype)
        self._load_latent(latent_weight)
        self._init_slots(weight_estimator, input_estimator, scaling, weight_transform)

    @staticmethod
    def _float_kwargs(layer: Any) -> dict[str, Any]:
        return {
            "in_features": layer.in_features,
            "out_features": layer.out_features,
            "bias": layer.bias is not None,
        }

    def forward(self, x: Tensor) -> Tensor:
        return self._binary_forward(x, F.linear, -1)


#: Float layer type → its binary counterpart (exact types; subclasses are looked up by MRO).
BINARY_COUNTERPART: dict[type[nn.Module], type[BinaryLayer]] = {
    nn.Conv1d: BinaryConv1d,
    nn.Conv2d: BinaryConv2d,
    nn.Linear: BinaryLinear,
}


def binary_counterpart(layer: nn.Module) -> type[BinaryLayer] | None:
    """The binary class for ``layer`` (None when it has none or is binary already)."""
    if isinstance(layer, BinaryLayer):
        return None
    for klass in type(layer).__mro__:
        if klass in BINARY_COUNTERPART:
            return BINARY_COUNTERPART[klass]
    return None
