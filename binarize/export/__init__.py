"""Deployment: freeze a binary model to standard ops, export it to ONNX (optionally with int8
float layers), evaluate deployed files.

The ONNX, quantization and evaluation modules load lazily, so that reading frozen layers (as
the packed writer does) imports neither onnx nor onnxruntime.
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
)

_LAZY: dict[str, str] = {
    "DEFAULT_OPSET": "binarize.export.onnx",
    "SOURCE_KEY": "binarize.export.onnx",
    "ExportResult": "binarize.export.onnx",
    "export_onnx": "binarize.export.onnx",
    "inference_session": "binarize.export.onnx",
    "QuantizeResult": "binarize.export.quantize",
    "quantize_float_layers": "binarize.export.quantize",
    "DeployedEval": "binarize.export.evaluate",
    "DeployedModel": "binarize.export.evaluate",
    "dataset_batches": "binarize.export.evaluate",
    "evaluate_file": "binarize.export.evaluate",
    "load_deployed": "binarize.export.evaluate",
    "random_batches": "binarize.export.evaluate",
}

__all__ = [
    "FrozenBinaryConv1d",
    "FrozenBinaryConv2d",
    "FrozenBinaryLayer",
    "FrozenBinaryLinear",
    "freeze",
    "freeze_layer",
    "frozen_layers",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'binarize.export' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
