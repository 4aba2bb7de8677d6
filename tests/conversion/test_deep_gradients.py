"""A deep net whose binary layers read unnormalised sums keeps a bounded gradient by default.

MobileOne (timm's mobileone_s0, train-time form) sums several conv+BN branches and an identity
BatchNorm before each ReLU, so the binary layers (after the bypass rewrite) read a sum with a
standard deviation of about √branches. The sign's backward through plain ``ste`` (φ = 1) ignores
that scale where the float convolution divides by it, so every block multiplied the gradient by
the sum's spread: 1e8 at the stem of mobileone_s0 and deep torchvision ResNets (resnet101) at
initialisation, NaN after one SGD step. ``clipped_ste`` on the inputs (φ = 1{|x| ≤ 1}) keeps it
near the float model's.
"""

import torch
from torch import nn
from torch.nn import functional as F

import binarize


class Branches(nn.Module):
    """A MobileOne block: 1x1 conv+BN branches and an identity BatchNorm, summed, then ReLU."""

    def __init__(self, channels: int, branches: int = 4) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels))
            for _ in range(branches)
        )
        self.identity = nn.BatchNorm2d(channels)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(sum((branch(x) for branch in self.branches), self.identity(x)))


def test_default_conversion_of_summed_branches_keeps_the_gradient_bounded():
    torch.manual_seed(0)
    channels = 32
    model = nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1),
        *(Branches(channels) for _ in range(24)),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, 10),
    )
    x, target = torch.randn(8, 3, 8, 8), torch.randint(10, (8,))
    binary = binarize.convert(model, example_inputs=(x,)).train()
    optimizer = torch.optim.SGD(binary.parameters(), lr=0.01, momentum=0.9)
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(binary(x), target).backward()
        largest = max(p.grad.abs().max().item() for p in binary.parameters())
        # plain ste on the inputs: 3e5 at the first step here, then 9e18, then NaN
        assert largest < 100.0
        optimizer.step()
