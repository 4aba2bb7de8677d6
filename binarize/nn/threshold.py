"""A learned per-channel sign threshold in front of a binary layer (ReActNet's RSign).

A binary layer binarizes sign(x); when almost every input element has one sign (a max-pool of
centred values, the global average of SiLU outputs) the ±1 input carries almost no
information. With `InputThreshold` in front, the layer binarizes sign(x − τ_c): τ is one
trainable value per input channel (a float `Sub` before the sign in ONNX and in the packed
format's float part), started where each channel's signs are balanced (`balance`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class InputThreshold(nn.Module):
    """``x − τ``: one trainable τ per channel, broadcast along the channel dimension
    (``channels`` then ``spatial_dims`` trailing dimensions: 2 before a Conv2d, 0 before a
    Linear, whose channels are the last dimension).

    >>> threshold = InputThreshold(2, spatial_dims=1)
    >>> threshold.balance(torch.tensor([[[1.0, 2.0, 3.0], [10.0, 20.0, 40.0]]]))
    >>> threshold.tau.flatten().tolist()
    [2.0, 20.0]
    """

    def __init__(self, channels: int, spatial_dims: int = 0, *, device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.tau = nn.Parameter(torch.zeros((channels,) + (1,) * spatial_dims, device=device, dtype=dtype))

    @classmethod
    def before(cls, layer: nn.Module) -> InputThreshold:
        """The threshold for the input of ``layer`` (a Conv or Linear, float or binary)."""
        weight = layer.weight
        if isinstance(layer, nn.Linear):
            return cls(layer.in_features, 0, device=weight.device, dtype=weight.dtype)
        return cls(layer.in_channels, weight.dim() - 2, device=weight.device, dtype=weight.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return x - self.tau

    @torch.no_grad()
    def balance(self, x: Tensor) -> None:
        """Sets τ to each channel's median of ``x`` (the mean of the two middle values of an
        even count), so that about half of the channel's values lie below it. A channel seen
        once per batch (a global average, batch 1) takes the median over all channels instead."""
        channel_dim = x.dim() - self.tau.dim()
        values = x.detach().movedim(channel_dim, 0).reshape(self.tau.shape[0], -1)
        if values.shape[1] < 2:
            values = values.reshape(1, -1)
        ordered = values.sort(dim=1).values
        count = ordered.shape[1]
        middle = (ordered[:, (count - 1) // 2] + ordered[:, count // 2]) / 2
        self.tau.copy_(middle.to(self.tau.dtype).expand(self.tau.shape[0]).reshape(self.tau.shape))

    def extra_repr(self) -> str:
        return f"channels={self.tau.shape[0]}"


__all__ = ["InputThreshold"]
