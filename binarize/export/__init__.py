"""Deployment: freeze a binary model to standard ops, export it to ONNX, evaluate deployed files.

The ONNX and evaluation modules load lazily so that reading frozen layers (as the packed
writer does) does not import onnx or onnxruntime.
"""

from __future__ import annotations

import importlib
from typing import Any

from binarize.export.freeze import (
    FrozenBinaryConv1d,
    FrozenBinaryConv2d,
    FrozenBinaryLayer,
    FrozenBinaryLinear,
    freeze,
    freeze_layer,
    frozen_layers,
    sign_input,
)

_LAZY: dict[str, str] = {
    "ExportResult": "binarize.export.onnx",
    "export_onnx": "binarize.export.onnx",
}

__all__ = [
    "FrozenBinaryConv1d",
    "FrozenBinaryConv2d",
    "FrozenBinaryLayer",
    "FrozenBinaryLinear",
    "freeze",
    "freeze_layer",
    "frozen_layers",
    "sign_input",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'binarize.export' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
