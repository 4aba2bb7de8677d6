"""One inference call made only to check that a model takes an input (shape, channels, classes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def forward_once(model: Callable[[torch.Tensor], Any], x: torch.Tensor) -> Any:
    """``model(x)`` without gradients; a module runs in eval mode (a batch of one must not
    reach BatchNorm's training statistics) and gets its own mode back."""
    module = model if isinstance(model, nn.Module) else None
    was_training = module is not None and module.training
    try:
        if module is not None:
            module.eval()
        with torch.no_grad():
            return model(x)
    finally:
        if module is not None:
            module.train(was_training)
