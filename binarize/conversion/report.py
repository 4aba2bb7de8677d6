"""The conversion report: one row per Conv/Linear layer, with counts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class LayerRow:
    """One weighted layer: what it is, what happened to it and why; ``input_threshold``: its
    input passes a learned threshold (`binarize.nn.InputThreshold`) before the sign."""

    fqn: str
    type: str
    shape: tuple[int, ...]
    params: int
    binarized: bool
    reason: str
    weight_estimator: str | None = None
    input_estimator: str | None = None
    scaling: str | None = None
    weight_transform: str | None = None
    input_threshold: bool = False


@dataclass(frozen=True)
class ConversionReport:
    """What `convert` did. ``mode`` is ``fx`` (graph rewrite) or ``fallback`` (swap by name,
    see ``warnings``); ``activation_rewrites`` lists what ``activation_policy`` changed in the
    graph; ``input_signs`` maps each binary layer with binary inputs to the fraction of −1
    signs of its input on the example input, after any input threshold (0 or 1: a constant
    input; `BinarizeConfig.min_informative_fraction` says which got a threshold); ``leaves`` names the
    submodules traced as opaque calls (`register_leaf`, ``convert(..., leaves=...)``)."""

    rows: tuple[LayerRow, ...]
    total_params: int
    mode: str
    warnings: tuple[str, ...] = field(default_factory=tuple)
    activation_policy: str = "keep"
    activation_rewrites: tuple[str, ...] = field(default_factory=tuple)
    input_signs: Mapping[str, float] = field(default_factory=dict)
    leaves: tuple[str, ...] = field(default_factory=tuple)

    @property
    def binarized_layers(self) -> int:
        return sum(row.binarized for row in self.rows)

    @property
    def binarized_params(self) -> int:
        return sum(row.params for row in self.rows if row.binarized)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "warnings": list(self.warnings),
            "activation_policy": self.activation_policy,
            "activation_rewrites": list(self.activation_rewrites),
            "input_signs": dict(self.input_signs),
            "leaves": list(self.leaves),
            "layers": [asdict(row) | {"shape": list(row.shape)} for row in self.rows],
            "counts": {
                "layers": len(self.rows),
                "binarized_layers": self.binarized_layers,
                "binarized_params": self.binarized_params,
                "total_params": self.total_params,
                "binarized_fraction": self.binarized_params / max(self.total_params, 1),
            },
        }
