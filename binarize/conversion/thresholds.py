"""Learned input thresholds in the converted graph: where they go and where they start.

A binary layer with ``LayerConfig.input_threshold`` binarizes sign(x − τ_c) (ReActNet's RSign).
τ lives in a float `InputThreshold` module that the graph calls just before the layer, named
after it (``layer1.0.conv1`` → ``layer1.0.conv1_input_threshold``), not inside the binary
layer: freeze, ONNX export, the packed writer and both packed engines then see one more float
op (a ``Sub``) and need nothing of their own; the checkpoint replays it from the plan record of
the layer and loads τ with the other weights.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager

import torch.fx
from torch import nn

from binarize.errors import ConversionError
from binarize.nn.threshold import InputThreshold

_SUFFIX = "_input_threshold"


def threshold_name(fqn: str) -> str:
    """The fqn of the threshold in front of binary layer ``fqn`` (a sibling of it)."""
    return f"{fqn}{_SUFFIX}"


def has_threshold(model: nn.Module, fqn: str) -> bool:
    """Whether binary layer ``fqn`` of ``model`` has a threshold in front of it."""
    try:
        return isinstance(model.get_submodule(threshold_name(fqn)), InputThreshold)
    except AttributeError:
        return False


def insert_thresholds(gm: torch.fx.GraphModule, fqns: Collection[str]) -> set[str]:
    """Puts an `InputThreshold` (τ = 0) in front of every call of the layers ``fqns``; returns
    the fqns the graph calls (layers inside an opaque leaf get none)."""
    placed: set[str] = set()
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or node.target not in fqns or not node.args:
            continue
        fqn, name = str(node.target), threshold_name(str(node.target))
        if fqn not in placed and not gm.add_submodule(name, InputThreshold.before(gm.get_submodule(fqn))):
            raise ConversionError(f"cannot place an input threshold at {name}", "report this model as a bug")
        with gm.graph.inserting_before(node):
            shifted = gm.graph.call_module(name, (node.args[0],))
        node.update_arg(0, shifted)
        placed.add(fqn)
    return placed


@contextmanager
def balancing(model: nn.Module) -> Iterator[None]:
    """While active, every threshold of ``model`` starts at its channels' medians of the input
    a forward brings it: each is set as the forward reaches it, so it sees the inputs that the
    thresholds before it produce, and the layer after it sees the balanced input in that same
    forward (one forward both starts the thresholds and measures the signs)."""
    hooks = [m.register_forward_pre_hook(lambda m, inputs: m.balance(inputs[0]))
             for m in model.modules() if isinstance(m, InputThreshold)]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
