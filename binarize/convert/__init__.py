"""The conversion pass: any float model → a binary GraphModule, with a report."""

from binarize.convert.pipeline import apply_plan, convert, plan_from_records
from binarize.convert.report import ConversionReport, LayerRow

__all__ = ["ConversionReport", "LayerRow", "apply_plan", "convert", "plan_from_records"]
