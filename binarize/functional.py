"""The sign convention and the one autograd Function behind every estimator.

An estimator supplies its forward value (±1, a relaxed value, or a sample), what its backward
keeps of the input (the input itself, a 1-byte mask, or nothing) and the backward rule on what
it kept; `Binarize` glues them into autograd. It is a plain ``torch.autograd.Function`` that
dynamo traces through (forward, and backward from what ``ctx`` holds), so a model using any
estimator compiles into one graph: the rule is ordinary tensor code on 0-d schedule buffers, and
nothing reads a tensor back to the host. In eager mode on the CPU, the rules of a
``chunked`` estimator run chunk by chunk over large tensors (`in_chunks`): same values, but
each chunk's temporaries stay in cache across the rule's passes.
"""

from __future__ import annotations

from collections.abc import Callable
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


def training_sign(x: Tensor) -> Tensor:
    """`sign`'s values (sign(0) = sign(−0) = +1, NaN → −1) for the training forward pass.

    ``x ≥ 0`` written straight into a float tensor as 1.0/0.0, then ·2 − 1 in place: three
    vectorised passes into one new tensor, where `sign`'s bool mask and ``where`` cost five
    times as much in eager on CPU (measured on 2.4 M elements). Not for export: frozen models
    use `sign`, which exports as the standard ONNX ops.
    """
    return indicator(torch.ge, x, 0.0).mul_(2.0).sub_(1.0)


def indicator(compare: Callable[..., Tensor], x: Tensor, bound: Tensor | float) -> Tensor:
    """``compare(x, bound)`` (e.g. ``torch.le``) as 1.0/0.0 in ``x``'s dtype, a new tensor.

    The comparison writes straight into a float tensor: one pass, where a bool mask takes a
    slow conversion (or a slower ``where``) before it can multiply anything in eager on CPU.
    Rules then blend branches with ``lerp`` on these weights, which is exact at 0 and 1.
    """
    return compare(x, bound, out=torch.empty_like(x))


#: Elements per chunk in `in_chunks`: a rule's few float32 temporaries of this size (512 KiB
#: each) stay in the caches between its passes. Measured on a 2.4 M-element weight (1 thread,
#: min of 12): AdaSTE's forward and backward took 17.7 ns/element whole, 14.5 in chunks of
#: 2^16, 13.4 of 2^17, 12.6 of 2^18.
CHUNK = 1 << 18


def in_chunks(rule: Callable[..., Tensor], *tensors: Tensor) -> Tensor:
    """``rule(*tensors)`` for an elementwise rule over same-shaped tensors, computed chunk by chunk.

    A rule is a chain of elementwise passes (a comparison, a ``lerp``, a multiply...); on a
    weight of millions of elements each pass streams every temporary through main memory, and
    that streaming, not the arithmetic, is what a binary training step pays on the CPU. Run on
    ``CHUNK`` elements at a time, the passes reuse cached data. Elementwise ops give the same
    values on a slice as on the whole, and torch's CPU generator draws in element order, so
    sampling rules draw the same numbers too. Applies in eager mode to contiguous CPU tensors
    larger than two chunks; otherwise (and under ``torch.compile``, which fuses the passes
    itself) the rule runs once on the whole tensors.
    """
    first = tensors[0]
    if (
        first.numel() <= 2 * CHUNK
        or first.device.type != "cpu"
        or torch.compiler.is_compiling()
        or not all(t.shape == first.shape and t.is_contiguous() for t in tensors)
    ):
        return rule(*tensors)
    flat = [t.view(-1) for t in tensors]
    head = rule(*(f[:CHUNK] for f in flat))
    out = torch.empty(first.numel(), dtype=head.dtype, device=first.device)
    out[:CHUNK] = head
    for start in range(CHUNK, first.numel(), CHUNK):
        out[start : start + CHUNK] = rule(*(f[start : start + CHUNK] for f in flat))
    return out.view(first.shape)


class Binarize(torch.autograd.Function):
    """Forward and kept tensor from ``estimator.forward_and_keep(x)`` (by default
    ``forward_value(x)`` and ``keep_for_backward(x)``); backward
    ``estimator.backward_kept(kept, g)`` with only ``kept`` saved. The rules of a ``chunked``
    estimator run through `in_chunks`."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, estimator: Estimator) -> Tensor:  # type: ignore[override]
        ctx.estimator = estimator
        if not ctx.needs_input_grad[0]:  # inference, or a frozen input: nothing to keep
            ctx.keeps = False
            return run_rule(estimator, estimator.forward_value, x)
        value, kept = estimator.forward_and_keep(x)
        ctx.keeps = kept is not None
        if ctx.keeps:
            ctx.save_for_backward(kept)
        return value

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        if not ctx.keeps:
            return ctx.estimator.backward_kept(None, grad), None
        return run_rule(ctx.estimator, ctx.estimator.backward_kept, ctx.saved_tensors[0], grad), None


def run_rule(estimator: Estimator, rule: Callable[..., Tensor], *tensors: Tensor) -> Tensor:
    """``rule(*tensors)``, chunk by chunk (`in_chunks`) when the estimator is ``chunked``."""
    return in_chunks(rule, *tensors) if estimator.chunked else rule(*tensors)
