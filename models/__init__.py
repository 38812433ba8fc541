"""Model zoo: ``build_model(arch, num_classes)`` for every ``--arch`` name."""
from typing import Callable, Dict, Optional, Sequence

from torch import nn

from models.resnet import resnet18, resnet50
from models.resnets import resnet20s, resnet56s
from models.vgg import vgg16_bn

# CIFAR-10 statistics are the default, as in the published models; the scripts pass the
# statistics of the data set they train on.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

ARCHITECTURES: Dict[str, Callable[..., nn.Module]] = {
    "res20s": resnet20s,
    "res56s": resnet56s,
    "res18": resnet18,
    "res50": resnet50,
    "vgg16_bn": vgg16_bn,
}


def build_model(arch: str, num_classes: int, mean: Optional[Sequence[float]] = None,
                std: Optional[Sequence[float]] = None) -> nn.Module:
    """Builds ``arch`` with a ``normalize`` first layer holding ``mean`` / ``std``.

    Raises:
        ValueError: for an unknown architecture name.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch](num_classes,
                               CIFAR10_MEAN if mean is None else mean,
                               CIFAR10_STD if std is None else std)
