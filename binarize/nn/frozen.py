"""Freeze: a deterministic, deployment-ready copy of a binary model.

Every binary layer becomes a frozen layer holding plain tensors — ``signs`` (±1, the weight's
shape), ``alpha`` (one scale per output channel) and ``bias`` — and computing

    y = conv(sign(x), signs) · α + bias        (sign only if the layer had one)

with standard operations only (``x >= 0``, cast, conv/linear, multiply, add), so that ONNX
export and the packed writer see neither estimators nor autograd Functions. α multiplies the
output per channel *before* the bias, which equals ``conv(x_b, signs · α) + bias`` because
convolution is linear in each output channel's weights.

The attribute names (``signs``, ``alpha``, ``bias``, ``binary_input`` and a convolution's
``geometry``) are a stable interface: the packed writer reads them.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from binarize.functional import sign
from binarize.nn.geometry import ConvGeometry
from binarize.nn.layers import BinaryConv1d, BinaryConv2d, BinaryLayer, BinaryLinear


class FrozenBinaryLayer(nn.Module):
    """Shared state of the frozen layers: ``signs``, ``alpha``, ``bias`` and ``binary_input``."""

    signs: Tensor
    alpha: Tensor
    bias: Tensor | None

    def __init__(self, signs: Tensor, alpha: Tensor, bias: Tensor | None, binary_input: bool) -> None:
        super().__init__()
        self.register_buffer("signs", signs.detach().clone())
        self.register_buffer("alpha", alpha.detach().reshape(-1).clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.binary_input = bool(binary_input)
        if self.alpha.numel() != signs.shape[0]:
            raise ValueError(f"alpha has {self.alpha.numel()} values for {signs.shape[0]} output channels")

    @property
    def out_channels(self) -> int:
        return self.signs.shape[0]

    def _prepare(self, x: Tensor) -> Tensor:
        return sign(x) if self.binary_input else x

    def _scale_and_shift(self, y: Tensor, channel_dim: int) -> Tensor:
        # α and bias broadcast along the output-channel dimension of y.
        shape = [1] * y.dim()
        shape[channel_dim] = -1
        y = y * self.alpha.reshape(shape)
        return y if self.bias is None else y + self.bias.reshape(shape)

    def effective_weight(self) -> Tensor:
        """``signs · α``: the float weight this layer is equivalent to."""
        return self.signs * self.alpha.reshape((-1,) + (1,) * (self.signs.dim() - 1))

    def extra_repr(self) -> str:
        return f"signs={tuple(self.signs.shape)}, binary_input={self.binary_input}, bias={self.bias is not None}"


class FrozenBinaryConv(FrozenBinaryLayer):
    """Shared by the frozen convolutions: ``in_channels`` and the source layer's `ConvGeometry`."""

    def __init__(self, layer: nn.Module, signs: Tensor, alpha: Tensor, binary_input: bool) -> None:
        super().__init__(signs, alpha, layer.bias, binary_input)
        self.in_channels: int = layer.in_channels
        self.geometry = ConvGeometry.of(layer)

    def forward(self, x: Tensor) -> Tensor:
        return self._scale_and_shift(self.geometry.convolve(self._prepare(x), self.signs), channel_dim=1)


class FrozenBinaryConv2d(FrozenBinaryConv):
    """A frozen `BinaryConv2d`: ``conv2d(sign(x), signs) · α + bias``."""


class FrozenBinaryConv1d(FrozenBinaryConv):
    """A frozen `BinaryConv1d`: ``conv1d(sign(x), signs) · α + bias``."""


class FrozenBinaryLinear(FrozenBinaryLayer):
    """A frozen `BinaryLinear`: ``linear(sign(x), signs) · α + bias``."""

    def __init__(self, layer: nn.Module, signs: Tensor, alpha: Tensor, binary_input: bool) -> None:
        super().__init__(signs, alpha, layer.bias, binary_input)
        self.in_features: int = layer.in_features
        self.out_features: int = layer.out_features

    def forward(self, x: Tensor) -> Tensor:
        y = F.linear(self._prepare(x), self.signs)
        return self._scale_and_shift(y, channel_dim=-1)


FROZEN_COUNTERPART: dict[type[BinaryLayer], type[FrozenBinaryLayer]] = {
    BinaryConv1d: FrozenBinaryConv1d,
    BinaryConv2d: FrozenBinaryConv2d,
    BinaryLinear: FrozenBinaryLinear,
}


def freeze_layer(layer: BinaryLayer) -> FrozenBinaryLayer:
    """The frozen counterpart of one binary layer (its eval-mode function, standard ops)."""
    frozen_type = next(
        (FROZEN_COUNTERPART[klass] for klass in type(layer).__mro__ if klass in FROZEN_COUNTERPART), None
    )
    if frozen_type is None:
        raise TypeError(f"no frozen counterpart for {type(layer).__name__}")
    signs, alpha = layer.frozen_weight()
    frozen = frozen_type(layer, signs, alpha, binary_input=layer.input_estimator is not None)
    return frozen.to(device=layer.weight.device)


@torch.no_grad()
def freeze(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode whose binary layers are frozen layers.

    Each binary layer holds its ±1 weights and per-channel scale as plain tensors and computes
    with standard operations only; stochastic estimators become deterministic (sign, with
    sign(0) = +1). The output equals ``model.eval()``'s up to float rounding. ``model`` itself
    is not changed. Its `binarize.provenance_of` record goes with the copy.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from binarize import convert, freeze
        >>> binary = convert(nn.Sequential(nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 4)))
        >>> frozen = freeze(binary)
        >>> [type(m).__name__ for m in frozen.modules() if "Binary" in type(m).__name__]
        ['FrozenBinaryLinear']
        >>> x = torch.randn(3, 16)
        >>> torch.allclose(frozen(x), binary.eval()(x), atol=1e-5)
        True
    """
    frozen = copy.deepcopy(model)
    frozen.eval()
    binary = [(name, module) for name, module in frozen.named_modules() if isinstance(module, BinaryLayer)]
    for name, layer in binary:
        replacement = freeze_layer(layer)
        if not name:
            return replacement.eval()
        frozen.set_submodule(name, replacement)
    return frozen


def frozen_layers(model: nn.Module) -> dict[str, FrozenBinaryLayer]:
    """The frozen binary layers of ``model`` by fqn."""
    return {name: m for name, m in model.named_modules() if isinstance(m, FrozenBinaryLayer)}
