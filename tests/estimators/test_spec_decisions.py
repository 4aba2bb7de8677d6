"""The estimator spec's open points, as decided in docs/estimator-decisions.md."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from binarize import estimators
from binarize.nn import BinaryConv2d
from binarize.nn.libra import LibraPB


def test_channel_scaled_weight_gradient_is_alpha_times_reactnets():
    """binarize scales the output by α_o (detached): the latent-weight gradient is α_o times
    ReActNet's HardBinaryConv, which scales the weights and passes the clamp gradient unscaled."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 3, 3, padding=1, bias=False)
    x, upstream = torch.randn(2, 4, 5, 5), torch.randn(2, 3, 5, 5)
    binary = BinaryConv2d.from_float(conv, weight_estimator="clipped_ste", input_estimator=None, scaling="channel_mean")
    (binary(x) * upstream).sum().backward()
    # ReActNet / Bi-Real (HardBinaryConv): w_b = α·sign(W) − clamp(W).detach() + clamp(W)
    latent = conv.weight.detach().clone().requires_grad_()
    alpha = latent.abs().mean(dim=(1, 2, 3), keepdim=True).detach()
    clipped = latent.clamp(-1, 1)
    reactnet = alpha * torch.sign(latent) - clipped.detach() + clipped
    (F.conv2d(x, reactnet, padding=1) * upstream).sum().backward()
    assert torch.allclose(binary.weight.grad, alpha * latent.grad, atol=1e-6)
    assert not torch.allclose(binary.weight.grad, latent.grad, atol=1e-3)  # the factor is real (α ≈ 0.1)


def test_reste_t_below_m_follows_the_official_branch_order():
    """Chord slope assigned last: |x| ≤ m gets m^(1/o)/m even where |x| > t; 0 beyond max(t, m)."""
    reste = estimators.create("reste", t=0.05, m=0.1)
    reste.set_progress(1.0)  # o = 3
    chord = 0.1 ** (1 / 3) / 0.1
    x = torch.tensor([-0.2, -0.08, 0.0, 0.03, 0.08, 0.1, 0.2], dtype=torch.float64)
    assert reste.derivative(x).tolist() == pytest.approx([0, chord, chord, chord, chord, chord, 0], rel=1e-12)
    # and it is the derivative of the surrogate (linear chord inside m, flat t^(1/o) outside;
    # away from 0, where autograd meets |x|^(1/o) in the branch `where` does not pick)
    away = x[x != 0]
    probe = away.clone().requires_grad_()
    reste.surrogate(probe).sum().backward()
    assert probe.grad.tolist() == pytest.approx(reste.derivative(away).tolist(), rel=1e-12)
    # the default t > m is unchanged: the reference row o = 3 (4.64159 inside m, 0 beyond t)
    default = estimators.create("reste")
    default.set_progress(1.0)
    grid = torch.tensor([-1.6, -0.5, 0.0, 1.5, 1.6], dtype=torch.float64)
    assert default.derivative(grid).tolist() == pytest.approx([0, 0.529134, 4.64159, 0.254381, 0], abs=1e-5)


def test_adaste_relaxed_weight_at_zero_follows_sign_zero_plus_one():
    """The official table has w*(0) = 0 (torch.sign(0) = 0); with sign(0) = +1 it is β(1+α)/(1+β)."""
    adaste = estimators.create("adaste")
    adaste.set_progress(0.0)  # β = 0.01·1.05 = 0.0105
    beta, alpha = 0.0105, 0.01
    w0 = adaste.surrogate(torch.zeros(1, dtype=torch.float64)).item()
    assert w0 == pytest.approx(beta * (1 + alpha) / (1 + beta), rel=1e-9)
    assert w0 == pytest.approx(0.0104948, abs=1e-7) and w0 != 0.0


def test_libra_pb_keeps_a_constant_channel_finite():
    """Official IR-Net divides by a zero std (NaN); binarize clamps it: Ŵ = 0, signs +1."""
    weight = torch.tensor([[[[0.3, -0.1], [0.05, 0.2]]], [[[0.02, 0.02], [0.02, 0.02]]]])
    standardised = LibraPB()(weight)
    official = (weight - weight.mean(dim=(1, 2, 3), keepdim=True)) / weight.std(dim=(1, 2, 3), keepdim=True)
    assert torch.isnan(official[1]).all() and torch.isfinite(standardised).all()
    assert standardised[1].eq(0).all()
    assert torch.allclose(standardised[0], official[0])
    assert not math.isnan(float(standardised.sum()))
