"""Bit layout and bitwise kernels: the integer dot products equal PyTorch's, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from binarize.packed import kernels
from binarize.packed.bits import pack_signs, pad_bits_clear, unpack_signs
from binarize.packed.runtime import BinaryConv, BinaryLinear


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


def _sign(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, 1.0, -1.0)


@pytest.fixture(params=["numba", "numpy"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test on the JIT kernels and on the portable NumPy fallback."""
    if request.param == "numba" and kernels.numba is None:
        pytest.skip("numba unavailable")
    monkeypatch.setattr(kernels, "BACKEND", request.param)
    return request.param


CONV_CASES = [
    # channels, out, size, kernel, stride, padding, dilation, groups, padding_mode
    (64, 16, 9, 3, 1, 1, 1, 1, "zeros"),
    (3, 5, 7, 3, 2, 1, 1, 1, "zeros"),  # K = 27, partial word, stride 2
    (130, 8, 6, 3, 1, 2, 2, 1, "zeros"),  # three words per tap, dilation, wide border
    (16, 8, 8, 3, 2, 1, 1, 4, "zeros"),  # groups
    (8, 8, 7, 3, 1, 1, 1, 8, "zeros"),  # depthwise
    (12, 6, 5, 1, 2, 0, 1, 1, "zeros"),  # 1x1 strided shortcut
    (10, 7, 9, 5, 3, 2, 1, 1, "zeros"),  # 5x5, odd output width (partial pixel block)
    (8, 4, 6, 3, 1, 1, 1, 1, "reflect"),
    (8, 4, 6, 3, 1, 1, 1, 2, "circular"),
    (8, 4, 6, 3, 1, 2, 1, 1, "replicate"),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "-".join(map(str, c)))
def test_conv_accumulators_equal_pytorch(case: tuple, backend: str) -> None:
    channels, out, size, kernel, stride, padding, dilation, groups, mode = case
    x = torch.randn(2, channels, size, size + 1)
    x[0, 0, 0, :2] = 0.0  # sign(0) = +1
    signs = _sign(torch.randn(out, channels // groups, kernel, kernel))
    bits = pack_signs(signs.reshape(out, -1).numpy())
    layer = BinaryConv(
        {"dims": 2, "in_channels": channels, "out_channels": out, "kernel_size": [kernel, kernel],
         "stride": [stride, stride], "padding": [padding, padding], "dilation": [dilation, dilation],
         "groups": groups, "padding_mode": mode, "binary_input": True},
        bits, np.ones(out, np.float32), None,
    )
    xs = _sign(x)
    if mode != "zeros":
        xs, padding = F.pad(xs, [padding] * 4, mode=mode), 0
    expected = F.conv2d(xs.double(), signs.double(), None, stride, padding, dilation, groups)
    actual = layer.accumulators(x)
    assert actual.dtype == torch.int32
    assert torch.equal(actual.double(), expected)


@pytest.mark.parametrize("features", [(70, 9), (64, 130), (600, 33)])
def test_linear_accumulators_equal_pytorch(features: tuple[int, int], backend: str) -> None:
    k, out = features
    x = torch.randn(3, k)
    x[0, :5] = 0.0
    signs = _sign(torch.randn(out, k))
    layer = BinaryLinear({"in_features": k, "out_features": out, "binary_input": True},
                         pack_signs(signs.numpy()), np.ones(out, np.float32), None)
    assert torch.equal(layer.accumulators(x).double(), _sign(x).double() @ signs.double().T)
