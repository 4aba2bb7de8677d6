"""Summary figures against the Bi-Real Net ResNet-18 reference."""

import pytest
import torch

import binarize
from binarize import BinarizeConfig, LayerConfig


def test_resnet18_bireal_policy_reference_figures():
    # the Bi-Real policy has no learned input thresholds (they would add layer1.0.conv1's 64 τ)
    config = BinarizeConfig(keep_downsample=True, min_informative_fraction=0.0)
    model = binarize.convert(binarize.load_model("torchvision:resnet18"), config)
    summary = binarize.summarize(model, (torch.randn(1, 3, 224, 224),))
    assert summary.params == 11_689_512
    assert summary.bops / 1e9 == pytest.approx(1.676, abs=5e-4)
    assert summary.flops / 1e6 == pytest.approx(137.8, abs=0.05)
    assert summary.ops / 1e6 == pytest.approx(164.0, abs=0.05)
    assert summary.float_bits / 1e6 == pytest.approx(374.1, abs=0.05)
    assert summary.binarized_bits / 1e6 == pytest.approx(33.5, abs=0.05)
    conv1 = next(layer for layer in summary.layers if layer.fqn == "conv1")
    assert conv1.flops == 118_013_952 and conv1.bops == 0


def test_float_activations_count_as_flops():
    layer = LayerConfig(input_estimator=None)
    model = binarize.convert(binarize.load_model("torchvision:resnet18"), BinarizeConfig(layer=layer))
    summary = binarize.summarize(model, (torch.randn(1, 3, 64, 64),))
    assert summary.bops == 0 and summary.binary_params > 0
