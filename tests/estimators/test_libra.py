"""Libra-PB (transform + power-of-two scale) and IR-Net's defaults in conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import reference_numpy as ref
from binarize import BinarizeConfig, LayerConfig, convert
from binarize.nn import BinaryConv2d, create_scaling, create_transform
from binarize import provenance_of

W = torch.tensor([[0.30, -0.10, 0.05, 0.20], [-0.02, 0.01, 0.04, -0.03]], dtype=torch.float64).reshape(2, 1, 2, 2)


def test_libra_pb_worked_example() -> None:
    standard = create_transform("libra_pb")(W)
    expected = [[1.071429, -1.214286, -0.357143, 0.5], [-0.632456, 0.316228, 1.264911, -0.948683]]
    np.testing.assert_allclose(standard.reshape(2, 4).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(standard.abs().mean(dim=(1, 2, 3)).numpy(), [0.785714, 0.790569], rtol=1e-6)
    scale = create_scaling("power_of_two", standard)(standard)
    assert scale.flatten().tolist() == [1.0, 1.0]
    reference, reference_scale = ref.libra_pb(W.numpy())
    np.testing.assert_allclose(standard.numpy(), reference, rtol=1e-12)
    np.testing.assert_array_equal(scale.flatten().numpy(), reference_scale)


def test_libra_pb_layer_quantizes_to_signs_times_power_of_two() -> None:
    conv = nn.Conv2d(1, 2, 2, bias=False).double()
    conv.weight.data.copy_(W * 8.0)  # scaling W leaves Ŵ, hence s, unchanged
    layer = BinaryConv2d.from_float(conv, weight_estimator="irnet", input_estimator=None,
                                    scaling="power_of_two", weight_transform="libra_pb")
    signs, alpha = layer.frozen_weight()
    assert signs.reshape(2, 4).tolist() == [[1, -1, -1, 1], [-1, 1, 1, -1]]
    assert alpha.flatten().tolist() == [1.0, 1.0]


def test_power_of_two_rounds_log2_of_the_channel_mean() -> None:
    weights = torch.tensor([[3.0, -3.0], [0.3, -0.3]], dtype=torch.float64)  # mean|W| 3 → 4, 0.3 → 0.25
    assert create_scaling("power_of_two", weights)(weights).flatten().tolist() == [4.0, 0.25]


def test_libra_pb_gradient_flows_through_mean_and_std() -> None:
    weight = W.clone().requires_grad_(True)
    torch.autograd.gradcheck(lambda w: create_transform("libra_pb")(w), (weight,))


def test_irnet_turns_libra_pb_on_unless_the_user_chose() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 4, 3))
    default = convert(model, BinarizeConfig(layer=LayerConfig(weight_estimator="irnet", input_estimator="irnet")))
    row = provenance_of(default).report.rows[1]
    assert (row.weight_transform, row.scaling) == ("libra_pb", "power_of_two")
    chosen = convert(model, BinarizeConfig(layer=LayerConfig(weight_estimator="irnet", weight_transform="none", scaling="channel_mean")))
    row = provenance_of(chosen).report.rows[1]
    assert (row.weight_transform, row.scaling) == ("none", "channel_mean")
    reste = convert(model, BinarizeConfig(layer=LayerConfig(weight_estimator="reste")))
    assert provenance_of(reste).report.rows[1].scaling == "tensor_mean"


def test_libra_pb_constant_channel_is_zeros_not_rounding_noise() -> None:
    """A constant channel has std 0: Ŵ is all zeros (signs +1). Subtracting a mean that is not
    exactly the constant (float32 rounding over 576 values) once blew it up to ±2.5e30."""
    weight = torch.full((2, 64, 3, 3), 0.3)
    torch.manual_seed(0)
    weight[1].normal_()
    latent = weight.clone().requires_grad_(True)
    standard = create_transform("libra_pb")(latent)
    assert torch.equal(standard[0], torch.zeros_like(standard[0]))
    assert standard[1].std(correction=1).item() == pytest.approx(1.0, rel=1e-5)
    standard.sum().backward()
    assert torch.isfinite(latent.grad).all()
