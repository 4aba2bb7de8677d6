"""Graph arguments that say train or eval follow ``model.train()``/``model.eval()``.

Symbolic tracing reads ``self.training`` once, so a traced ``F.batch_norm(..., training=
self.training)`` or torchvision's ``stochastic_depth(..., self.training)`` keeps the mode the
model was traced in: a model converted for fine-tuning would use batch statistics and drop
residual rows at inference (its outputs random and batch-dependent). This pass replaces those
constants by a call of `TrainingFlag`, a submodule that ``train()``/``eval()`` switch.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch.fx
from torch import nn
from torch.nn import functional as F

#: name of the flag submodule in a converted GraphModule
FLAG = "binarize_training_flag"


class TrainingFlag(nn.Module):
    """Returns whether the model it belongs to is in training mode."""

    def forward(self) -> bool:
        return self.training


def _mode_arguments() -> dict[Callable[..., Any], tuple[int, str]]:
    """Functions whose argument (position, keyword) says train or eval."""
    table: dict[Callable[..., Any], tuple[int, str]] = {
        F.batch_norm: (5, "training"),
        **dict.fromkeys((F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout), (2, "training")),
    }
    ops = sys.modules.get("torchvision.ops.stochastic_depth")  # imported by any model that uses it
    if ops is not None:
        table[ops.stochastic_depth] = (3, "training")
    return table


def follow_training_mode(gm: torch.fx.GraphModule) -> int:
    """Rewrites ``gm`` in place; returns how many arguments now read the flag."""
    table, flag, count = _mode_arguments(), None, 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in table:
            continue
        if node.target is F.batch_norm and not isinstance(_argument(node, 1, "running_mean"), torch.fx.Node):
            continue  # no running statistics: batch statistics in both modes
        position, keyword = table[node.target]
        if not isinstance(_argument(node, position, keyword), bool):
            continue
        if flag is None:
            gm.add_submodule(FLAG, TrainingFlag())
            inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
            with gm.graph.inserting_after(inputs[-1]) if inputs else gm.graph.inserting_before():
                flag = gm.graph.call_module(FLAG)
        if len(node.args) > position:
            node.update_arg(position, flag)
        else:
            node.update_kwarg(keyword, flag)
        count += 1
    if count:
        gm.recompile()
    return count


def _argument(node: torch.fx.Node, position: int, keyword: str) -> Any:
    return node.args[position] if len(node.args) > position else node.kwargs.get(keyword)

