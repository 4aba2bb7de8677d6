"""binarize: turn pretrained PyTorch networks into binary neural networks.

The public API is the names in ``__all__``. They load lazily (PEP 562), so that importing one
part, e.g. the packed runtime for deployment, does not import the others (torch, fx, estimators).
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name → module defining it
_EXPORTS: dict[str, str] = {
    "BinarizeConfig": "binarize.config",
    "LayerConfig": "binarize.config",
    "LayerRule": "binarize.config",
    "BinarizeError": "binarize.errors",
    "ConfigError": "binarize.errors",
    "ConversionError": "binarize.errors",
    "DataError": "binarize.errors",
    "FormatError": "binarize.errors",
    "ModelSourceError": "binarize.errors",
    "OutputExistsError": "binarize.errors",
    "UnsafeSourceError": "binarize.errors",
    "convert": "binarize.conversion",
    "ConversionReport": "binarize.conversion",
    "register_leaf": "binarize.conversion",
    "set_progress": "binarize.progress",
    "finetune": "binarize.train", "evaluate": "binarize.train", "FinetuneConfig": "binarize.train", "get_datasets": "binarize.data",
    "indicators": "binarize.analysis.indicators",
    "load_model": "binarize.sources",
    "save_checkpoint": "binarize.checkpoint",
    "load_checkpoint": "binarize.checkpoint",
    "summarize": "binarize.analysis.summary",
    "ModelSummary": "binarize.analysis.summary",
    "freeze": "binarize.export",
    "save_packed": "binarize.packed",
    "load_packed": "binarize.packed",
    "PackedModel": "binarize.packed",
    "export_onnx": "binarize.export.onnx",
    "BinaryConv1d": "binarize.nn",
    "BinaryConv2d": "binarize.nn",
    "BinaryLinear": "binarize.nn",
}

__all__ = sorted(_EXPORTS) + ["estimators"]


def __getattr__(name: str) -> Any:
    if name == "estimators":
        return importlib.import_module("binarize.estimators")
    if name not in _EXPORTS:
        raise AttributeError(f"module 'binarize' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
