"""The eager-speed forms behind the rules give the plain forms' values, special values included."""

from __future__ import annotations

import math

import pytest
import torch

from binarize.functional import sign, training_sign

SPECIAL = [-math.inf, -2.0, -1e-40, -0.0, 0.0, 1e-40, 3.0, math.inf, math.nan]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_training_sign_is_sign_bit_for_bit(dtype: torch.dtype) -> None:
    """sign(−0) = sign(0) = +1, NaN → −1 (as `sign`'s x ≥ 0), subnormals keep their sign."""
    torch.manual_seed(0)
    x = torch.cat([torch.tensor(SPECIAL, dtype=torch.float64), torch.randn(1000, dtype=torch.float64)]).to(dtype)
    fast = training_sign(x)
    assert fast.dtype == dtype and torch.equal(fast, sign(x))
    assert fast[:9].tolist() == [-1, -1, -1, 1, 1, 1, 1, 1, -1]


def test_training_sign_of_a_tensor_that_requires_grad_is_constant() -> None:
    x = torch.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    assert not training_sign(x).requires_grad and training_sign(x).tolist() == [-1, 1, 1]
