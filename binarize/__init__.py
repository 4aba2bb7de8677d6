"""binarize: turn pretrained PyTorch networks into binary neural networks.

The public API is the names in ``__all__``. They load lazily (PEP 562), so that importing one
part, e.g. the packed runtime for deployment, does not import the others (torch, fx, estimators).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers see: the same names, from the same modules as _EXPORTS
    from binarize._files import check_output as check_output, os_error as os_error
    from binarize._probe import forward_once as forward_once
    from binarize._version import __version__ as __version__
    from binarize import estimators as estimators
    from binarize.analysis.indicators import indicators as indicators
    from binarize.analysis.summary import ModelSummary as ModelSummary, summarize as summarize
    from binarize.checkpoint import save_checkpoint as save_checkpoint
    from binarize.config import (
        ACTIVATION_POLICIES as ACTIVATION_POLICIES,
        BinarizeConfig as BinarizeConfig,
        LayerConfig as LayerConfig,
        LayerRule as LayerRule,
    )
    from binarize.conversion import (
        ConversionReport as ConversionReport,
        convert as convert,
        register_leaf as register_leaf,
    )
    from binarize.data import get_datasets as get_datasets
    from binarize.demo import run_demo as run_demo
    from binarize.errors import (
        BinarizeError as BinarizeError,
        ConfigError as ConfigError,
        ConversionError as ConversionError,
        DataError as DataError,
        FormatError as FormatError,
        Interrupted as Interrupted,
        ModelSourceError as ModelSourceError,
        OutputError as OutputError,
        OutputExistsError as OutputExistsError,
        UnsafeSourceError as UnsafeSourceError,
        first_line as first_line,
    )
    from binarize.nn.frozen import freeze as freeze
    from binarize.export.onnx import export_onnx as export_onnx
    from binarize.nn import BinaryConv1d as BinaryConv1d, BinaryConv2d as BinaryConv2d, BinaryLinear as BinaryLinear
    from binarize.packed import PackedModel as PackedModel, load_packed as load_packed, save_packed as save_packed
    from binarize.progress import set_progress as set_progress
    from binarize.loading import (
        load_checkpoint as load_checkpoint,
        load_model as load_model,
        model_from_record as model_from_record,
    )
    from binarize.provenance import (
        Provenance as Provenance,
        provenance_of as provenance_of,
        set_provenance as set_provenance,
    )
    from binarize.sources import ARCHITECTURE_PREFIXES as ARCHITECTURE_PREFIXES
    from binarize.train import FinetuneConfig as FinetuneConfig, finetune as finetune
    from binarize.train.evaluate import evaluate as evaluate  # the function, not the module of that name

#: public name → module defining it
_EXPORTS: dict[str, str] = {
    "ACTIVATION_POLICIES": "binarize.config",
    "BinarizeConfig": "binarize.config",
    "LayerConfig": "binarize.config",
    "LayerRule": "binarize.config",
    "BinarizeError": "binarize.errors",
    "ConfigError": "binarize.errors",
    "ConversionError": "binarize.errors",
    "DataError": "binarize.errors",
    "FormatError": "binarize.errors",
    "Interrupted": "binarize.errors",
    "ModelSourceError": "binarize.errors",
    "OutputError": "binarize.errors",
    "OutputExistsError": "binarize.errors",
    "UnsafeSourceError": "binarize.errors",
    "convert": "binarize.conversion",
    "ConversionReport": "binarize.conversion",
    "register_leaf": "binarize.conversion",
    "set_progress": "binarize.progress",
    "finetune": "binarize.train",
    "evaluate": "binarize.train.evaluate",
    "FinetuneConfig": "binarize.train",
    "get_datasets": "binarize.data",
    "indicators": "binarize.analysis.indicators",
    "load_model": "binarize.loading",
    "save_checkpoint": "binarize.checkpoint",
    "load_checkpoint": "binarize.loading",
    "model_from_record": "binarize.loading",
    "Provenance": "binarize.provenance",
    "provenance_of": "binarize.provenance",
    "set_provenance": "binarize.provenance",
    "summarize": "binarize.analysis.summary",
    "ModelSummary": "binarize.analysis.summary",
    "freeze": "binarize.nn.frozen",
    "save_packed": "binarize.packed",
    "load_packed": "binarize.packed",
    "PackedModel": "binarize.packed",
    "export_onnx": "binarize.export.onnx",
    "BinaryConv1d": "binarize.nn",
    "BinaryConv2d": "binarize.nn",
    "BinaryLinear": "binarize.nn",
    "run_demo": "binarize.demo",
    # for front-ends (the CLI, scripts): one-line errors, output checks, the version
    "first_line": "binarize.errors",
    "os_error": "binarize._files",
    "check_output": "binarize._files",
    "forward_once": "binarize._probe",
    "__version__": "binarize._version",
    "ARCHITECTURE_PREFIXES": "binarize.sources",
}

#: the public names: every `_EXPORTS` key and the `estimators` subpackage (a test keeps them equal)
__all__ = [
    "ACTIVATION_POLICIES",
    "ARCHITECTURE_PREFIXES",
    "BinarizeConfig",
    "BinarizeError",
    "BinaryConv1d",
    "BinaryConv2d",
    "BinaryLinear",
    "ConfigError",
    "ConversionError",
    "ConversionReport",
    "DataError",
    "FinetuneConfig",
    "FormatError",
    "Interrupted",
    "LayerConfig",
    "LayerRule",
    "ModelSourceError",
    "ModelSummary",
    "OutputError",
    "OutputExistsError",
    "PackedModel",
    "Provenance",
    "UnsafeSourceError",
    "__version__",
    "check_output",
    "convert",
    "estimators",
    "evaluate",
    "export_onnx",
    "finetune",
    "first_line",
    "forward_once",
    "freeze",
    "get_datasets",
    "indicators",
    "load_checkpoint",
    "load_model",
    "load_packed",
    "model_from_record",
    "os_error",
    "provenance_of",
    "register_leaf",
    "run_demo",
    "save_checkpoint",
    "save_packed",
    "set_progress",
    "set_provenance",
    "summarize",
]


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
