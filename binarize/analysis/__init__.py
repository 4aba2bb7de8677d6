"""Analysis of models at any stage: size and operation summaries, estimator indicators, plots,
and the evaluation of deployed files (`binarize.analysis.deployed`: .pt, .onnx, packed,
OpenVINO), whose names load on first use because they reach the ONNX and packed runtimes.

(`binarize.indicators` is the indicator measurement itself; this package keeps the name
`indicators` for its module.)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from binarize.analysis.indicators import IndicatorReport, binary_layers
from binarize.analysis.plots import plot_estimators
from binarize.analysis.summary import LayerSummary, ModelSummary, summarize

if TYPE_CHECKING:  # what type checkers see of the lazy names below
    from binarize.analysis.deployed import (
        DeployedEval as DeployedEval,
        DeployedModel as DeployedModel,
        dataset_batches as dataset_batches,
        evaluate_file as evaluate_file,
        load_deployed as load_deployed,
        random_batches as random_batches,
    )

_DEPLOYED = ("DeployedEval", "DeployedModel", "dataset_batches", "evaluate_file", "load_deployed", "random_batches")
_LAZY: dict[str, str] = dict.fromkeys(_DEPLOYED, "binarize.analysis.deployed")

__all__ = ["IndicatorReport", "LayerSummary", "ModelSummary", "binary_layers", "plot_estimators", "summarize", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'binarize.analysis' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
