"""torchvision models whose binary layers read ReLU outputs train by default (bypass policy)."""

import math

import pytest
import torch
import torchvision
from torch.nn import functional as F

import binarize
from binarize.nn import BinaryLayer
from binarize import provenance_of


@pytest.mark.parametrize(
    ("name", "batch", "size"),
    [
        ("resnet18", 4, 32),
        ("densenet121", 4, 32),
        # 32 values per channel in the last stage's BatchNorms: over 4 (32x32 input, 1x1 maps)
        # a binary grouped conv's discrete outputs coincide in some channels, whose BatchNorm
        # backward then divides by √eps, compounded over 22 blocks (the float model is at 1e5)
        ("regnet_x_400mf", 8, 64),
        ("vgg11_bn", 4, 32),
    ],
)
def test_default_conversion_trains_three_steps_with_finite_loss(name, batch, size):
    torch.manual_seed(0)
    # batch >= 4: at 1x1 spatial size a train-mode BatchNorm over 2 values has a zero Jacobian
    x, target = torch.randn(batch, 3, size, size), torch.randint(1000, (batch,))
    binary = binarize.convert(torchvision.models.get_model(name, weights=None), example_inputs=(x,))
    report = provenance_of(binary).report
    assert report.activation_rewrites, "every one of these feeds binary layers from ReLUs"
    assert all(0.0 < p < 1.0 for p in report.input_signs.values()), "no binary layer sees one sign"
    cut_off = binarize.BinarizeConfig().min_informative_fraction
    assert min(min(p, 1.0 - p) for p in report.input_signs.values()) >= cut_off, "none nearly one-signed either"
    layers = [m for m in binary.modules() if isinstance(m, BinaryLayer)]
    optimizer = torch.optim.SGD(binary.parameters(), lr=0.01, momentum=0.9)
    binary.train()
    for module in binary.modules():
        if isinstance(module, torch.nn.Dropout):
            module.eval()
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        loss = F.cross_entropy(binary(x), target)
        loss.backward()
        losses.append(float(loss))
        assert all(m.weight.grad.isfinite().all() and m.weight.grad.ne(0).any() for m in layers)
        optimizer.step()
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
