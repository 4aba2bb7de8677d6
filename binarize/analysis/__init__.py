"""Analysis of models at any stage: size and operation summaries, estimator indicators."""

from binarize.analysis.summary import LayerSummary, ModelSummary, summarize

__all__ = ["LayerSummary", "ModelSummary", "summarize"]
