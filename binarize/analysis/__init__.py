"""Analysis of models at any stage: size and operation summaries, estimator indicators, and
the evaluation of deployed files (`binarize.analysis.deployed`, imported on use: it reaches
the ONNX and packed runtimes)."""

from binarize.analysis.summary import LayerSummary, ModelSummary, summarize

__all__ = ["LayerSummary", "ModelSummary", "summarize"]
