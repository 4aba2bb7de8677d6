"""Binary layers: construction from float layers, forward values and gradients."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from binarize.estimators import create
from binarize.functional import sign
from binarize.nn import BinaryConv1d, BinaryConv2d, BinaryLinear
from binarize.progress import set_progress

CONV_SETTINGS = [
    dict(stride=1, padding=1, dilation=1, groups=1, bias=True, padding_mode="zeros"),
    dict(stride=2, padding=2, dilation=2, groups=2, bias=False, padding_mode="reflect"),
    dict(stride=(1, 2), padding="same", dilation=1, groups=1, bias=True, padding_mode="circular"),
    dict(stride=1, padding=0, dilation=1, groups=4, bias=True, padding_mode="replicate"),
]


@pytest.mark.parametrize("settings", CONV_SETTINGS)
def test_conv2d_round_trip_preserves_hyperparameters_and_weights(settings):
    if settings["padding"] == "same" and settings["stride"] != 1:
        settings = dict(settings, stride=1)
    float_conv = nn.Conv2d(4, 8, 3, **settings).to(torch.float64)
    binary = BinaryConv2d.from_float(float_conv, weight_estimator="ste", input_estimator="ste")
    assert binary.weight.dtype == torch.float64
    back = binary.to_float()
    assert type(back) is nn.Conv2d
    for name in ("stride", "padding", "dilation", "groups", "padding_mode", "kernel_size"):
        assert getattr(back, name) == getattr(float_conv, name) == getattr(binary, name)
    assert torch.equal(back.weight, float_conv.weight)
    assert (back.bias is None) == (float_conv.bias is None)
    binary.weight.data.add_(1.0)
    assert not torch.equal(binary.weight, float_conv.weight), "from_float must copy, not share"


@pytest.mark.parametrize("settings", CONV_SETTINGS)
def test_conv2d_forward_is_conv_of_signs_times_channel_scale(settings):
    if settings["padding"] == "same" and settings["stride"] != 1:
        settings = dict(settings, stride=1)
    float_conv = nn.Conv2d(4, 8, 3, **settings)
    binary = BinaryConv2d.from_float(float_conv)
    x = torch.randn(2, 4, 9, 9)
    alpha = float_conv.weight.abs().mean(dim=(1, 2, 3), keepdim=True)
    reference = nn.Conv2d(4, 8, 3, **settings)
    reference.weight.data = sign(float_conv.weight) * alpha
    if float_conv.bias is not None:
        reference.bias.data = float_conv.bias.data.clone()
    torch.testing.assert_close(binary(x), reference(sign(x)))


def test_linear_ste_gradients_are_identity_through_sign():
    layer = BinaryLinear.from_float(nn.Linear(5, 3), scaling="none")
    x = torch.randn(4, 5, requires_grad=True)
    g = torch.randn(4, 3)
    layer(x).backward(g)
    torch.testing.assert_close(layer.weight.grad, g.T @ sign(x.detach()))
    torch.testing.assert_close(x.grad, g @ sign(layer.weight.detach()))


def test_clipped_ste_cancels_gradient_outside_unit_interval_inclusive():
    layer = BinaryLinear.from_float(nn.Linear(3, 1, bias=False), weight_estimator="clipped_ste", input_estimator=None, scaling="none")
    layer.weight.data = torch.tensor([[-1.5, 1.0, 0.3]])
    layer(torch.ones(1, 3)).sum().backward()
    assert layer.weight.grad.tolist() == [[0.0, 1.0, 1.0]]


def test_float_inputs_when_input_estimator_is_none():
    layer = BinaryLinear.from_float(nn.Linear(3, 2), input_estimator=None, scaling="none")
    x = torch.tensor([[0.5, -2.0, 3.0]])
    torch.testing.assert_close(layer(x), F.linear(x, sign(layer.weight), layer.bias))


def test_conv1d_and_learned_scaling():
    float_conv = nn.Conv1d(3, 6, 5, padding=2)
    binary = BinaryConv1d.from_float(float_conv, scaling="learned")
    alpha = binary.scaling.alpha
    torch.testing.assert_close(alpha.detach(), float_conv.weight.abs().mean(dim=(1, 2), keepdim=True))
    binary(torch.randn(2, 3, 11)).sum().backward()
    assert alpha.grad is not None and alpha.grad.abs().sum() > 0


def test_frozen_weight_matches_eval_forward():
    binary = BinaryConv2d.from_float(nn.Conv2d(3, 4, 3, padding=1))
    signs, alpha = binary.frozen_weight()
    assert set(signs.unique().tolist()) <= {-1.0, 1.0}
    assert alpha.shape == (4, 1, 1, 1)
    x = torch.randn(1, 3, 6, 6)
    torch.testing.assert_close(binary.eval()(x), F.conv2d(sign(x), signs * alpha, binary.bias, padding=1))


def test_repr_shows_estimators_and_scaling():
    text = repr(BinaryConv2d.from_float(nn.Conv2d(3, 4, 3), weight_estimator="clipped_ste"))
    assert "ClippedSTE" in text and "ChannelMeanScaling" in text


def test_set_progress_rejects_out_of_range():
    from binarize.errors import ConfigError

    with pytest.raises(ConfigError, match="outside"):
        set_progress(nn.Sequential(), 1.5)


def test_create_reports_unknown_estimator_with_suggestion():
    from binarize.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'clipped_ste'"):
        create("clipped_st")


def test_scale_multiplies_exact_integer_accumulators():
    """α scales the output, not the weights: sums of ±1·±1 stay exact integers (as deployed)."""
    layer = BinaryConv2d.from_float(nn.Conv2d(64, 8, 3, padding=1)).eval()
    x = torch.randn(2, 64, 7, 7)
    signs, alpha = layer.frozen_weight()
    accumulators = F.conv2d(sign(x), signs, padding=1)
    expected = accumulators * alpha.reshape(1, -1, 1, 1) + layer.bias.reshape(1, -1, 1, 1)
    assert torch.equal(layer(x), expected)


def test_converted_mobilenet_equals_its_frozen_copy():
    """Regression: scaling the weights before the conv made rounding flip downstream signs
    (logits of a random MobileNetV2 differed from the frozen model by 0.056)."""
    import torchvision

    import binarize

    torch.manual_seed(0)
    model = binarize.convert(torchvision.models.mobilenet_v2()).eval()
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(binarize.freeze(model)(x), model(x), rtol=1e-5, atol=1e-5)
