"""Analysis of models at any stage: size and operation summaries, estimator indicators, plots.

(`binarize.indicators` is the indicator measurement itself; this package keeps the name
`indicators` for its module.)
"""

from binarize.analysis.indicators import IndicatorReport, binary_layers
from binarize.analysis.plots import plot_estimators
from binarize.analysis.summary import LayerSummary, ModelSummary, summarize

__all__ = ["IndicatorReport", "LayerSummary", "ModelSummary", "binary_layers", "plot_estimators", "summarize"]
