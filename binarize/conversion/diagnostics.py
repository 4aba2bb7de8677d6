"""Graph checks that warn about binarizations that cannot work as the user expects."""

from __future__ import annotations

import torch
import torch.fx
from torch import nn
from torch.nn import functional as F

_RELU_MODULES = (nn.ReLU, nn.ReLU6)
_RELU_FUNCTIONS = (F.relu, torch.relu, F.relu6)


def relu_fed_binary_inputs(gm: torch.fx.GraphModule, fqns: set[str]) -> list[str]:
    """The binary layers among ``fqns`` whose input comes straight from a ReLU.

    sign(ReLU(x)) is +1 everywhere (sign(0) = +1), so binarizing such an input carries no
    information: the layer sees a constant.
    """
    flagged = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or str(node.target) not in fqns or not node.args:
            continue
        source = node.args[0]
        if not isinstance(source, torch.fx.Node):
            continue
        if (
            (source.op == "call_module" and isinstance(gm.get_submodule(str(source.target)), _RELU_MODULES))
            or (source.op == "call_function" and source.target in _RELU_FUNCTIONS)
            or (source.op == "call_method" and source.target in ("relu", "relu_"))
        ):
            flagged.append(str(node.target))
    return flagged
