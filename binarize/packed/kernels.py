"""Binary convolution and linear kernels on packed sign bits (xor/popcount).

Imports only NumPy (and, later, the compiled extension): no torch, no numba.

Weights arrive in the file layout of SPEC §3 (``bits[O, ceil(K/64)]``, `F.unfold` order
``k = (c·kh + i)·kw + j``, bit ``k % 64`` of little-endian word ``k // 64``, set bit = −1, pad
bits 0) and stay packed. The input is binarized by sign with sign(0) = +1;
``dot = K − 2·popcount(a xor w)`` over the valid taps, zero padding corrected exactly.

This first version is a NumPy reference (same API as the native kernels that replace it).
"""

from __future__ import annotations

import numpy as np

PATHS: tuple[str, ...] = ("numpy",)
_active = PATHS[0]
_threads = 1
ACTIVATIONS = ("none", "relu", "hardtanh", "prelu")


def active_path() -> str:
    """Name of the dispatch path the kernels use now."""
    return _active


def force_path(name: str | None) -> None:
    """Use dispatch path ``name`` (one of `PATHS`); ``None`` restores the best one."""
    global _active
    if name is None:
        _active = PATHS[0]
    elif name in PATHS:
        _active = name
    else:
        raise ValueError(f"unknown kernel path {name!r}; available: {', '.join(PATHS)}")


def set_num_threads(n: int) -> None:
    """Threads the kernels use (≥ 1)."""
    global _threads
    _threads = max(1, int(n))


def get_num_threads() -> int:
    return _threads


def _signs(bits: np.ndarray, k: int) -> np.ndarray:
    """Reference only: file words → ±1 int32 rows [O, K]."""
    as_bytes = np.ascontiguousarray(bits, dtype="<u8").view(np.uint8)
    negative = np.unpackbits(as_bytes, axis=1, bitorder="little")[:, :k]
    return 1 - 2 * negative.astype(np.int32)


def _epilogue(dot: np.ndarray, scale: np.ndarray, shift: np.ndarray, activation: str, slope: np.ndarray | None,
              residual: np.ndarray | None, channel_axis: int) -> np.ndarray:
    shape = [1] * dot.ndim
    shape[channel_axis] = -1
    y = dot.astype(np.float32) * scale.reshape(shape) + shift.reshape(shape)
    if residual is not None:
        y = y + residual
    if activation == "relu":
        y = np.maximum(y, 0)
    elif activation == "hardtanh":
        y = np.clip(y, -1, 1)
    elif activation == "prelu":
        y = np.where(y >= 0, y, y * slope.reshape(shape))
    return y.astype(np.float32, copy=False)


class _Epilogue:
    """Per-output-channel ``y = act(dot·scale + shift + residual)`` parameters, validated once."""

    def _init_epilogue(self, out: int, scale, shift, activation: str, slope) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {', '.join(ACTIVATIONS)}")
        if activation == "prelu" and slope is None:
            raise ValueError("activation 'prelu' needs slope")
        self.scale = np.ascontiguousarray(scale, dtype=np.float32).reshape(out)
        self.shift = (np.zeros(out, np.float32) if shift is None
                      else np.ascontiguousarray(shift, dtype=np.float32).reshape(out))
        self.slope = None if slope is None else np.ascontiguousarray(slope, dtype=np.float32).reshape(out)
        self.activation = activation


