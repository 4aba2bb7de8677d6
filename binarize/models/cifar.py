"""CIFAR architectures of the BNN papers (IR-Net, ReSTE, AdaSTE all use these).

Following IR-Net's official 1w1a code (github.com/htqin/IR-Net, ``resnet.py``/``vgg.py``), which
ReSTE and AdaSTE reuse: residual blocks put a shortcut around *each* 3×3 convolution
(Bi-Real style) and use hardtanh, and VGG-small uses hardtanh after each batch norm.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from binarize.models.registry import register


class PadShortcut(nn.Module):
    """ResNet "option A" shortcut (ResNet-20): subsample by 2 and zero-pad the new channels."""

    def __init__(self, extra_channels: int) -> None:
        super().__init__()
        self.extra = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.extra // 2
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, half, self.extra - half))


class BasicBlock(nn.Module):
    """``h = hardtanh(bn1(conv1(x)) + shortcut(x)); out = hardtanh(bn2(conv2(h)) + h)``."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            if shortcut == "pad":
                self.shortcut = PadShortcut(planes - in_planes)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.hardtanh(self.bn1(self.conv1(x)) + self.shortcut(x))
        return F.hardtanh(self.bn2(self.conv2(h)) + h)


class CifarResNet(nn.Module):
    """3×3 stem (no max-pool), stages of `BasicBlock`, global average pool, linear."""

    input_shape = (1, 3, 32, 32)

    def __init__(self, widths: list[int], blocks: list[int], shortcut: str, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers, in_planes = [], widths[0]
        for index, (planes, count) in enumerate(zip(widths, blocks)):
            stage = []
            for block in range(count):
                stride = 2 if index > 0 and block == 0 else 1
                stage.append(BasicBlock(in_planes, planes, stride, shortcut))
                in_planes = planes
            layers.append(nn.Sequential(*stage))
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(in_planes, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.hardtanh(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@register("resnet20")
def resnet20(num_classes: int = 10) -> nn.Module:
    """ResNet-20 for CIFAR (He et al. 2016; 16/32/64 channels, 3 blocks per stage, option-A
    shortcuts), 0.27 M parameters."""
    return CifarResNet([16, 32, 64], [3, 3, 3], "pad", num_classes)


@register("resnet18_cifar")
def resnet18_cifar(num_classes: int = 10) -> nn.Module:
    """ResNet-18, CIFAR variant (3×3 stem, no max-pool; 64..512 channels; 1×1 conv shortcuts)."""
    return CifarResNet([64, 128, 256, 512], [2, 2, 2, 2], "conv", num_classes)


class VGGSmall(nn.Module):
    """VGG-small (Zhang et al. 2018, LQ-Nets): 128C3-128C3-MP2-256C3-256C3-MP2-512C3-512C3-MP2-FC.

    As in IR-Net's code, the pool comes between conv and batch norm, then hardtanh."""

    input_shape = (1, 3, 32, 32)

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        plan = [(3, 128, False), (128, 128, True), (128, 256, False), (256, 256, True), (256, 512, False), (512, 512, True)]
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 3, padding=1, bias=False) for i, o, _ in plan)
        self.bns = nn.ModuleList(nn.BatchNorm2d(o) for _, o, _ in plan)
        self.pools = [pool for _, _, pool in plan]
        self.fc = nn.Linear(512 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, bn, pool in zip(self.convs, self.bns, self.pools):
            x = conv(x)
            if pool:
                x = F.max_pool2d(x, 2)
            x = F.hardtanh(bn(x))
        return self.fc(torch.flatten(x, 1))


@register("vgg_small")
def vgg_small(num_classes: int = 10) -> nn.Module:
    """VGG-small for CIFAR-10, 4.6 M parameters."""
    return VGGSmall(num_classes)
