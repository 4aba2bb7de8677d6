"""Binary convolution and linear layers on packed sign bits, run by the native kernels.

Imports only NumPy and the compiled extension `binarize.packed._kernels` (no torch, no numba).

Weights arrive in the file layout of SPEC §3 (``bits[O, ceil(K/64)]``, `F.unfold` order
``k = (c·kh + i)·kw + j``, bit ``k % 64`` of little-endian word ``k // 64``, set bit = −1, pad
bits 0) and stay packed: construction re-lays them out once as ``[G, O/16 blocks, kh·kw·CW, 16]``
words (16 output channels innermost, what the micro-kernels broadcast one activation word
against; with fewer than 64 channels per group, ``[G, O/16 blocks, kh·CW, 16]`` row windows,
a kernel row's channels in CW words) plus per-tap weight sums that remove zero-padding taps
exactly. The input is
binarized by sign with sign(0) = +1 inside the kernel call; ``dot = K − 2·popcount(a xor w)``.

    >>> import numpy as np
    >>> from binarize.packed.bits import pack_signs
    >>> conv = BinaryConv(pack_signs(-np.ones((4, 18))), in_channels=2, kernel=(3, 3),
    ...                   padding=(1, 1, 1, 1), scale=np.full(4, 0.5, np.float32))
    >>> conv.accumulate(np.ones((1, 2, 3, 3), np.float32))[0, 0].tolist()
    [[-8, -12, -8], [-12, -18, -12], [-8, -12, -8]]
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from binarize.packed import _kernels

#: dispatch paths this build and CPU can run, best first ("avx512", "avx2", "portable")
PATHS: tuple[str, ...] = tuple(_kernels.paths())
ACTIVATIONS = ("none", "relu", "hardtanh", "prelu")
_BLOCK = 16  # output channels per weight block (the micro-kernels' width)


@dataclass
class _Settings:
    """What every kernel call uses: the dispatch path and the pool's thread count."""

    path: str
    threads: int


_state = _Settings(path=PATHS[0], threads=1)


def active_path() -> str:
    """Name of the dispatch path the kernels use now."""
    return _state.path


def force_path(name: str | None) -> None:
    """Use dispatch path ``name`` (one of `PATHS`; tests force each); ``None`` restores the best."""
    if name is not None and name not in PATHS:
        raise ValueError(f"unknown kernel path {name!r}; available: {', '.join(PATHS)}")
    _state.path = PATHS[0] if name is None else name


def set_num_threads(n: int) -> None:
    """Threads of the kernels' own pool (the caller's thread included); ≥ 1."""
    _state.threads = _kernels.set_threads(max(1, int(n)))


def get_num_threads() -> int:
    return _state.threads


def usable_cpus() -> int:
    """The number of cores this process may use (its CPU affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


set_num_threads(usable_cpus())


def _aligned_empty(count: int, dtype: npt.DTypeLike) -> np.ndarray:
    """A 64-byte aligned 1-D array: every layer's weights start on a cache line, so no layer
    object runs slower than its siblings because of where its allocation happened to land."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(count * itemsize + 64, np.uint8)
    start = (-raw.ctypes.data) % 64
    return raw[start: start + count * itemsize].view(dtype)


