"""Symbolic tracing that keeps binary layers and user-chosen leaves opaque.

A leaf is a submodule the tracer calls as one node instead of tracing through its forward:
what makes one submodule untraceable (data-dependent control flow, calls torch.fx cannot
follow) then no longer sends the whole model to the swap-by-name fallback. Leaves are given
per call (``convert(..., leaves=[...])``: classes or fqns) or for every conversion by the
`register_leaf` class decorator (the way timm's ``register_notrace_module`` works); when
tracing fails inside a submodule, conversion makes its class a leaf and traces again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import torch.fx
from torch import nn

from binarize.conversion.training_mode import follow_training_mode
from binarize.errors import ConversionError
from binarize.nn.layers import BinaryLayer

ModuleType = TypeVar("ModuleType", bound=type[nn.Module])

#: Classes registered with `register_leaf`.
_REGISTERED: set[type[nn.Module]] = set()


def register_leaf(cls: ModuleType) -> ModuleType:
    """Class decorator: binarize traces every instance of ``cls`` as one opaque call.

    Its weighted layers are still binarized (found by a forward with the example input, as in
    the swap-by-name fallback); the activation policy cannot look inside it.

    >>> import torch
    >>> from torch import nn
    >>> import binarize
    >>> @binarize.register_leaf
    ... class Gate(nn.Module):
    ...     def forward(self, x):
    ...         return x if x.sum() > 0 else -x  # data-dependent: torch.fx cannot trace it
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), Gate(), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 4, 3))
    >>> binary = binarize.convert(net, example_inputs=(torch.randn(1, 3, 16, 16),))
    >>> binarize.provenance_of(binary).report.mode, binarize.provenance_of(binary).report.leaves
    ('fx', ('1',))
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_leaf decorates nn.Module subclasses, not {cls!r}")
    _REGISTERED.add(cls)
    return cls


class BinarizeTracer(torch.fx.Tracer):
    """A `torch.fx.Tracer` whose leaves are torch.nn's own modules, binary layers, registered
    leaf classes and ``leaves`` (classes or fqns); ``self.leaves`` collects the fqns of the
    user leaves met while tracing."""

    def __init__(self, leaves: Iterable[type[nn.Module] | str] = ()) -> None:
        super().__init__()
        given = tuple(leaves)
        self.leaf_types = (*(leaf for leaf in given if isinstance(leaf, type)), *_REGISTERED)
        self.leaf_names = frozenset(leaf for leaf in given if isinstance(leaf, str))
        self.leaves: dict[str, None] = {}

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, BinaryLayer):
            return True
        if isinstance(m, self.leaf_types) or module_qualified_name in self.leaf_names:
            self.leaves.setdefault(module_qualified_name, None)
            return True
        return super().is_leaf_module(m, module_qualified_name)


def trace(
    model: nn.Module, leaves: Iterable[type[nn.Module] | str] = ()
) -> tuple[torch.fx.GraphModule, tuple[str, ...]]:
    """Traces ``model`` into a GraphModule sharing its submodules (no copy is made), and the
    fqns of the user leaves (given or registered) the graph calls. Arguments that say train or
    eval follow the GraphModule's mode (`binarize.conversion.training_mode`)."""
    leaves = tuple(leaves)
    _check_leaves(model, leaves)
    tracer = BinarizeTracer(leaves)
    gm = torch.fx.GraphModule(model, tracer.trace(model), type(model).__name__)
    follow_training_mode(gm)
    return gm, tuple(tracer.leaves)


def untraceable_submodule(model: nn.Module, error: BaseException) -> str | None:
    """The fqn of the innermost submodule of ``model`` (not ``model`` itself) whose forward was
    running when tracing raised ``error``, found in the traceback; None if there is none."""
    names = {id(module): name for name, module in model.named_modules() if module is not model}
    found, frames = None, error.__traceback__
    while frames is not None:  # from the outermost frame inwards
        owner = frames.tb_frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and id(owner) in names:
            found = names[id(owner)]
        frames = frames.tb_next
    return found


def _check_leaves(model: nn.Module, leaves: tuple[type[nn.Module] | str, ...]) -> None:
    names = {name for name, _ in model.named_modules()}
    for leaf in leaves:
        if isinstance(leaf, str) and leaf not in names:
            raise ConversionError(f"leaf {leaf!r} names no submodule", "use a name from model.named_modules()")
        if not isinstance(leaf, str) and not (isinstance(leaf, type) and issubclass(leaf, nn.Module)):
            raise ConversionError(f"leaf {leaf!r} is neither a module class nor a name", "pass nn.Module classes or fqns")


def called_modules_in_order(gm: torch.fx.GraphModule) -> list[str]:
    """The fqns of the modules the graph calls, in execution order, each once."""
    seen: dict[str, None] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            seen.setdefault(str(node.target), None)
    return list(seen)
