"""AdaSTE against the spec's tables (the official FenBPOpt.get_grad values) and NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import reference_numpy as ref
from binarize.estimators import create

THETA = torch.tensor(ref.X, dtype=torch.float64)


def adaste_at(beta: float, **hparams):
    estimator = create("adaste", **hparams)
    estimator.beta.fill_(beta)
    return estimator


def dl_dtheta(estimator, g: float) -> np.ndarray:
    theta = THETA.clone().requires_grad_(True)
    estimator(theta).backward(torch.full_like(theta, g))
    return theta.grad.numpy()


def test_relaxed_forward_in_training_and_sign_in_eval() -> None:
    estimator = adaste_at(0.0105)
    expected = [-1, -1, -0.505299, -0.109456, 0, 0.109456, 0.505299, 1, 1]
    got = estimator.train()(THETA).numpy()
    # sign(0) = +1 in binarize: w*(0) = β(1+α)/(1+β) instead of the official torch.sign's 0
    expected[4] = 0.0105 * 1.01 / 1.0105
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(got, ref.adaste_w(ref.X, 0.0105), rtol=1e-12)
    assert estimator.eval()(THETA).tolist() == [-1, -1, -1, -1, 1, 1, 1, 1, 1]
    np.testing.assert_array_equal(adaste_at(100.0).train()(THETA).numpy(), [-1, -1, -1, -1, 1, 1, 1, 1, 1])


OFFICIAL = {
    (0.0105, +1.0): [0, 0, 0.989609, 0.989609, 0.989609, 0, 0, 0.5, 0.5],
    (0.0105, -1.0): [-0.5, -0.5, -0.5, -0.5, -0.989609, -0.989609, -0.989609, 0, 0],
    (100.0, +1.0): [0, 0, 0, 0, 1, 0.5, 0.5, 0.5, 0.5],
    (100.0, -1.0): [-0.5, -0.5, -0.5, -0.5, -1, 0, 0, 0, 0],
}


@pytest.mark.parametrize(("beta", "g"), list(OFFICIAL))
def test_official_asymmetry_reproduces_the_code(beta: float, g: float) -> None:
    got = dl_dtheta(adaste_at(beta, official_asymmetry=True).train(), g)
    np.testing.assert_allclose(got, OFFICIAL[(beta, g)], rtol=1e-5)
    reference = [ref.adaste_grad(t, g, beta, official=True) for t in ref.X]
    np.testing.assert_allclose(got, reference, rtol=1e-12)


@pytest.mark.parametrize(("beta", "g"), list(OFFICIAL))
def test_symmetric_rule_by_default(beta: float, g: float) -> None:
    got = dl_dtheta(adaste_at(beta).train(), g)
    expected = list(OFFICIAL[(beta, g)])
    if (beta, g) == (0.0105, +1.0):
        expected[5] = expected[6] = 0.5  # the mirrors of θ = −0.1, −0.5 with g = −1
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(got, [ref.adaste_grad(t, g, beta) for t in ref.X], rtol=1e-12)


def test_symmetric_rule_is_odd_under_mirroring() -> None:
    """s(θ, g) = s(−θ, −g) for θ ≠ 0: the mirror of every entry moves the same way."""
    theta = torch.tensor([-1.5, -1.0, -0.5, -0.1, 0.1, 0.5, 1.0, 1.5], dtype=torch.float64)
    for beta in (0.0105, 0.5, 100.0):
        estimator = adaste_at(beta)
        for g in (1.0, -1.0):
            forward = estimator.factor(theta, torch.full_like(theta, g))
            mirror = estimator.factor(-theta, torch.full_like(theta, -g))
            np.testing.assert_allclose(forward.numpy(), mirror.numpy(), rtol=1e-15)


def test_small_gradients_take_the_default_factor() -> None:
    estimator = adaste_at(0.0105)
    factor = estimator.factor(THETA, torch.full_like(THETA, 1e-4))
    np.testing.assert_allclose(factor.numpy(), np.full(9, 1 / 1.0105), rtol=1e-12)
