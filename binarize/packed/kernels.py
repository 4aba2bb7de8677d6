"""Bitwise kernels: pack activation signs into uint64 words, xor/popcount convolution.

Layouts (runtime-internal; the file stores weights in `F.unfold` order, see SPEC.md):

- packed activations ``A[N, Hp, Wp, G, CW]``: the signs of one pixel's channels of group ``g``,
  64 per word, bit set = −1; spatial zero padding is packed as +1 (bit 0) and corrected exactly
  afterwards (`border_correction`), so the inner loop has no bounds checks;
- packed weights ``B[G, kh, kw, CW, Og]``: output channels innermost, so that one activation
  word is xor-ed against a contiguous vector of weight words (this is the loop LLVM turns into
  AVX-512 ``vpopcntq``; on CPUs without it LLVM emits ``popcnt`` or a bit-trick sequence).

``dot = K − 2·popcount(a xor w)`` over the valid taps; pad bits of partial words are 0 in both
operands, so they never count.

Numba compiles the kernels (parallel over output rows via ``prange``); without numba the NumPy
fallback computes the same integers, slower.
"""

from __future__ import annotations

import os

import numpy as np

try:  # numba is a dependency; the fallback keeps the runtime usable where it cannot load
    import numba
    from numba import prange
    from numba.core import types as _nb_types
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover - exercised by forcing BINARIZE_PACKED_KERNELS=numpy
    numba = None

#: "numba" (default) or "numpy" (the portable fallback, also forced by BINARIZE_PACKED_KERNELS)
BACKEND = "numba" if numba is not None and os.environ.get("BINARIZE_PACKED_KERNELS", "numba") != "numpy" else "numpy"


def set_num_threads(threads: int) -> None:
    """Number of threads the kernels use (numba's thread pool; no-op for the NumPy fallback)."""
    if BACKEND == "numba":
        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))


# ---------------------------------------------------------------------------------------------
# weight re-layout (load time, NumPy)

def conv_weight_layout(rows: np.ndarray, groups: int, channels_per_group: int, kernel: tuple[int, int]) -> np.ndarray:
    """Unfold-order ±1 rows ``[O, K]`` → packed ``B[G, kh, kw, CW, Og]`` (bit set = −1)."""
    out_channels = rows.shape[0]
    kh, kw = kernel
    og = out_channels // groups
    cw = (channels_per_group + 63) // 64
    signs = rows.reshape(groups, og, channels_per_group, kh, kw)
    negative = np.zeros((groups, og, cw * 64, kh, kw), dtype=np.uint8)
    negative[:, :, :channels_per_group] = signs < 0
    # [G, Og, CW, 64, kh, kw] → [G, kh, kw, CW, Og, 64] then 64 bits → one little-endian word
    bits = negative.reshape(groups, og, cw, 64, kh, kw).transpose(0, 4, 5, 2, 1, 3)
    words = np.packbits(np.ascontiguousarray(bits), axis=-1, bitorder="little").view("<u8")
    return np.ascontiguousarray(words.reshape(groups, kh, kw, cw, og))


def linear_weight_layout(rows: np.ndarray) -> np.ndarray:
    """±1 rows ``[O, K]`` → packed ``B[KW, O]`` (bit set = −1)."""
    out_features, k = rows.shape
    kw = (k + 63) // 64
    negative = np.zeros((out_features, kw * 64), dtype=np.uint8)
    negative[:, :k] = rows < 0
    words = np.packbits(negative, axis=-1, bitorder="little").view("<u8")
    return np.ascontiguousarray(words.T)


# ---------------------------------------------------------------------------------------------
# numba kernels

