"""The packed format (an ONNX model with a `binarize` op domain, see SPEC.md) and its runtime.

`load_packed` needs NumPy, onnx, onnxruntime and the native kernels only (no torch, no numba);
`save_packed` imports the exporter (torch, freeze) when called.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from binarize.packed.runtime import PackedModel, load_packed

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["PackedModel", "load_packed", "save_packed"]


def save_packed(model: nn.Module, path: str | Path, example_inputs: Sequence[torch.Tensor] | None = None, *,
                force: bool = False, check: bool = True, metadata: Mapping[str, str] | None = None) -> Path:
    """Writes ``model`` as a packed file (see `binarize.packed.writer.save_packed`).

    Examples:
        >>> import numpy as np, torch
        >>> from torch import nn
        >>> from binarize import convert, load_packed, save_packed
        >>> binary = convert(nn.Sequential(nn.Linear(16, 64), nn.Linear(64, 64), nn.Linear(64, 4)))
        >>> path = save_packed(binary, "model.bnz", (torch.randn(1, 16),))
        >>> packed = load_packed(path)  # numpy, onnxruntime and the native kernels; no torch needed
        >>> x = torch.randn(2, 16)
        >>> np.allclose(packed(x.numpy()), binary.eval()(x).detach().numpy(), atol=1e-4)
        True
    """
    from binarize.packed.writer import save_packed as write

    return write(model, path, example_inputs, force=force, check=check, metadata=metadata)
