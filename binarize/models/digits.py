"""``digits_cnn``: the small network of the offline demo (1×8×8 digits, 10 classes)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from binarize.models.registry import register


class ResidualConv(nn.Module):
    """``hardtanh(bn(conv3x3(x)) + x)``: the Bi-Real block, whose shortcut keeps the float
    information that a binary convolution loses, and whose hardtanh matches sign's clip range."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.hardtanh(self.bn(self.conv(x)) + x)


class DigitsCNN(nn.Module):
    """Stem conv (float when binarized: first layer) → two residual 3×3 blocks with 2×2 average
    pooling → linear classifier (float: last layer). ``width`` stays small (32) so that the
    8×8 digits are not trivially saturated and estimators can be told apart."""

    input_shape = (1, 1, 8, 8)

    def __init__(self, width: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(width)
        self.block1 = ResidualConv(width)
        self.block2 = ResidualConv(width)
        self.fc = nn.Linear(width * 2 * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.hardtanh(self.stem_bn(self.stem(x)))
        x = F.avg_pool2d(self.block1(x), 2)
        x = F.avg_pool2d(self.block2(x), 2)
        return self.fc(torch.flatten(x, 1))


@register("digits_cnn")
def digits_cnn(width: int = 32, num_classes: int = 10) -> nn.Module:
    """The demo network for ``--data digits``."""
    return DigitsCNN(width=width, num_classes=num_classes)
