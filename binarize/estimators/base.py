"""The estimator interface: ±1 forward, surrogate backward, schedule state in buffers."""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from binarize.errors import ConfigError
from binarize.functional import Binarize, run_rule, training_sign


class Estimator(nn.Module):
    """A binarizer with a surrogate gradient.

    Forward returns ``forward_value(x)`` (``sign(x)`` with sign(0) = +1 unless an estimator
    says otherwise); backward returns ``backward(x, g)``, which by default is
    ``g · derivative(x)``. ``surrogate(x)`` is the function whose derivative the backward is.
    Schedules are functions of training progress p ∈ [0, 1] set through ``set_progress`` and
    kept in registered buffers, so checkpoints capture them and ``.to()`` moves them.

    Subclasses set ``name`` (the registry name), ``paper`` and ``summary`` and implement
    ``derivative`` and ``surrogate`` (or ``backward`` when the rule needs the upstream
    gradient). Constructor arguments are the hyperparameters: ``hparams()`` returns them so that
    ``create(name, **est.hparams())`` rebuilds an equal estimator.

    Rules are tensor code: schedule values are the 0-d buffers themselves, used inside tensor
    expressions, never read back with ``float()``/``.item()`` (a host sync per layer and step,
    and a graph break under ``torch.compile``). Backward keeps the input ``x`` by default; an
    estimator that needs less overrides ``keep_for_backward`` and ``backward_kept`` together.
    The built-in rules are written for eager speed as well: no ``where`` or ``pow`` on full
    tensors (slow kernels on CPU), branches as `binarize.functional.indicator` weights (blended
    with ``lerp``, or scaled in place) or 1-byte masks for ``masked_fill_``, and in-place ops on
    the tensors a rule has just created itself.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    #: True for estimators whose training forward samples (frozen models use sign instead).
    stochastic: ClassVar[bool] = False
    #: True to run ``forward_value`` and ``backward_kept`` chunk by chunk on large CPU tensors
    #: (`binarize.functional.in_chunks`). Only for elementwise rules (each output element
    #: depends on the same element of the inputs and on 0-d state), and worth it only for long
    #: ones: a rule of a few passes loses more to the per-chunk overhead than it gains in cache.
    chunked: ClassVar[bool] = False
    #: Weight transform the estimator's paper uses when the user chose none (e.g. ``libra_pb``).
    default_weight_transform: ClassVar[str | None] = None
    #: Scaling the estimator's paper uses when the user chose none (e.g. ``tensor_mean``).
    default_scaling: ClassVar[str | None] = None

    def forward(self, x: Tensor) -> Tensor:
        return Binarize.apply(x, self)

    def forward_value(self, x: Tensor) -> Tensor:
        """The value the forward pass produces; deterministic ``sign`` unless overridden."""
        return training_sign(x)

    def backward(self, x: Tensor, grad: Tensor) -> Tensor:
        """Gradient w.r.t. ``x`` given the upstream ``grad``."""
        return grad * self.derivative(x)

    def forward_and_keep(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(forward value, what backward keeps)`` for one training forward pass.

        By default ``forward_value(x)`` (chunk by chunk for a ``chunked`` rule) and
        ``keep_for_backward(x)``, computed independently.
        """
        return run_rule(self, self.forward_value, x), self.keep_for_backward(x)

    def keep_for_backward(self, x: Tensor) -> Tensor | None:
        """What backward needs of ``x``, saved in forward: ``x`` itself unless overridden."""
        return x

    def backward_kept(self, kept: Tensor | None, grad: Tensor) -> Tensor:
        """Gradient w.r.t. ``x`` from ``keep_for_backward(x)`` and the upstream ``grad``."""
        return self.backward(kept, grad)

    def derivative(self, x: Tensor) -> Tensor:
        """φ(x), the surrogate's derivative at the current progress."""
        raise NotImplementedError

    def surrogate(self, x: Tensor) -> Tensor:
        """f(x), the function whose derivative the backward is."""
        raise NotImplementedError

    @classmethod
    def check_graph(cls, model: nn.Module, binary_fqns: list[str]) -> None:
        """Raises `ConversionError` when a converted model is outside what this estimator covers.

        Called by `convert` with the converted model and the fqns of its binary layers that use
        this estimator. Per-layer estimators accept any graph; network-level ones (PSA) check
        the structure between binary layers here.
        """

    def set_progress(self, progress: float) -> None:
        """Moves schedules to ``progress`` ∈ [0, 1]; estimators without a schedule ignore it."""

    def hparams(self) -> dict[str, Any]:
        """Constructor arguments, such that ``create(self.name, **self.hparams())`` is equal."""
        return {key: getattr(self, key) for key in hparam_defaults(type(self))}

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in self.hparams().items())

    def _schedule_buffer(self, name: str, value: float) -> None:
        """Registers a float64 scalar buffer holding schedule state."""
        self.register_buffer(name, torch.tensor(float(value), dtype=torch.float64))

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        # Keep schedule scalars in float64 when the model is cast (e.g. .half()); only move them.
        saved = {name: buf for name, buf in self._buffers.items() if buf is not None}
        result = super()._apply(fn, recurse)
        for name, buf in saved.items():
            moved = self._buffers[name]
            if moved is not None and moved.dtype != buf.dtype:
                self._buffers[name] = moved.to(buf.dtype)
        return result


def hparam_defaults(cls: type[Estimator]) -> dict[str, Any]:
    """The named constructor arguments of an estimator class with their defaults."""
    if cls.__init__ is nn.Module.__init__:
        return {}
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = inspect.signature(cls.__init__).parameters
    return {k: p.default for k, p in params.items() if k != "self" and p.kind in named}


def require(estimator: Estimator, key: str, valid: bool, expected: str) -> None:
    """Called by constructors: a hyperparameter outside its range is refused at once, as one
    line, instead of failing later (o_end = 0 would divide by zero mid-training)."""
    value = getattr(estimator, key)
    if not valid or (isinstance(value, float) and not math.isfinite(value)):
        default = hparam_defaults(type(estimator))[key]
        raise ConfigError(f"{estimator.name}.{key}={value!r} is out of range",
                          f"{key} must be a finite number {expected} (default {key}={default!r})")
