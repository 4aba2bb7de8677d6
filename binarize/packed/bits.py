"""The `.bnz` bit layout of binary weights: ±1 rows ↔ little-endian uint64 words.

Row ``o`` holds output channel ``o``'s K = (C/g)·kh·kw weights in `F.unfold` column order
(``k = (c·kh + i)·kw + j``); element k is bit ``k % 64`` of word ``k // 64``; a set bit means −1;
the ``64·ceil(K/64) − K`` pad bits of the last word are 0.
"""

from __future__ import annotations

import numpy as np

WORD_BITS = 64


def words_per_row(k: int) -> int:
    """Number of uint64 words holding a row of ``k`` bits."""
    return (k + WORD_BITS - 1) // WORD_BITS


def pack_signs(rows: np.ndarray) -> np.ndarray:
    """±1 values ``[O, K]`` (any real dtype; ≥ 0 counts as +1) → uint64 words ``[O, ceil(K/64)]``."""
    rows = np.asarray(rows)
    if rows.ndim != 2:
        raise ValueError(f"expected [O, K] rows, got shape {rows.shape}")
    out_channels, k = rows.shape
    negative = np.zeros((out_channels, words_per_row(k) * WORD_BITS), dtype=np.uint8)
    negative[:, :k] = rows < 0
    return np.packbits(negative, axis=1, bitorder="little").view("<u8").astype(np.uint64, copy=False)


def unpack_signs(words: np.ndarray, k: int) -> np.ndarray:
    """uint64 words ``[O, ceil(K/64)]`` → ±1 float32 ``[O, K]``."""
    as_bytes = np.ascontiguousarray(words, dtype="<u8").view(np.uint8)
    negative = np.unpackbits(as_bytes, axis=1, bitorder="little")[:, :k]
    return (1.0 - 2.0 * negative).astype(np.float32)


def pad_bits_clear(words: np.ndarray, k: int) -> bool:
    """True when every pad bit (positions ≥ k of each row's last word) is 0."""
    used = k % WORD_BITS
    if used == 0 or words.shape[1] == 0:
        return True
    return not np.any(words[:, -1] >> np.uint64(used))
