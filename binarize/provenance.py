"""What binarize knows about a model beyond its modules, in one record: where the float model
came from, its example input shape and, once converted, the config and the conversion report.

The record is a frozen `Provenance`; this module is its only reader and writer
(`provenance_of`, `set_provenance`). It rides on the model as one attribute, because it must
follow the model wherever the model goes: ``copy.deepcopy``, `binarize.freeze` (a deep copy),
DDP wrapping, a user's own copies. A side table (a ``WeakKeyDictionary`` keyed by the module)
would lose it on every copy. A ``torch.fx.GraphModule`` rebuilds itself on deepcopy and keeps
only the attributes its ``meta`` lists as user-preserved (torch's mechanism, the one
``torch.ao.quantization`` uses for ``preserved_attrs``), so on a GraphModule the attribute is
listed there too. Tracing builds a new module: `binarize.convert` sets the record on its result.

What is a fact of the converted graph is not recorded: the conversion plan a checkpoint replays
is read off the binary layers (`binarize.conversion.pipeline.plan_records`).

Example:
    >>> from torch import nn
    >>> model = set_provenance(nn.Linear(4, 2), Provenance(input_shape=(1, 4)))
    >>> provenance_of(model).input_shape
    (1, 4)
    >>> import copy; provenance_of(copy.deepcopy(model)).input_shape
    (1, 4)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch.fx
from torch import nn

from binarize.config import BinarizeConfig

if TYPE_CHECKING:  # the report module is a plain dataclass; importing it at run time would
    # import the whole conversion package, which records its results here.
    from binarize.conversion.report import ConversionReport

#: The one attribute that carries the record (read and written only in this module).
_ATTRIBUTE = "_binarize_provenance"
#: GraphModule.meta key whose attributes torch restores on the deepcopy of a GraphModule.
_PRESERVED = torch.fx.graph_module._USER_PRESERVED_ATTRIBUTES_KEY

M = TypeVar("M", bound=nn.Module)


@dataclass(frozen=True)
class Provenance:
    """Where a model came from and how it was converted.

    Attributes:
        source: how to rebuild the float model: ``{"kind": "torchvision"|"binarize"|"timm",
            "name": ..., "kwargs": {...}}``, or an embedded file (``{"kind": "pt2"|"pickle",
            "archive": uint8 tensor}``); ``None`` for a model class binarize cannot name.
        input_shape: the example input shape (batch first) recorded with the model.
        config: the `BinarizeConfig` it was converted with; ``None`` for a float model.
        report: what `binarize.convert` did (`ConversionReport`); ``None`` for a float model.
    """

    source: Mapping[str, Any] | None = None
    input_shape: tuple[int, ...] | None = None
    config: BinarizeConfig | None = None
    report: ConversionReport | None = None

    def replace(self, **changes: Any) -> Provenance:
        """A copy with ``changes`` (field name → value)."""
        return dataclasses.replace(self, **changes)


def provenance_of(model: nn.Module) -> Provenance:
    """The record of ``model`` (of the wrapped module under DDP or DataParallel); an empty one
    if binarize recorded nothing. With no recorded input shape, the model's own ``input_shape``
    attribute (a tuple, as the `binarize.models` zoo declares it) is the shape."""
    model = _unwrapped(model)
    record = vars(model).get(_ATTRIBUTE) or Provenance()
    declared = getattr(model, "input_shape", None)
    if record.input_shape is None and isinstance(declared, (tuple, list)):
        record = record.replace(input_shape=tuple(int(d) for d in declared))
    return record


def set_provenance(model: M, record: Provenance) -> M:
    """Records ``record`` on ``model`` (replacing any earlier one); returns ``model``."""
    target = _unwrapped(model)
    if record.input_shape is not None:
        record = record.replace(input_shape=tuple(int(d) for d in record.input_shape))
    vars(target)[_ATTRIBUTE] = record
    if isinstance(target, torch.fx.GraphModule):
        target.meta.setdefault(_PRESERVED, {})[_ATTRIBUTE] = record
    return model



def _unwrapped(model: nn.Module) -> nn.Module:
    wrappers = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    return model.module if isinstance(model, wrappers) else model
