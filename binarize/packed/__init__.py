"""The packed-bit `.bnz` format and its bitwise runtime (see SPEC.md).

`load_packed` needs only this package's runtime modules; `save_packed` imports the exporter
(torch.fx, freeze) when called, so deployments that only load stay light.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from binarize.packed.runtime import PackedModel, load_packed

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["PackedModel", "load_packed", "save_packed"]


def save_packed(model: nn.Module, path: str | Path, example_inputs: Sequence[torch.Tensor] | None = None, *,
                force: bool = False, check: bool = True) -> Path:
    """Writes ``model`` as a `.bnz` file (see `binarize.packed.writer.save_packed`)."""
    from binarize.packed.writer import save_packed as write

    return write(model, path, example_inputs, force=force, check=check)
