"""Type stub of the native kernels (`_kernels.c`); `binarize.packed.kernels` is their only caller."""

from __future__ import annotations

import numpy as np

def paths() -> list[str]:
    """Dispatch paths this CPU can run, best first."""

def set_threads(threads: int, /) -> int:
    """Sets the kernel threads; returns the number in use."""

def conv(x: np.ndarray, geometry: tuple[int, ...], weights: np.ndarray, wsum: np.ndarray, scale: np.ndarray,
         shift: np.ndarray, slope: np.ndarray | None, residual: np.ndarray | None, out: np.ndarray, path: str,
         activation: int, integer: bool, /) -> None:
    """Binary convolution into ``out`` (see kernels.py)."""
