"""VGG-16 with batch norm, configuration D without its final max-pool, global average
pool and one 512 -> classes linear layer (names: features.N, classifier)."""
from typing import List, Sequence, Union

import torch
from torch import nn

from models.normalize import NormalizeByChannelMeanStd

# Configuration D of Simonyan & Zisserman; "M" is a 2x2 max-pool. The fifth pool is dropped.
VGG16_LAYERS: List[Union[int, str]] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                       512, 512, 512, "M", 512, 512, 512]


class VGG(nn.Module):
    def __init__(self, layers: Sequence[Union[int, str]], num_classes: int,
                 mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.normalize = NormalizeByChannelMeanStd(mean, std)
        modules: List[nn.Module] = []
        in_channels = 3
        for layer in layers:
            if layer == "M":
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                modules += [nn.Conv2d(in_channels, int(layer), 3, padding=1),
                            nn.BatchNorm2d(int(layer)), nn.ReLU(inplace=True)]
                in_channels = int(layer)
        self.features = nn.Sequential(*modules)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(512, num_classes)
        for module in self.modules():  # BatchNorm keeps torch's initialisation: weight 1, bias 0
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(self.normalize(x)))
        return self.classifier(torch.flatten(x, 1))


def vgg16_bn(num_classes: int, mean: Sequence[float], std: Sequence[float]) -> VGG:
    return VGG(VGG16_LAYERS, num_classes, mean, std)
