"""``set_progress``: the one knob that drives every estimator schedule."""

from __future__ import annotations

import math

from torch import nn

from binarize.errors import ConfigError
from binarize.estimators import Estimator


def set_progress(model: nn.Module, progress: float) -> None:
    """Sets training progress p ∈ [0, 1] (normally step / total_steps) on every estimator.

    Examples:
        >>> from torch import nn
        >>> from binarize import BinarizeConfig, LayerConfig, convert, set_progress
        >>> net = nn.Sequential(nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 4))
        >>> binary = convert(net, BinarizeConfig(layer=LayerConfig("reste")))
        >>> set_progress(binary, 0.5)  # halfway: every schedule (ReSTE's o, ...) moves
        >>> set_progress(binary, 2)
        Traceback (most recent call last):
        ...
        binarize.errors.ConfigError: progress 2 is outside [0, 1] — pass step / total_steps
    """
    if not (isinstance(progress, (int, float)) and math.isfinite(progress) and 0.0 <= progress <= 1.0):
        raise ConfigError(f"progress {progress!r} is outside [0, 1]", "pass step / total_steps")
    for module in model.modules():
        if isinstance(module, Estimator):
            module.set_progress(float(progress))
