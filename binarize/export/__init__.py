"""Deployment to ONNX: export a binary model (frozen first, see `binarize.nn.frozen`) to
standard ONNX ops, optionally with int8 float layers.

The modules load lazily, so that importing the package imports neither onnx nor onnxruntime.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "ExportResult": "binarize.export.onnx",
    "export_onnx": "binarize.export.onnx",
    "inference_session": "binarize.export.onnx",
    "QuantizeResult": "binarize.export.quantize",
    "quantize_float_layers": "binarize.export.quantize",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'binarize.export' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
