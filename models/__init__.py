"""Model zoo: ``build_model(arch, num_classes)`` for every ``--arch`` name."""
from typing import Callable, Dict, Optional, Sequence

from torch import nn

from models.resnet import resnet18, resnet50
from models.resnets import CIFAR_RESNET_FORM, cifar_resnet, parse_cifar_resnet, resnet20s, resnet56s
from models.vgg import vgg16_bn

# CIFAR-10 statistics are the default, as in the published models; the scripts pass the
# statistics of the data set they train on.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

ARCHITECTURES: Dict[str, Callable[..., nn.Module]] = {
    "res20s": resnet20s, "res56s": resnet56s, "res18": resnet18, "res50": resnet50, "vgg16_bn": vgg16_bn}
ARCH_CHOICES = f"{', '.join(ARCHITECTURES)}, or {CIFAR_RESNET_FORM}"


def is_architecture(arch: str) -> bool:
    """Whether ``build_model`` builds ``arch``: a name above or a valid cifar_resnet_D_W."""
    return arch in ARCHITECTURES or parse_cifar_resnet(arch) is not None


def build_model(arch: str, num_classes: int, mean: Optional[Sequence[float]] = None,
                std: Optional[Sequence[float]] = None) -> nn.Module:
    """Builds ``arch`` (a name of ARCHITECTURES or open_lth's ``cifar_resnet_D_W``: a CIFAR ResNet
    of depth D = 6n+2 and first-stage width W; cifar_resnet_20_16 is res20s) with a ``normalize``
    first layer holding ``mean`` / ``std``; raises ValueError for an unknown architecture name."""
    mean = CIFAR10_MEAN if mean is None else mean
    std = CIFAR10_STD if std is None else std
    if arch in ARCHITECTURES:
        return ARCHITECTURES[arch](num_classes, mean, std)
    depth_width = parse_cifar_resnet(arch)
    if depth_width is None:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {ARCH_CHOICES}")
    return cifar_resnet(*depth_width, num_classes, mean, std)
