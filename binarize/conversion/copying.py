"""Copying a model for conversion without tripping over tensors computed at construction."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy of ``model``.

    ``copy.deepcopy`` refuses tensors that are not graph leaves ("Only Tensors created
    explicitly by the user (graph leaves) support the deepcopy protocol"); some models keep
    such tensors, computed from parameters at construction (timm's attention-bias tables). The
    copy holds them detached: constants, as they already were for training (they were never
    recomputed when the parameters changed).
    """
    memo: dict[int, Any] = {}
    for tensor in _attribute_tensors(model):
        if not tensor.is_leaf:
            memo[id(tensor)] = tensor.detach().clone()
    return copy.deepcopy(model, memo)


def _attribute_tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    for module in model.modules():
        values = [*vars(module).values(), *module._buffers.values()]
        for value in values:
            items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
            yield from (item for item in items if isinstance(item, torch.Tensor))
