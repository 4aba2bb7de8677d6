"""Turns functional conv/linear calls of an exported graph back into modules.

A ``torch.export`` archive's module calls ``aten.conv2d(x, weight, bias, ...)`` on parameters
fetched with ``get_attr``; conversion swaps modules, so each such call becomes a call of an
equivalent ``nn.Conv1d``/``nn.Conv2d``/``nn.Linear`` owning those parameters.
"""

from __future__ import annotations

import torch
import torch.fx
from torch import nn

_ATEN = torch.ops.aten
_CONV = {_ATEN.conv1d.default: nn.Conv1d, _ATEN.conv2d.default: nn.Conv2d}


def lift_functional_layers(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Rewrites ``gm`` in place so its convolutions and linears are ``call_module`` nodes."""
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in (*_CONV, _ATEN.linear.default):
            continue
        weight_node = node.args[1]
        bias_node = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
        if getattr(weight_node, "op", None) != "get_attr":
            continue
        if bias_node is not None and getattr(bias_node, "op", None) != "get_attr":
            continue
        weight = gm.get_parameter(weight_node.target)
        bias = None if bias_node is None else gm.get_parameter(bias_node.target)
        module = _module_for(node, weight, bias)
        name = _module_name(gm, weight_node.target.rpartition(".")[0])
        gm.add_submodule(name, module)
        with gm.graph.inserting_before(node):
            call = gm.graph.call_module(name, (node.args[0],))
        node.replace_all_uses_with(call)
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    # torch.export's module() makes train()/eval() raise; its graph runs as exported whatever
    # the mode, so plain nn.Module mode switching (summary, conversion) is safe to restore.
    for name in ("train", "eval"):
        gm.__dict__.pop(name, None)
    return gm


def _module_for(node: torch.fx.Node, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    if node.target == _ATEN.linear.default:
        module: nn.Module = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    else:
        args = list(node.args[3:]) + [None] * 4
        dims = weight.dim() - 2
        stride, padding, dilation, groups = (
            args[0] or [1] * dims,
            args[1] if args[1] is not None else [0] * dims,
            args[2] or [1] * dims,
            args[3] or 1,
        )
        module = _CONV[node.target](
            weight.shape[1] * groups,
            weight.shape[0],
            tuple(weight.shape[2:]),
            stride=tuple(stride),
            padding=padding if isinstance(padding, str) else tuple(padding),
            dilation=tuple(dilation),
            groups=groups,
            bias=bias is not None,
        )
    module = module.to(device=weight.device, dtype=weight.dtype)
    module.weight = weight
    if bias is not None:
        module.bias = bias
    return module


def _module_name(gm: torch.fx.GraphModule, owner: str) -> str:
    """The weight's owner path when the owner holds only weight/bias (the new module takes
    its place and keeps its state-dict keys), else a fresh name beside it."""
    if owner:
        holder = gm.get_submodule(owner)
        if not list(holder.children()) and set(dict(holder.named_parameters())) <= {"weight", "bias"}:
            return owner
    name, index = f"{owner or 'layer'}_lifted".replace(".", "_"), 0
    while hasattr(gm, name):
        index += 1
        name = f"{owner or 'layer'}_lifted{index}".replace(".", "_")
    return name
