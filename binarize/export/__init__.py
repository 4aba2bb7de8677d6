"""Deployment to ONNX: export a binary model (frozen first, see `binarize.nn.frozen`) to
standard ONNX ops, optionally with int8 float layers.

The modules load lazily, so that importing the package imports neither onnx nor onnxruntime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers see of the lazy names below
    from binarize.export.onnx import (
        DEFAULT_OPSET as DEFAULT_OPSET,
        SOURCE_KEY as SOURCE_KEY,
        ExportResult as ExportResult,
        export_onnx as export_onnx,
        inference_session as inference_session,
    )
    from binarize.export.quantize import QuantizeResult as QuantizeResult, quantize_float_layers as quantize_float_layers

_LAZY: dict[str, str] = {
    "DEFAULT_OPSET": "binarize.export.onnx",
    "SOURCE_KEY": "binarize.export.onnx",
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
