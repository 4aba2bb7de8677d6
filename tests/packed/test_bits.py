"""Bit layout of packed weights (SPEC §3); the kernels are tested in test_native_kernels.py."""

from __future__ import annotations

import numpy as np
import pytest

from binarize.packed.bits import pack_signs, pad_bits_clear, unpack_signs


def test_bit_positions_follow_the_spec() -> None:
    rows = np.ones((2, 70))
    rows[0, 0] = -1  # word 0 bit 0
    rows[0, 63] = -1  # word 0 bit 63
    rows[1, 64] = -1  # word 1 bit 0
    rows[1, 69] = -1  # word 1 bit 5
    words = pack_signs(rows)
    assert words.dtype == np.uint64 and words.shape == (2, 2)
    assert words[0].tolist() == [1 | (1 << 63), 0]
    assert words[1].tolist() == [0, 1 | (1 << 5)]
    assert words.astype("<u8").tobytes()[:8] == bytes([1, 0, 0, 0, 0, 0, 0, 0x80])  # little-endian
    assert pad_bits_clear(words, 70)
    assert not pad_bits_clear(words | np.uint64(1 << 6), 70)


@pytest.mark.parametrize("k", [1, 63, 64, 65, 576, 1000])
def test_pack_unpack_round_trip(k: int) -> None:
    rows = np.where(np.random.default_rng(k).random((5, k)) < 0.5, -1.0, 1.0)
    words = pack_signs(rows)
    assert words.shape == (5, (k + 63) // 64)
    assert np.array_equal(unpack_signs(words, k), rows.astype(np.float32))
    assert pad_bits_clear(words, k)
