"""The eager-speed forms behind the rules give the plain forms' values, special values included."""

from __future__ import annotations

import math

import pytest
import torch

from binarize.estimators.adaste import AdaSTE
from binarize.estimators.dste import sample_sign
from binarize.functional import CHUNK, in_chunks, sign, training_sign
from binarize.progress import set_progress

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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_sample_sign_is_the_sign_of_the_difference(dtype: torch.dtype) -> None:
    """A sample is +1 exactly where P ≥ u: ties (P = u) → +1, NaN → −1, subnormal gaps."""
    torch.manual_seed(0)
    probability = torch.cat([torch.tensor([0.5, 0.0, 1e-40, 1.0, math.nan, 0.3]), torch.rand(1000)]).to(dtype)
    uniform = torch.cat([torch.tensor([0.5, 0.0, 0.0, 1.0, 0.5, 0.4]), torch.rand(1000)]).to(dtype)
    assert torch.equal(sample_sign(probability, uniform), sign(probability - uniform))
    assert sample_sign(probability, uniform)[:6].tolist() == [1, 1, 1, 1, -1, -1]


def test_in_chunks_runs_a_large_rule_on_slices_with_the_same_values() -> None:
    """AdaSTE (a chunked rule) through `Binarize` on a weight of 2.3 chunks: the forward and
    the gradient equal the rule applied to the whole tensor, bit for bit."""
    estimator = AdaSTE().train()
    set_progress(estimator, 0.1)
    torch.manual_seed(0)
    theta = (torch.randn(int(2.3 * CHUNK)) * 0.5).requires_grad_()
    grad = torch.randn(theta.shape)
    estimator(theta).backward(grad)
    assert torch.equal(estimator(theta).detach(), estimator.forward_value(theta.detach()))
    assert torch.equal(theta.grad, estimator.backward(theta.detach(), grad))


def test_in_chunks_slices_only_large_contiguous_cpu_tensors() -> None:
    seen: list[int] = []

    def rule(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.numel())
        return torch.rand_like(x)

    big = torch.zeros(2 * CHUNK + 5)
    torch.manual_seed(0)
    sampled = in_chunks(rule, big)
    assert seen == [CHUNK, CHUNK, 5]
    torch.manual_seed(0)  # torch's CPU generator draws in element order: slices draw the same
    assert torch.equal(sampled, torch.rand_like(big))
    seen.clear()
    in_chunks(rule, torch.zeros(CHUNK, 3).t())  # not contiguous: whole
    in_chunks(rule, torch.zeros(2 * CHUNK))  # at most two chunks: whole
    assert seen == [3 * CHUNK, 2 * CHUNK]