if numba is not None:

    @intrinsic
    def _popcount(typingctx, value):  # noqa: ARG001 - numba's intrinsic signature
        """LLVM ``ctpop`` on a uint64 (vectorizes to ``vpopcntq`` where the CPU has it)."""
        if not isinstance(value, _nb_types.Integer):
            return None
        sig = _nb_types.uint64(_nb_types.uint64)

        def codegen(context, builder, signature, args):
            return builder.ctpop(args[0])

        return sig, codegen

    _JIT = {"nogil": True, "cache": True, "fastmath": False, "error_model": "numpy"}

    @numba.njit(parallel=True, **_JIT)
    def _pack_conv_input(x, groups, pad_h, pad_w, out):
        """x[N, C, H, W] float → out[N, H+2ph, W+2pw, G, CW] (pre-zeroed) sign bits."""
        n_batch, channels, height, width = x.shape
        cpg = channels // groups
        cw = out.shape[4]
        for job in prange(n_batch * height):
            n = job // height
            h = job % height
            row = np.empty(width, dtype=np.uint64)
            for g in range(groups):
                for word in range(cw):
                    row[:] = 0
                    for cl in range(word * 64, min(cpg, word * 64 + 64)):
                        plane = x[n, g * cpg + cl, h]
                        shift = np.uint64(cl & 63)
                        for w in range(width):
                            row[w] |= np.uint64(plane[w] < 0) << shift
                    for w in range(width):
                        out[n, h + pad_h, w + pad_w, g, word] = row[w]

    @numba.njit(parallel=True, **_JIT)
    def _pack_rows(x, out):
        """x[N, K] float → out[N, KW] (pre-zeroed) sign bits."""
        n_batch, k = x.shape
        for n in prange(n_batch):
            for i in range(k):
                if x[n, i] < 0:
                    out[n, i >> 6] |= np.uint64(1) << np.uint64(i & 63)

    @numba.njit(parallel=True, **_JIT)
    def _conv_popcount(a, b, stride_h, stride_w, dil_h, dil_w, out_h, out_w, k, border, alpha, bias, out):
        """out[N, OH, OW, G*Og] = (k − 2·Σ popcount(a xor b) − border) · alpha + bias.

        Parallel over output rows; along a row, blocks of 4 output pixels share every
        weight-vector load (what keeps short K fast); the output channels are the innermost,
        vectorized loop, and the epilogue writes them contiguously.
        """
        n_batch = a.shape[0]
        groups, kh, kw, cw, og = b.shape
        for job in prange(n_batch * out_h):
            n = job // out_h
            oy = job % out_h
            acc = np.empty((4, og), dtype=np.int64)
            for g in range(groups):
                for ox0 in range(0, out_w, 4):
                    count = min(4, out_w - ox0)
                    # a short last block recomputes its last pixel instead of taking a slow path
                    step1 = min(1, count - 1) * stride_w
                    step2 = min(2, count - 1) * stride_w
                    step3 = min(3, count - 1) * stride_w
                    acc[:] = 0
                    for i in range(kh):
                        y = oy * stride_h + i * dil_h
                        for j in range(kw):
                            x0 = ox0 * stride_w + j * dil_w
                            for word in range(cw):
                                weights = b[g, i, j, word]
                                a0 = a[n, y, x0, g, word]
                                a1 = a[n, y, x0 + step1, g, word]
                                a2 = a[n, y, x0 + step2, g, word]
                                a3 = a[n, y, x0 + step3, g, word]
                                for o in range(og):
                                    wv = weights[o]
                                    acc[0, o] += _popcount(a0 ^ wv)
                                    acc[1, o] += _popcount(a1 ^ wv)
                                    acc[2, o] += _popcount(a2 ^ wv)
                                    acc[3, o] += _popcount(a3 ^ wv)
                    c0 = g * og
                    for p in range(count):
                        for o in range(og):
                            dot = k - 2 * acc[p, o] - border[oy, ox0 + p, c0 + o]
                            out[n, oy, ox0 + p, c0 + o] = np.float32(dot) * alpha[c0 + o] + bias[c0 + o]

    @numba.njit(parallel=True, **_JIT)
    def _linear_popcount(a, b, out):
        """out[N, O] int32 = Σ_words popcount(a[N, KW] xor b[KW, O])."""
        n_batch, kwords = a.shape
        features = b.shape[1]
        for n in prange(n_batch):
            acc = np.zeros(features, dtype=np.int64)
            for word in range(kwords):
                av = a[n, word]
                for o in range(features):
                    acc[o] += _popcount(av ^ b[word, o])
            for o in range(features):
                out[n, o] = acc[o]


# ---------------------------------------------------------------------------------------------
# NumPy fallback (same integers)

def _np_popcount(words: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words)
    as_bytes = words.view(np.uint8).reshape(words.shape + (8,))
    return np.unpackbits(as_bytes, axis=-1).sum(axis=-1, dtype=np.int64)


