"""The conversion pass: any float model → a binary GraphModule, with a report."""

from binarize.conversion.pipeline import apply_plan, convert, plan_from_records
from binarize.conversion.report import ConversionReport, LayerRow
from binarize.conversion.tracer import register_leaf

__all__ = ["ConversionReport", "LayerRow", "apply_plan", "convert", "plan_from_records", "register_leaf"]
