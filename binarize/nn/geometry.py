"""Convolution geometry: how an ``nn.ConvNd`` kernel slides, as one typed record.

Binary layers (to rebuild their float twin), frozen layers (to convolve) and the packed writer
(to write a `BinaryConv` node) read this one record instead of copying stride, padding,
dilation, groups and padding mode one by one; the padding on each side is computed here only.

    >>> from torch import nn
    >>> geometry = ConvGeometry.of(nn.Conv2d(1, 1, (3, 4), padding="same"))
    >>> geometry.sides()  # (begins, ends); the odd padding goes at the end
    ((1, 1), (1, 2))

The packed runtime does not use it: it must not import torch, and it reads the same geometry
from the node's ONNX attributes (`binarize.packed.ops.ConvAttributes`, parsed and bounded by
the validator), where padding is already explicit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor
from torch.nn import functional as F

_CONVOLUTIONS = {1: F.conv1d, 2: F.conv2d}  # the ranks binary layers have


@dataclass(frozen=True)
class ConvGeometry:
    """The hyperparameters of a convolution, named and typed as ``nn.ConvNd`` stores them."""

    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: str | tuple[int, ...]  # "valid", "same" or one value per spatial dimension
    dilation: tuple[int, ...]
    groups: int
    padding_mode: str  # "zeros", "reflect", "replicate" or "circular"

    @classmethod
    def of(cls, conv: Any) -> ConvGeometry:
        """The geometry of ``conv`` (an ``nn.ConvNd`` or anything with its attributes)."""
        padding = conv.padding if isinstance(conv.padding, str) else tuple(conv.padding)
        return cls(tuple(conv.kernel_size), tuple(conv.stride), padding, tuple(conv.dilation),
                   int(conv.groups), str(conv.padding_mode))

    def sides(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Padding before and after each spatial dimension. "same" splits ``dilation·(k−1)``
        with the odd element at the end, as torch and its ONNX exporter do."""
        if self.padding == "valid":
            zeros = (0,) * len(self.kernel_size)
            return zeros, zeros
        if self.padding == "same":
            totals = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
            return tuple(t // 2 for t in totals), tuple(t - t // 2 for t in totals)
        assert not isinstance(self.padding, str), f"unknown padding {self.padding!r}"
        return self.padding, self.padding

    def pad(self, x: Tensor) -> Tensor:
        """``x`` padded by ``padding_mode`` when it is not "zeros" (then the convolution pads
        nothing itself); unchanged for zero padding, which the convolution applies."""
        if self.padding_mode == "zeros":
            return x
        begins, ends = self.sides()
        # F.pad lists (begin, end) pairs from the last dimension backwards
        pairs = [value for begin, end in reversed(list(zip(begins, ends))) for value in (begin, end)]
        return F.pad(x, pairs, mode=self.padding_mode)

    def convolve(self, x: Tensor, weight: Tensor) -> Tensor:
        """``x`` convolved with ``weight`` (no bias) exactly as the ``nn.ConvNd`` would."""
        padding = self.padding if self.padding_mode == "zeros" else 0
        return _CONVOLUTIONS[len(self.kernel_size)](self.pad(x), weight, None, self.stride, padding,
                                                   self.dilation, self.groups)