def _np_pack_conv_input(x: np.ndarray, groups: int, pad_h: int, pad_w: int, out: np.ndarray) -> None:
    n_batch, channels, height, width = x.shape
    cpg = channels // groups
    cw = out.shape[-1]
    negative = np.zeros((n_batch, height, width, groups, cw * 64), dtype=np.uint8)
    negative[..., :cpg] = (x < 0).reshape(n_batch, groups, cpg, height, width).transpose(0, 3, 4, 1, 2)
    words = np.packbits(negative, axis=-1, bitorder="little").view("<u8")
    out[:, pad_h : pad_h + height, pad_w : pad_w + width] = words


def _np_pack_rows(x: np.ndarray, out: np.ndarray) -> None:
    negative = np.zeros((x.shape[0], out.shape[1] * 64), dtype=np.uint8)
    negative[:, : x.shape[1]] = x < 0
    out[:] = np.packbits(negative, axis=-1, bitorder="little").view("<u8")


def _np_conv_popcount(a, b, stride_h, stride_w, dil_h, dil_w, out_h, out_w, k, border, alpha, bias, out) -> None:
    groups, kh, kw, cw, og = b.shape
    total = np.zeros((a.shape[0], out_h, out_w, groups, og), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            y0, x0 = i * dil_h, j * dil_w
            patch = a[:, y0 : y0 + stride_h * (out_h - 1) + 1 : stride_h, x0 : x0 + stride_w * (out_w - 1) + 1 : stride_w]
            # patch[N, OH, OW, G, CW] vs b[G, i, j, CW, Og]
            total += _np_popcount(patch[..., None] ^ b[None, None, None, :, i, j]).sum(axis=-2, dtype=np.int64)
    dot = (k - 2 * total.reshape(a.shape[0], out_h, out_w, groups * og) - border[None]).astype(np.float32)
    out[:] = dot * alpha + bias


def _np_linear_popcount(a, b, out) -> None:
    out[:] = _np_popcount(a[:, :, None] ^ b[None]).sum(axis=1, dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# public entry points

def pack_conv_input(x: np.ndarray, groups: int, padding: tuple[int, int]) -> np.ndarray:
    """Sign bits of ``x[N, C, H, W]`` (any strides, e.g. channels_last) as
    ``A[N, H+2ph, W+2pw, G, CW]`` (zero padding → +1)."""
    n_batch, channels, height, width = x.shape
    cw = (channels // groups + 63) // 64
    out = np.zeros((n_batch, height + 2 * padding[0], width + 2 * padding[1], groups, cw), dtype=np.uint64)
    (_pack_conv_input if BACKEND == "numba" else _np_pack_conv_input)(x, groups, padding[0], padding[1], out)
    return out


def pack_rows(x: np.ndarray) -> np.ndarray:
    """Sign bits of ``x[N, K]`` as ``[N, ceil(K/64)]`` little-endian words (bit set = −1)."""
    out = np.zeros((x.shape[0], (x.shape[1] + 63) // 64), dtype=np.uint64)
    (_pack_rows if BACKEND == "numba" else _np_pack_rows)(x, out)
    return out


def binary_conv(
    a: np.ndarray, b: np.ndarray, stride: tuple[int, int], dilation: tuple[int, int], out_size: tuple[int, int],
    k: int, border: np.ndarray, alpha: np.ndarray, bias: np.ndarray,
) -> np.ndarray:
    """``(k − 2·popcount(a xor w) − border) · α + bias`` per output, channels last:
    ``[N, OH, OW, O]`` float32 (torch's channels_last layout once permuted to NCHW).

    ``border[OH, OW, O]`` (int32) is the weight sum over zero-padding taps; with α = 1 and
    bias = 0 the result is the exact integer accumulator (|dot| ≤ k < 2²⁴ is exact in float32).
    Channels last keeps the fused epilogue contiguous (vectorized) even when K is short.
    """
    out = np.empty((a.shape[0], out_size[0], out_size[1], b.shape[0] * b.shape[4]), dtype=np.float32)
    kernel = _conv_popcount if BACKEND == "numba" else _np_conv_popcount
    kernel(a, b, stride[0], stride[1], dilation[0], dilation[1], out_size[0], out_size[1], k, border, alpha, bias, out)
    return out


def linear_popcount(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``popcount(a xor w)`` summed per output ``[N, O]`` (int32)."""
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.int32)
    (_linear_popcount if BACKEND == "numba" else _np_linear_popcount)(a, b, out)
    return out
