"""The zoo: every model builds, runs, has the papers' parameter counts and converts."""

from __future__ import annotations

import pytest
import torch

from binarize import convert, load_model, models
from binarize.errors import ConfigError
from binarize.nn.layers import BinaryLayer

# name → (parameters, binary layers after the default conversion)
EXPECTED = {
    "digits_cnn": (20_202, 2),
    "resnet20": (269_722, 18),  # 19 convs; the stem stays float
    "resnet18_cifar": (11_173_962, 19),  # 16 3×3 + 3 downsample 1×1 convs; stem and fc float
    "vgg_small": (4_660_106, 5),
    "mnist1d_cnn": (28_490, 2),  # conv2, conv3 (Conv1d); conv1 and fc float
}


def test_names() -> None:
    assert models.names() == list(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_model_builds_converts_and_runs(name: str) -> None:
    torch.manual_seed(0)
    model = load_model(f"binarize:{name}").eval()
    parameters, binary_layers = EXPECTED[name]
    assert sum(p.numel() for p in model.parameters()) == parameters
    x = torch.randn(2, *model.input_shape[1:])
    assert model(x).shape == (2, 10)
    binary = convert(model).eval()
    found = [n for n, m in binary.named_modules() if isinstance(m, BinaryLayer)]
    assert len(found) == binary_layers
    assert binary(x).shape == (2, 10)


def test_num_classes_and_bad_arguments() -> None:
    assert models.create("resnet20", num_classes=100)(torch.randn(1, 3, 32, 32)).shape == (1, 100)
    with pytest.raises(ConfigError, match="does not accept"):
        models.create("resnet20", depth=56)
    with pytest.raises(ConfigError, match="did you mean 'resnet20'"):
        models.create("resnet21")