def _row_windows(cpg: int, kw: int) -> bool:
    """Whether the kernels read row windows (see _kernels.c): a kernel row of a group's channels
    in fewer words than one word per tap, as with 16 or 32 channels and a 3-wide kernel."""
    return cpg < 64 and -(-kw * cpg // 64) < kw


def _weight_layout(bits: np.ndarray, groups: int, cpg: int, kernel: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """File words [O, ceil(K/64)] → kernel words [G, OB, kh·kw·CW, 16] (with row windows
    [G, OB, kh·CW, 16], CW words per kernel row) and per-tap weight sums [G, OB, kh·kw, 16]
    (int32). Only a transient bit array is unpacked; nothing stays float."""
    out = bits.shape[0]
    kh, kw = kernel
    k = cpg * kh * kw
    og = out // groups
    blocks = -(-og // _BLOCK)
    negative = np.unpackbits(np.ascontiguousarray(bits, dtype="<u8").view(np.uint8), axis=1, bitorder="little")[:, :k]
    negative = negative.reshape(groups, og, cpg, kh, kw)
    wsum = np.zeros((groups, blocks * _BLOCK, kh * kw), np.int32)
    wsum[:, :og] = (cpg - 2 * negative.sum(axis=2, dtype=np.int32)).reshape(groups, og, kh * kw)
    wsum = wsum.reshape(groups, blocks, _BLOCK, kh * kw).transpose(0, 1, 3, 2)
    if _row_windows(cpg, kw):
        cw = -(-kw * cpg // 64)
        rows = negative.transpose(0, 1, 3, 4, 2).reshape(groups, og, kh, kw * cpg)  # bit j·cpg + c
        padded = np.zeros((groups, blocks * _BLOCK, kh, cw * 64), np.uint8)
        padded[:, :og, :, :kw * cpg] = rows
        # [G, OB, 16, kh, CW, 64] → [G, OB, kh, CW, 16, 64]
        order = padded.reshape(groups, blocks, _BLOCK, kh, cw, 64).transpose(0, 1, 3, 4, 2, 5)
    else:
        cw = -(-cpg // 64)
        padded = np.zeros((groups, blocks * _BLOCK, cw * 64, kh, kw), np.uint8)
        padded[:, :og, :cpg] = negative
        # [G, OB, 16, CW, 64, kh, kw] → [G, OB, kh, kw, CW, 16, 64]
        order = padded.reshape(groups, blocks, _BLOCK, cw, 64, kh, kw).transpose(0, 1, 5, 6, 3, 2, 4)
    # 64 bits → one little-endian word
    words = np.packbits(np.ascontiguousarray(order), axis=-1, bitorder="little").view("<u8").reshape(-1)
    layout = _aligned_empty(words.size, np.uint64)
    layout[:] = words
    return layout, np.ascontiguousarray(wsum, dtype=np.int32)


class _Epilogue:
    """Per-output-channel ``y = act(dot·scale + shift + residual)`` parameters, validated once."""

    def _init_epilogue(self, out: int, scale: np.ndarray, shift: np.ndarray | None, activation: str,
                       slope: np.ndarray | None) -> None:
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
    to [−1, 1], "prelu" with per-channel ``slope``), all in the kernel's epilogue. Padding is
    (top, left, bottom, right) zeros, removed exactly from the dot products.
    """

    def __init__(self, bits: np.ndarray, *, in_channels: int, kernel: tuple[int, int],
                 stride: tuple[int, int] = (1, 1), padding: tuple[int, int, int, int] = (0, 0, 0, 0),
                 dilation: tuple[int, int] = (1, 1), groups: int = 1, scale: np.ndarray,
                 shift: np.ndarray | None = None, activation: str = "none", slope: np.ndarray | None = None) -> None:
        self.out_channels, self.in_channels, self.groups = int(bits.shape[0]), int(in_channels), int(groups)
        kh, kw = kernel
        self.kernel = int(kh), int(kw)
        self.stride = tuple(int(v) for v in stride)
        self.padding = tuple(int(v) for v in padding)
        self.dilation = tuple(int(v) for v in dilation)
        if (self.groups < 1 or self.in_channels % self.groups or self.out_channels % self.groups
                or min(self.kernel + self.stride + self.dilation) < 1 or min(self.padding) < 0):
            raise ValueError(f"inconsistent convolution: in_channels={in_channels}, out={self.out_channels}, "
                             f"groups={groups}, kernel={kernel}, stride={stride}, padding={padding}, dilation={dilation}")
        cpg = self.in_channels // self.groups
        self.k = cpg * self.kernel[0] * self.kernel[1]
        if bits.ndim != 2 or bits.shape[1] != -(-self.k // 64):
            raise ValueError(f"bits has shape {bits.shape}, expected [{self.out_channels}, {-(-self.k // 64)}] "
                             f"for K={self.k}")
        self._weights, self._wsum = _weight_layout(bits, self.groups, cpg, self.kernel)
        windows = _row_windows(cpg, self.kernel[1])
        # (words per tap or per row window, whether row windows)
        self._words = (-(-self.kernel[1] * cpg // 64) if windows else -(-cpg // 64), int(windows))
        self._init_epilogue(self.out_channels, scale, shift, activation, slope)
        self._activation_id = ACTIVATIONS.index(activation)
        self._plans: dict[tuple[tuple[int, ...], str], tuple[object, tuple[int, int, int, int]]] = {}
        self.nbytes = sum(a.nbytes for a in (self._weights, self._wsum, self.scale, self.shift, self.slope)
                          if a is not None)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(Ho, Wo) for an input of ``height × width``."""
        top, left, bottom, right = self.padding
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        return (height + top + bottom - dh * (kh - 1) - 1) // sh + 1, (width + left + right - dw * (kw - 1) - 1) // sw + 1

    def _plan(self, shape: tuple[int, ...]) -> tuple[object, tuple[int, int, int, int]]:
        """The native call plan (geometry, padding corrections, views of the weights) and the
        output shape for an input shape and the active path (cached: a layer sees one or two input
        sizes, and this runs on every call)."""
        key = shape, _state.path
        cached = self._plans.get(key)
        if cached is not None:
            return cached
        if len(shape) != 4 or shape[1] != self.in_channels:
            raise ValueError(f"expected input [N, {self.in_channels}, H, W], got {shape}")
        n, _, height, width = shape
        out_h, out_w = self.output_size(height, width)
        if out_h < 1 or out_w < 1:
            raise ValueError(f"input {height}×{width} is smaller than the kernel's field")
        top, left, bottom, right = self.padding
        cpg = self.in_channels // self.groups
        geometry = (n, self.in_channels, height, width, self.groups, *self.kernel, *self.stride, *self.dilation,
                    top, left, height + top + bottom, width + left + right, self.out_channels,
                    -(-(self.out_channels // self.groups) // _BLOCK), out_h, out_w, self.k, cpg, *self._words)
        if len(self._plans) >= 16:
            self._plans.clear()
        plan = _kernels.conv_plan(geometry, self._weights, self._wsum, self.scale, self.shift, self.slope, _state.path,
                                  self._activation_id)
        self._plans[key] = plan, (n, self.out_channels, out_h, out_w)
        return self._plans[key]

    def _run(self, x: np.ndarray, residual: np.ndarray | None, integer: bool) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        plan, out_shape = self._plan(x.shape)
        out = np.empty(out_shape, np.int32 if integer else np.float32)
        if residual is not None:
            residual = np.ascontiguousarray(residual, dtype=np.float32)
            if residual.shape != out_shape:
                raise ValueError(f"residual has shape {residual.shape}, expected {out_shape}")
        _kernels.conv(plan, x, residual, out, integer)
        return out

    def __call__(self, x: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
        """float32 [N, C, H, W] → float32 [N, O, Ho, Wo]; ``residual`` (same shape as the output)
        is added before the activation."""
        return self._run(x, residual, integer=False)

    def accumulate(self, x: np.ndarray) -> np.ndarray:
        """The exact integer dot products ``conv(sign(x), ±1 weights)`` as int32 [N, O, Ho, Wo]."""
        return self._run(x, None, integer=True)


class BinaryLinear:
    """One binary linear layer on sign(x): ``x[N, K] → y[N, O]``, with `BinaryConv`'s epilogue
    (it runs as a 1×1 convolution over a 1×1 image)."""

    def __init__(self, bits: np.ndarray, *, in_features: int, scale: np.ndarray, shift: np.ndarray | None = None,
                 activation: str = "none", slope: np.ndarray | None = None) -> None:
        self.out_features, self.in_features = int(bits.shape[0]), int(in_features)
        self._conv = BinaryConv(bits, in_channels=in_features, kernel=(1, 1), scale=scale, shift=shift,
                                activation=activation, slope=slope)
        self.nbytes = self._conv.nbytes

    def _image(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 2:
            raise ValueError(f"expected input [N, {self.in_features}], got {x.shape}")
        return x.reshape(*x.shape, 1, 1)

    def __call__(self, x: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
        """float32 [N, K] → float32 [N, O]; ``residual`` [N, O] is added before the activation."""
        image_residual = None if residual is None else residual.reshape(*residual.shape, 1, 1)
        return self._conv(self._image(x), image_residual).reshape(x.shape[0], self.out_features)

    def accumulate(self, x: np.ndarray) -> np.ndarray:
        """int32 [N, O]: ``sign(x) @ signs.T``."""
        return self._conv.accumulate(self._image(x)).reshape(x.shape[0], self.out_features)
