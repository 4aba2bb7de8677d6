"""A small binary model (built in memory) and its packed file, shared by the packed tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from binarize.nn import BinaryConv2d, BinaryLinear
from binarize.packed import save_packed


class SmallNet(nn.Module):
    """Float stem, two binary convs (K = 72 and 144: partial words) with BatchNorm, hardtanh and
    a residual add to fuse, a W1A32 binary linear with bias and a float head: every kind of node
    the format and fuzz tests should hit."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv1 = BinaryConv2d.from_float(nn.Conv2d(8, 16, 3, padding=1, bias=False))
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = BinaryConv2d.from_float(nn.Conv2d(16, 16, 3, stride=2, padding=1, bias=False))
        self.bn2 = nn.BatchNorm2d(16)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc1 = BinaryLinear.from_float(nn.Linear(64, 12), input_estimator=None)
        self.head = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn0(self.stem(x)))
        x = nn.functional.hardtanh(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x)) + x[:, :, ::2, ::2]
        return self.head(torch.relu(self.fc1(torch.flatten(self.pool(x), 1))))


def with_trained_statistics(model: nn.Module) -> nn.Module:
    """``model`` with every BatchNorm's running statistics drawn away from their initial mean 0,
    variance 1 (torch's global generator), as a trained model's are.

    With the initial statistics every BatchNorm is an identity (its folding goes untested), and
    one in front of a binary layer puts sign's threshold exactly at 0, where an untrained model's
    float parts produce exact ties: DenseNet's transition (binary 1×1 conv, then a 2×2 average
    pool) sums α·(2 + 4 − 2 − 4), which float32 rounds to 0 or −6e-8 by summation order. PyTorch,
    onnxruntime and OpenVINO each add in their own order, signs flip and the logits differ (0.22
    on a small DenseNet) with no engine at fault."""
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) and module.running_mean is not None:
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture
def trained_statistics() -> Callable[[nn.Module], nn.Module]:
    """`with_trained_statistics`, for the test modules (conftest is not importable by name)."""
    return with_trained_statistics


def make_small_net() -> nn.Module:
    torch.manual_seed(0)
    return with_trained_statistics(SmallNet()).eval()


@pytest.fixture
def small_net() -> nn.Module:
    """A fresh copy of the model ``small_bnz`` was written from (same seed, same weights)."""
    return make_small_net()


@pytest.fixture(scope="session")
def small_bnz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("packed") / "small.bnz"
    return save_packed(make_small_net(), path, (torch.randn(2, 3, 8, 8),))
