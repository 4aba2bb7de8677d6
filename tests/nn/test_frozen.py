"""freeze: frozen layers equal the trained model in eval mode, with standard ops only."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from binarize import convert, estimators
from binarize.functional import sign
from binarize.nn import BinaryConv1d, BinaryConv2d, BinaryLayer, BinaryLinear
from binarize.nn.frozen import (
    FrozenBinaryConv1d,
    FrozenBinaryConv2d,
    FrozenBinaryLinear,
    freeze,
    frozen_layers,
)
from binarize.functional import sign
from binarize.nn import BinaryConv1d, BinaryConv2d, BinaryLayer, BinaryLinear
from binarize import provenance_of

CONV_SETTINGS = [
    dict(stride=1, padding=1, dilation=1, groups=1, bias=True, padding_mode="zeros"),
    dict(stride=2, padding=2, dilation=2, groups=2, bias=False, padding_mode="reflect"),
    dict(stride=1, padding="same", dilation=1, groups=1, bias=True, padding_mode="circular"),
    dict(stride=1, padding=0, dilation=1, groups=4, bias=True, padding_mode="replicate"),
]


def test_frozen_sign_maps_zero_to_plus_one():
    x = torch.tensor([-2.0, -1e-7, 0.0, -0.0, 1e-7, 3.0])
    assert sign(x).tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("settings", CONV_SETTINGS)
@pytest.mark.parametrize("scaling", ["channel_mean", "none", "tensor_mean", "learned"])
def test_frozen_conv2d_equals_binary_conv2d_in_eval(settings, scaling):
    binary = BinaryConv2d.from_float(nn.Conv2d(4, 8, 3, **settings), scaling=scaling)
    if scaling == "learned":
        binary.scaling.alpha.data.uniform_(0.5, 2.0)  # a trained α differs from its init
    frozen = freeze(binary)
    assert type(frozen) is FrozenBinaryConv2d
    x = torch.randn(2, 4, 9, 9)
    x[0, 0, :3, :3] = 0.0  # sign(0) = +1 must hold in both
    torch.testing.assert_close(frozen(x), binary.eval()(x), rtol=1e-5, atol=1e-5)
    for name in ("stride", "padding", "dilation", "groups", "padding_mode", "kernel_size"):
        assert getattr(frozen.geometry, name) == getattr(binary, name)
    assert frozen.alpha.shape == (8,)
    assert set(frozen.signs.unique().tolist()) <= {-1.0, 1.0}


def test_alpha_before_bias_equals_conv_with_scaled_signs():
    conv = nn.Conv2d(3, 5, 3, padding=1)
    frozen = freeze(BinaryConv2d.from_float(conv))
    x = torch.randn(2, 3, 6, 6)
    alpha = conv.weight.abs().mean(dim=(1, 2, 3), keepdim=True)
    expected = F.conv2d(torch.where(x >= 0, 1.0, -1.0), torch.where(conv.weight >= 0, 1.0, -1.0) * alpha, conv.bias, padding=1)
    torch.testing.assert_close(frozen(x), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(frozen.effective_weight(), torch.where(conv.weight >= 0, 1.0, -1.0) * alpha)


def test_float_activations_stay_float():
    binary = BinaryLinear.from_float(nn.Linear(6, 4), input_estimator=None)
    frozen = freeze(binary)
    assert type(frozen) is FrozenBinaryLinear and not frozen.binary_input
    x = torch.randn(3, 2, 6)
    expected = F.linear(x, torch.where(binary.weight >= 0, 1.0, -1.0)) * binary.weight.abs().mean(1) + binary.bias
    torch.testing.assert_close(frozen(x), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(frozen(x), binary.eval()(x), rtol=1e-5, atol=1e-6)


def test_conv1d_freezes():
    binary = BinaryConv1d.from_float(nn.Conv1d(4, 6, 5, padding=2, stride=2))
    frozen = freeze(binary)
    assert type(frozen) is FrozenBinaryConv1d and frozen.binary_input
    x = torch.randn(2, 4, 17)
    torch.testing.assert_close(frozen(x), binary.eval()(x), rtol=1e-5, atol=1e-5)


def test_freeze_copies_and_keeps_the_model_unchanged():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), BinaryConv2d.from_float(nn.Conv2d(8, 8, 3)), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(1, 3, 8, 8))
    model.train()
    weight_before = model[2].weight.detach().clone()
    frozen = freeze(model)
    assert model.training and isinstance(model[2], BinaryLayer)
    assert not frozen.training and isinstance(frozen[2], FrozenBinaryConv2d)
    assert list(frozen_layers(frozen)) == ["2"]
    frozen[2].signs.neg_()  # the frozen tensors are copies: the model's weights stay put
    assert torch.equal(model[2].weight, weight_before)


def test_frozen_converted_resnet_matches_and_has_no_estimators():
    import torchvision

    model = torchvision.models.resnet18(num_classes=10).eval()
    binary = convert(model, example_inputs=(torch.randn(1, 3, 32, 32),)).eval()
    frozen = freeze(binary)
    assert len(frozen_layers(frozen)) == sum(isinstance(m, BinaryLayer) for m in binary.modules()) > 10
    assert not any(isinstance(m, BinaryLayer) for m in frozen.modules())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), binary(x), rtol=1e-4, atol=1e-4)
    assert provenance_of(frozen).source == provenance_of(binary).source


@pytest.mark.parametrize("name", estimators.names())
def test_every_estimator_freezes_to_its_deterministic_eval_function(name):
    binary = BinaryConv2d.from_float(nn.Conv2d(4, 8, 3, padding=1), weight_estimator=name, input_estimator=name)
    binary.train()  # stochastic estimators sample here; freeze must not
    frozen = freeze(binary)
    x = torch.randn(3, 4, 7, 7)
    first, second = frozen(x), frozen(x)
    assert torch.equal(first, second)
    torch.testing.assert_close(first, binary.eval()(x), rtol=1e-5, atol=1e-5)


def test_weight_transform_is_applied_before_signs_and_scale():
    binary = BinaryConv2d.from_float(nn.Conv2d(4, 8, 3), weight_transform="libra_pb")
    frozen = freeze(binary)
    latent = binary.weight_transform(binary.weight).detach()
    assert torch.equal(frozen.signs, torch.where(latent >= 0, 1.0, -1.0))
    torch.testing.assert_close(frozen.alpha, latent.abs().mean(dim=(1, 2, 3)))
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(frozen(x), binary.eval()(x), rtol=1e-5, atol=1e-5)
