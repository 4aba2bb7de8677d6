"""The one autograd Function behind every estimator: any forward value, a pluggable backward.

Every estimator computes its forward value (±1, a relaxed value, or a sample) and supplies a
backward ``(x, grad) -> grad_x``; this module glues the two into autograd.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Backward = Callable[[Tensor, Tensor], Tensor]


def sign(x: Tensor) -> Tensor:
    """±1 with sign(0) = +1 (binarize's convention everywhere: a bit cannot hold 0).

    Written as ``(x >= 0) · 2 − 1`` so that frozen models export to the standard ONNX ops
    GreaterOrEqual and Cast.
    """
    return (x >= 0).to(x.dtype) * 2 - 1


class _Surrogate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, value: Tensor, backward: Backward) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.backward_rule = backward
        return value.detach().clone()

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return ctx.backward_rule(x, grad), None, None


def with_surrogate_gradient(x: Tensor, value: Tensor, backward: Backward) -> Tensor:
    """Returns ``value`` in forward; in backward, ``backward(x, upstream_grad)`` flows to ``x``.

    ``value`` carries no gradient of its own; it is typically ``sign(x)``.
    """
    return _Surrogate.apply(x, value, backward)
