"""Gradients through real binary layers equal the estimator's rule applied to the upstream grad."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from binarize.nn import BinaryConv2d, BinaryLinear
from binarize.progress import set_progress

PER_TENSOR = ["ste", "clipped_ste", "reste", "irnet", "adaste", "approxsign", "dste"]


def _layer(kind: str, estimator: str, scaling: str, input_estimator: str | None = None):
    torch.manual_seed(1)
    if kind == "linear":
        float_layer = nn.Linear(6, 4).double()
        x = torch.randn(5, 6, dtype=torch.float64)
    else:
        float_layer = nn.Conv2d(3, 4, 3, padding=1).double()
        x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    with torch.no_grad():  # spread latent weights over every branch, zeros and borders included
        flat = float_layer.weight.view(-1)
        flat.copy_(torch.linspace(-1.6, 1.6, flat.numel(), dtype=torch.float64)[torch.randperm(flat.numel())])
        flat[:3] = torch.tensor([0.0, 0.1, -1.0])
    layer = (BinaryLinear if kind == "linear" else BinaryConv2d).from_float(
        float_layer, weight_estimator=estimator, input_estimator=input_estimator, scaling=scaling
    )
    return layer.train(), x


def _apply(layer, x, weight):
    return F.linear(x, weight, layer.bias) if isinstance(layer, nn.Linear) else layer._conv_forward(x, weight, layer.bias)


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("name", PER_TENSOR)
@pytest.mark.parametrize("progress", [0.0, 0.5, 1.0])
def test_weight_gradient_is_the_estimator_rule(kind: str, name: str, progress: float) -> None:
    layer, x = _layer(kind, name, "none")
    set_progress(layer, progress)
    effective = layer.binary_weight()
    effective.retain_grad()
    output = _apply(layer, x, effective)
    if not layer.weight_estimator.stochastic:
        torch.testing.assert_close(layer(x), output, rtol=1e-12, atol=1e-12)
    output.backward(torch.randn_like(output))
    expected = layer.weight_estimator.backward(layer.weight.detach(), effective.grad)
    torch.testing.assert_close(layer.weight.grad, expected, rtol=1e-12, atol=1e-12)
    assert layer.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("name", PER_TENSOR)
def test_input_gradient_is_the_estimator_rule(kind: str, name: str) -> None:
    layer, x = _layer(kind, "ste", "channel_mean", input_estimator=name)
    set_progress(layer, 0.5)
    x = x.requires_grad_(True)
    binary_input = layer.binarize_input(x)
    binary_input.retain_grad()
    output = _apply(layer, binary_input, layer.binary_weight())
    output.backward(torch.randn_like(output))
    expected = layer.input_estimator.backward(x.detach(), binary_input.grad)
    torch.testing.assert_close(x.grad, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_reste_tensor_mean_scaling_adds_its_gradient_term(kind: str) -> None:
    """W_eff = sign(W)·α with α = mean|W| not detached: dL/dW = α·φ(W)·G + sign(W)/N·Σ G·sign(W)."""
    layer, x = _layer(kind, "reste", "tensor_mean")
    set_progress(layer, 0.5)
    effective = layer.binary_weight()
    effective.retain_grad()
    output = _apply(layer, x, effective)
    output.backward(torch.randn_like(output))
    weight, grad = layer.weight.detach(), effective.grad
    signs = layer.weight_estimator.forward_value(weight)
    alpha = weight.abs().mean()
    expected = alpha * layer.weight_estimator.derivative(weight) * grad + torch.sign(weight) / weight.numel() * (grad * signs).sum()
    torch.testing.assert_close(layer.weight.grad, expected, rtol=1e-12, atol=1e-12)
