"""Type stub of the native kernels (`_kernels.c`); `binarize.packed.kernels` is their only caller."""

from __future__ import annotations

import numpy as np

def paths() -> list[str]:
    """Dispatch paths this CPU can run, best first."""

def set_threads(threads: int, /) -> int:
    """Sets the kernel threads; returns the number in use."""

def conv_plan(geometry: tuple[int, ...], weights: np.ndarray, wsum: np.ndarray, scale: np.ndarray, shift: np.ndarray,
              slope: np.ndarray | None, path: str, activation: int, /) -> object:
    """A layer's call plan for one input shape: geometry, padding corrections, views of the buffers."""

def conv(plan: object, x: np.ndarray, residual: np.ndarray | None, out: np.ndarray, integer: bool, /) -> None:
    """Binary convolution by ``plan`` into ``out`` (see kernels.py)."""
