"""``timm:NAME``: an untrained model of the timm library (optional extra ``binarize[timm]``).

Models are built with ``pretrained=False``, so nothing is downloaded; pretrained weights come
from a file the user gives (``--weights FILE``: a state dict or safetensors).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from binarize._registry import did_you_mean
from binarize.errors import ModelSourceError
from binarize.provenance import Provenance, set_provenance

INSTALL = "pip install 'binarize[timm]'"


def build_timm(name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, pretrained=False)`` with its default input shape recorded."""
    try:
        import timm
    except ImportError:
        raise ModelSourceError(f"timm:{name} needs the timm package, which is not installed", INSTALL) from None
    if not timm.is_model(name):
        hint = did_you_mean(name, timm.list_models(), lambda close: f"timm:{close}")
        raise ModelSourceError(f"unknown timm model {name!r}", f"{hint}see timm.list_models()")
    model = timm.create_model(name, pretrained=False, **kwargs)
    size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size")
    if size:
        set_provenance(model, Provenance(input_shape=(1, *size)))
    return model
