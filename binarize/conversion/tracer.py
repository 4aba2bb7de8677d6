"""Symbolic tracing that keeps binary layers (and user-chosen classes) as leaves."""

from __future__ import annotations

from collections.abc import Iterable

import torch.fx
from torch import nn

from binarize.nn.layers import BinaryLayer


class BinarizeTracer(torch.fx.Tracer):
    """A `torch.fx.Tracer` whose leaves are torch.nn's own modules, binary layers and
    ``extra_leaves`` (classes a user wants treated as opaque)."""

    def __init__(self, extra_leaves: Iterable[type[nn.Module]] = ()) -> None:
        super().__init__()
        self.extra_leaves = tuple(extra_leaves)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, BinaryLayer) or isinstance(m, self.extra_leaves):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def trace(model: nn.Module, extra_leaves: Iterable[type[nn.Module]] = ()) -> torch.fx.GraphModule:
    """Traces ``model`` into a GraphModule sharing its submodules (no copy is made)."""
    graph = BinarizeTracer(extra_leaves).trace(model)
    return torch.fx.GraphModule(model, graph, type(model).__name__)


def called_modules_in_order(gm: torch.fx.GraphModule) -> list[str]:
    """The fqns of the modules the graph calls, in execution order, each once."""
    seen: dict[str, None] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            seen.setdefault(str(node.target), None)
    return list(seen)
