"""Building binary layers from conversion decisions (`nn.Module.set_submodule` puts them in place)."""

from __future__ import annotations

import dataclasses

from torch import nn

from binarize.config import LayerConfig
from binarize.estimators import create, get
from binarize.nn.layers import BinaryLayer, binary_counterpart


def resolved(layer: LayerConfig) -> LayerConfig:
    """``layer`` with the weight estimator's defaults filled in for scaling and transform."""
    estimator = get(layer.weight_estimator)
    scaling = layer.scaling or getattr(estimator, "default_scaling", None) or "channel_mean"
    transform = layer.weight_transform or getattr(estimator, "default_weight_transform", None) or "none"
    if layer.input_estimator is not None:
        get(layer.input_estimator)
    return dataclasses.replace(layer, scaling=scaling, weight_transform=transform)


def build_binary(module: nn.Module, layer: LayerConfig) -> BinaryLayer:
    """The binary counterpart of float ``module`` configured by a resolved ``layer``."""
    klass = binary_counterpart(module)
    assert klass is not None, "policy only binarizes layers that have a counterpart"
    return klass.from_float(
        module,
        weight_estimator=create(layer.weight_estimator, **layer.weight_estimator_args),
        input_estimator=None
        if layer.input_estimator is None
        else create(layer.input_estimator, **layer.input_estimator_args),
        scaling=layer.scaling or "channel_mean",
        weight_transform=None if layer.weight_transform in (None, "none") else layer.weight_transform,
    )
