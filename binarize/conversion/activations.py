"""The activation policy: binary layers fed by an activation whose output has one sign.

sign(ReLU(x)) is +1 everywhere (sign(0) = +1), and so is the sign of ReLU6, Hardsigmoid and
Sigmoid outputs: a binary layer reading them sees a constant, carries no information, and the
BatchNorm after it divides by √eps in backward. Activations whose output keeps the sign of
their input (SiLU, GELU, LeakyReLU, PReLU, Hardswish, Tanh, ...) need nothing.

Between the activation and the binary layer the walk looks through ops that keep the sign
structure (pooling, dropout, flatten/reshape, mean, multiplication by a non-negative gate as
in squeeze-excitation); they are re-applied to the pre-activation. Two rewrites of the
torch.fx graph, chosen by `BinarizeConfig.activation_policy`:

- ``bypass``: the binary layer reads the activation's input (through copies of the ops in
  between); every other consumer (shortcuts, float layers) keeps reading the activation.
- ``hardtanh``: the activation node is replaced by ``hardtanh(x)`` (a clip to [-1, 1], the
  Bi-Real Net / ReActNet preparation) for all its consumers.

Inputs that are only *nearly* one-signed without such an activation (a max-pool of centred
values, a squeeze-excitation average of SiLU outputs) are measured after conversion and get a
learned threshold instead (`binarize.conversion.thresholds`).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx
from torch import nn
from torch.nn import functional as F

#: Activations whose output has a constant sign (what the policy rewrites).
ONE_SIGNED_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardsigmoid, nn.Sigmoid)
ONE_SIGNED_FUNCTIONS = frozenset(
    {F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.hardsigmoid, torch.sigmoid, F.sigmoid}
)
ONE_SIGNED_METHODS = frozenset({"relu", "relu_", "sigmoid", "sigmoid_"})
_IN_PLACE = {torch.relu_: torch.relu, F.relu_: F.relu}

#: Ops between an activation and a binary layer that map a one-signed tensor to a one-signed
#: tensor and act the same way on the pre-activation (their tensor operand is argument 0).
_PASS_MODULES = (
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.dropout._DropoutNd,
    nn.Flatten,
    nn.Identity,
)
_PASS_FUNCTIONS = frozenset(
    {
        F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d,
        F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.dropout, torch.flatten, torch.reshape,
        torch.mean, torch.permute, torch.transpose,
    }
)  # fmt: skip
_PASS_METHODS = frozenset({"view", "reshape", "flatten", "permute", "transpose", "contiguous", "mean"})
_MULTIPLY = frozenset({operator.mul, torch.mul})


@dataclass(frozen=True)
class Feed:
    """How a binary layer node is fed by one-signed activations: ``source`` is the activation
    node or a ``torch.cat`` of activation nodes (Inception, SqueezeNet branches), ``activations``
    those activations, ``steps`` the ``(node, argument index)`` hops from the layer's input
    back to ``source``."""

    source: torch.fx.Node
    activations: tuple[torch.fx.Node, ...]
    steps: tuple[tuple[torch.fx.Node, int], ...]


def one_signed_feed(gm: torch.fx.GraphModule, node: torch.fx.Node) -> Feed | None:
    """The activation(s) feeding binary layer ``node`` through sign-keeping ops, if any."""
    steps: list[tuple[torch.fx.Node, int]] = []
    current = node.args[0] if node.args else None
    while isinstance(current, torch.fx.Node):
        parts = _one_signed_parts(gm, current)
        if parts:
            return Feed(current, parts, tuple(steps))
        index = _signal_argument(gm, current)
        if index is None:
            return None
        steps.append((current, index))
        current = current.args[index]
    return None


def is_one_signed(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    """Whether ``node`` is a ReLU, ReLU6, Hardsigmoid or Sigmoid in any of its forms."""
    if node.op == "call_module":
        return isinstance(gm.get_submodule(str(node.target)), ONE_SIGNED_MODULES)
    if node.op == "call_function":
        return node.target in ONE_SIGNED_FUNCTIONS
    return node.op == "call_method" and node.target in ONE_SIGNED_METHODS


def bypass(gm: torch.fx.GraphModule, node: torch.fx.Node, feed: Feed) -> str:
    """Makes binary layer ``node`` read the pre-activation; returns the report line."""
    for activation in feed.activations:
        _not_in_place(gm, activation)
    if feed.source in feed.activations:
        value = _activation_input(feed.source)
    else:  # the same concatenation, of the activations' inputs (shared by its binary readers)
        inputs = [_activation_input(a) for a in feed.activations]
        value = next((user for user in inputs[0].users if _concatenates(user, inputs, feed.source)), None)
        if value is None:
            with gm.graph.inserting_after(feed.source):
                value = gm.graph.node_copy(feed.source)
            value.args = (inputs, *value.args[1:])
    for step, index in reversed(feed.steps):  # from the activation towards the layer
        with gm.graph.inserting_after(step):
            copy = gm.graph.node_copy(step)
        args = list(copy.args)
        args[index] = value
        copy.args = tuple(args)
        value = copy
    node.replace_input_with(node.args[0], value)
    _erase_if_unused(gm, [step for step, _ in feed.steps])
    kept = len(feed.source.users)
    _erase_if_unused(gm, list(dict.fromkeys((feed.source, *feed.activations))))
    return (
        f"{node.target}: binarizes the input of {_names(feed.activations)}"
        + (f" ({kept} float consumer(s) keep its output)" if kept else "")
    )


def clip(gm: torch.fx.GraphModule, node: torch.fx.Node, feed: Feed) -> str:
    """Replaces the activation(s) feeding ``node`` by hardtanh (for all their consumers)."""
    description = f"{node.target}: {_names(feed.activations)} replaced by hardtanh (clip to [-1, 1])"
    for activation in feed.activations:
        with gm.graph.inserting_after(activation):
            clipped = gm.graph.call_function(F.hardtanh, (_activation_input(activation),))
        activation.replace_all_uses_with(clipped)
        gm.graph.erase_node(activation)
    return description


def _one_signed_parts(gm: torch.fx.GraphModule, node: torch.fx.Node) -> tuple[torch.fx.Node, ...]:
    """``(node,)`` for an activation, its parts for a concatenation of activations, else ()."""
    if is_one_signed(gm, node):
        return (node,)
    if node.op == "call_function" and node.target is torch.cat and isinstance(node.args[0], (list, tuple)):
        parts = node.args[0]
        if parts and all(isinstance(p, torch.fx.Node) and is_one_signed(gm, p) for p in parts):
            return tuple(parts)
    return ()


def _signal_argument(gm: torch.fx.GraphModule, node: torch.fx.Node) -> int | None:
    """The argument carrying the signal through a sign-keeping op, or None."""
    if node.op == "call_module" and isinstance(gm.get_submodule(str(node.target)), _PASS_MODULES):
        return 0
    if node.op == "call_function" and node.target in _PASS_FUNCTIONS:
        return 0
    if node.op == "call_method" and node.target in _PASS_METHODS:
        return 0
    is_multiply = (node.op == "call_function" and node.target in _MULTIPLY) or (
        node.op == "call_method" and node.target == "mul"
    )
    if is_multiply and len(node.args) == 2:
        # x · gate with a non-negative gate (squeeze-excitation): the signal is the operand
        # that is not a sigmoid-type gate; ReLU-type operands are preferred as the signal.
        gated = [i for i, arg in enumerate(node.args) if isinstance(arg, torch.fx.Node) and is_one_signed(gm, arg)]
        if len(gated) == 2:
            return min(gated, key=lambda i: _is_gate(gm, node.args[i]))
    return None


def _is_gate(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(str(node.target)), (nn.Sigmoid, nn.Hardsigmoid))
    return node.target in (torch.sigmoid, F.sigmoid, F.hardsigmoid, "sigmoid", "sigmoid_")


def _activation_input(activation: torch.fx.Node) -> torch.fx.Node:
    return activation.args[0] if activation.args else activation.kwargs["input"]


def _not_in_place(gm: torch.fx.GraphModule, activation: torch.fx.Node) -> None:
    """An in-place activation would overwrite the pre-activation the binary layer now reads."""
    if activation.op == "call_module":
        module = gm.get_submodule(str(activation.target))
        if getattr(module, "inplace", False):
            module.inplace = False  # only memory changes, for every call of a shared module
    elif activation.op == "call_method" and str(activation.target).endswith("_"):
        activation.target = str(activation.target)[:-1]
    elif activation.op == "call_function":
        activation.target = _IN_PLACE.get(activation.target, activation.target)
        if activation.kwargs.get("inplace"):
            activation.kwargs = {**activation.kwargs, "inplace": False}
        if len(activation.args) > 1 and activation.target in (F.relu, F.relu6, F.hardsigmoid):
            activation.args = activation.args[:1]


def _erase_if_unused(gm: torch.fx.GraphModule, nodes: list[torch.fx.Node]) -> None:
    for node in nodes:
        if not node.users:
            gm.graph.erase_node(node)


def _concatenates(node: torch.fx.Node, inputs: list[torch.fx.Node], like: torch.fx.Node) -> bool:
    return (
        node.op == "call_function"
        and node.target is torch.cat
        and list(node.args[0]) == inputs
        and node.args[1:] == like.args[1:]
        and node.kwargs == like.kwargs
    )


def _names(nodes: tuple[torch.fx.Node, ...]) -> str:
    return ", ".join(str(n.target) if n.op == "call_module" else n.name for n in nodes)