class BinaryConv(_Epilogue):
    """One binary convolution whose input is binarized by sign (sign(0) = +1); conv1d = 1×k conv2d.

    ``y = dot·scale + shift (+ residual)``, then the activation ("none", "relu", "hardtanh" = clip
    to [−1, 1], "prelu" with per-channel ``slope``). Padding is (top, left, bottom, right) zeros.

        >>> import numpy as np
        >>> conv = BinaryConv(np.zeros((4, 1), np.uint64), in_channels=2, kernel=(3, 3),
        ...                   padding=(1, 1, 1, 1), scale=np.ones(4, np.float32))
        >>> conv(np.ones((1, 2, 5, 5), np.float32)).shape
        (1, 4, 5, 5)
    """

    def __init__(self, bits: np.ndarray, *, in_channels: int, kernel: tuple[int, int], stride=(1, 1),
                 padding=(0, 0, 0, 0), dilation=(1, 1), groups: int = 1, scale: np.ndarray,
                 shift: np.ndarray | None = None, activation: str = "none", slope: np.ndarray | None = None):
        self.out_channels = bits.shape[0]
        self.in_channels, self.groups = int(in_channels), int(groups)
        self.kernel = tuple(int(v) for v in kernel)
        self.stride = tuple(int(v) for v in stride)
        self.padding = tuple(int(v) for v in padding)
        self.dilation = tuple(int(v) for v in dilation)
        self.k = self.in_channels // self.groups * self.kernel[0] * self.kernel[1]
        if bits.shape[1] != (self.k + 63) // 64:
            raise ValueError(f"bits has {bits.shape[1]} words per row, expected {(self.k + 63) // 64} for K={self.k}")
        self.bits = np.ascontiguousarray(bits, dtype=np.uint64)
        self._init_epilogue(self.out_channels, scale, shift, activation, slope)
        self.nbytes = self.bits.nbytes + sum(a.nbytes for a in (self.scale, self.shift, self.slope) if a is not None)

    def accumulate(self, x: np.ndarray) -> np.ndarray:
        """The exact integer dot products ``conv(sign(x), ±1 weights)`` as int32 [N, O, Ho, Wo]."""
        n, c, h, w = x.shape
        top, left, bottom, right = self.padding
        kh, kw = self.kernel
        sh, sw = self.stride
        dh, dw = self.dilation
        xs = np.pad(np.where(x >= 0, 1, -1).astype(np.int32), ((0, 0), (0, 0), (top, bottom), (left, right)))
        ho = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
        wo = (w + left + right - dw * (kw - 1) - 1) // sw + 1
        g, og, cpg = self.groups, self.out_channels // self.groups, c // self.groups
        weights = _signs(self.bits, self.k).reshape(g, og, cpg, kh, kw)
        out = np.zeros((n, g, og, ho, wo), np.int64)
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dh: i * dh + sh * (ho - 1) + 1: sh, j * dw: j * dw + sw * (wo - 1) + 1: sw]
                patch = patch.reshape(n, g, cpg, ho, wo)
                out += np.einsum("ngchw,goc->ngohw", patch, weights[:, :, :, i, j])
        return out.reshape(n, self.out_channels, ho, wo).astype(np.int32)

    def __call__(self, x: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
        """float32 [N, C, H, W] → float32 [N, O, Ho, Wo]."""
        return _epilogue(self.accumulate(x), self.scale, self.shift, self.activation, self.slope, residual, 1)


class BinaryLinear(_Epilogue):
    """One binary linear layer on sign(x): ``x[N, K] → y[N, O]`` with the same epilogue as `BinaryConv`."""

    def __init__(self, bits: np.ndarray, *, in_features: int, scale: np.ndarray, shift: np.ndarray | None = None,
                 activation: str = "none", slope: np.ndarray | None = None):
        self.out_features, self.in_features = bits.shape[0], int(in_features)
        if bits.shape[1] != (self.in_features + 63) // 64:
            raise ValueError(f"bits has {bits.shape[1]} words per row, expected {(self.in_features + 63) // 64}")
        self.bits = np.ascontiguousarray(bits, dtype=np.uint64)
        self._init_epilogue(self.out_features, scale, shift, activation, slope)
        self.nbytes = self.bits.nbytes + sum(a.nbytes for a in (self.scale, self.shift, self.slope) if a is not None)

    def accumulate(self, x: np.ndarray) -> np.ndarray:
        """int32 [N, O]: ``sign(x) @ signs.T``."""
        xs = np.where(x >= 0, 1, -1).astype(np.int64)
        return (xs @ _signs(self.bits, self.in_features).T.astype(np.int64)).astype(np.int32)

    def __call__(self, x: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
        return _epilogue(self.accumulate(x), self.scale, self.shift, self.activation, self.slope, residual, 1)
