"""CIFAR ResNets (He et al. 2016, section 4.2): ResNet-(6n+2) of any width; ResNet-20s and
ResNet-56s are the published ones (width 16).

Three stages of W/2W/4W channels (16/32/64 published) of n blocks each, option-A shortcuts
(stride-2 subsampling plus zero channel padding, so no shortcut parameters), Kaiming-normal
conv and linear weights. Parameter names match the published PrAC-LTH models at every depth.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from models.normalize import NormalizeByChannelMeanStd


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: take every second pixel and pad the new channels with zeros."""

    def __init__(self, extra_channels: int):
        super().__init__()
        self.extra_channels = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.extra_channels // 2
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, half, self.extra_channels - half))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        changes_shape = stride != 1 or in_planes != planes
        self.shortcut: nn.Module = ZeroPadShortcut(planes - in_planes) if changes_shape else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


PUBLISHED_WIDTH = 16


class CifarResNet(nn.Module):
    def __init__(self, blocks_per_stage: Sequence[int], num_classes: int,
                 mean: Sequence[float], std: Sequence[float], width: int = PUBLISHED_WIDTH):
        super().__init__()
        self.normalize = NormalizeByChannelMeanStd(mean, std)
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        in_planes, stages = width, []
        for planes, blocks, stride in zip((width, 2 * width, 4 * width), blocks_per_stage, (1, 2, 2)):
            first = BasicBlock(in_planes, planes, stride)  # the stage's only block that may change the shape
            stages.append(nn.Sequential(first, *[BasicBlock(planes, planes) for _ in range(blocks - 1)]))
            in_planes = planes
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(4 * width, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(self.normalize(x))))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def cifar_resnet(depth: int, width: int, num_classes: int, mean: Sequence[float], std: Sequence[float]) -> CifarResNet:
    """ResNet-``depth`` (depth = 6n + 2: n blocks per stage) with ``width`` channels in the first stage."""
    blocks = (depth - 2) // 6
    return CifarResNet((blocks, blocks, blocks), num_classes, mean, std, width)


def resnet20s(num_classes: int, mean: Sequence[float], std: Sequence[float]) -> CifarResNet:
    return cifar_resnet(20, PUBLISHED_WIDTH, num_classes, mean, std)


def resnet56s(num_classes: int, mean: Sequence[float], std: Sequence[float]) -> CifarResNet:
    return cifar_resnet(56, PUBLISHED_WIDTH, num_classes, mean, std)


# open_lth's names: cifar_resnet_<depth>_<width> (cifar_resnet_20_16 is res20s)
CIFAR_RESNET_FORM = "cifar_resnet_D_W (depth D = 6n+2: 8, 14, 20, 26, ...; width W >= 1, e.g. cifar_resnet_20_16)"
_PREFIX = "cifar_resnet_"


def parse_cifar_resnet(name: str) -> Optional[Tuple[int, int]]:
    """(depth, width) of a valid ``cifar_resnet_D_W`` name, else None."""
    parts = name[len(_PREFIX):].split("_") if name.startswith(_PREFIX) else []
    if len(parts) != 2 or not all(part.isdigit() for part in parts):
        return None
    depth, width = int(parts[0]), int(parts[1])
    return (depth, width) if depth >= 8 and (depth - 2) % 6 == 0 and width >= 1 else None
