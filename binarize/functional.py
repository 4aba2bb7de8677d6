"""The sign convention and the one autograd Function behind every estimator.

An estimator supplies its forward value (±1, a relaxed value, or a sample), what its backward
keeps of the input (the input itself, a 1-byte mask, or nothing) and the backward rule on what
it kept; `Binarize` glues them into autograd. It is a plain ``torch.autograd.Function`` that
dynamo traces through (forward, and backward from what ``ctx`` holds), so a model using any
estimator compiles into one graph: the rule is ordinary tensor code on 0-d schedule buffers, and
nothing reads a tensor back to the host.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from binarize.estimators.base import Estimator


def sign(x: Tensor) -> Tensor:
    """±1 with sign(0) = +1 (binarize's convention everywhere: a bit cannot hold 0).

    One comparison and one select (``where(x >= 0, 1, −1)``, in ``x``'s dtype); frozen models
    export it as the standard ONNX ops GreaterOrEqual and Where. ``-0.0`` gives +1, like 0.
    """
    return torch.where(x >= 0, x.new_ones(()), -1.0)


class Binarize(torch.autograd.Function):
    """Forward ``estimator.forward_value(x)``; backward ``estimator.backward_kept(kept, g)`` with
    ``kept = estimator.keep_for_backward(x)`` saved in forward (and nothing else)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, estimator: Estimator) -> Tensor:  # type: ignore[override]
        kept = estimator.keep_for_backward(x)
        ctx.keeps = kept is not None
        if ctx.keeps:
            ctx.save_for_backward(kept)
        ctx.estimator = estimator
        return estimator.forward_value(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        kept = ctx.saved_tensors[0] if ctx.keeps else None
        return ctx.estimator.backward_kept(kept, grad), None
