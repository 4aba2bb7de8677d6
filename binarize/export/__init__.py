"""Deployment: freeze a binary model to standard ops, export it to ONNX (optionally with int8
float layers), evaluate deployed files.

The ONNX, quantization and evaluation modules load lazily, so that reading frozen layers (as
the packed writer does) imports neither onnx nor onnxruntime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from binarize.export.freeze import (
    FrozenBinaryConv1d,
    FrozenBinaryConv2d,
    FrozenBinaryLayer,
    FrozenBinaryLinear,
    freeze,
    freeze_layer,
    frozen_layers,
)

if TYPE_CHECKING:  # what type checkers see of the lazy names below
    from binarize.export.evaluate import (
        DeployedEval as DeployedEval,
        DeployedModel as DeployedModel,
        dataset_batches as dataset_batches,
        evaluate_file as evaluate_file,
        load_deployed as load_deployed,
        random_batches as random_batches,
    )
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
