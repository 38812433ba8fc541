"""Models: sizes, output shapes, published parameter names, in-model normalisation."""
import pytest
import torch
from torch import nn

from models import build_model
from tests.helpers import published_cifar_resnet_keys

ARCHS = ["res20s", "res56s", "res18", "res50", "vgg16_bn"]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch, expected", [("res20s", 0.27e6), ("res56s", 0.85e6)])
def test_cifar_resnet_parameter_counts(arch: str, expected: float) -> None:
    count = n_params(build_model(arch, 10))
    assert abs(count - expected) / expected < 0.02, count


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("size", [32, 64])
def test_output_shape(arch: str, size: int) -> None:
    classes = 7
    model = build_model(arch, classes).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, size, size))
    assert out.shape == (2, classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch, blocks", [("res20s", 3), ("res56s", 9)])
def test_cifar_resnet_state_dict_names(arch: str, blocks: int) -> None:
    model = build_model(arch, 10)
    state = model.state_dict()
    assert set(state) == set(published_cifar_resnet_keys(blocks))
    # option-A shortcuts hold no parameters
    assert not any("shortcut" in k or "downsample" in k for k in state)
    assert state["conv1.weight"].shape == (16, 3, 3, 3)
    assert state["layer3.2.bn2.running_var"].shape == (64,)
    assert state["fc.weight"].shape == (10, 64)
    assert state["fc.bias"].shape == (10,)
    assert state["normalize.mean"].shape == (3,)
    assert state["normalize.std"].shape == (3,)


def test_res20s_checkpoint_round_trip() -> None:
    source = build_model("res20s", 10)
    target = build_model("res20s", 10)
    target.load_state_dict(source.state_dict(), strict=True)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(source.eval()(x), target.eval()(x))


def test_cifar_resnet_option_a_shortcut_is_parameter_free() -> None:
    # every parameter sits in a conv, bn or fc: 0.27M exactly as published (no 1x1 shortcut convs)
    model = build_model("res20s", 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19  # 1 stem + 9 blocks x 2
    assert all(m.kernel_size == (3, 3) and m.bias is None for m in convs)


@pytest.mark.parametrize("arch, tv_name", [("res18", "resnet18"), ("res50", "resnet50")])
def test_imagenet_resnet_names_match_torchvision(arch: str, tv_name: str) -> None:
    tv_models = pytest.importorskip("torchvision.models")
    ours = build_model(arch, 10).state_dict()
    reference = getattr(tv_models, tv_name)(weights=None, num_classes=10).state_dict()
    assert set(ours) == set(reference) | {"normalize.mean", "normalize.std"}
    for key, value in reference.items():
        assert ours[key].shape == value.shape, key


def test_res18_layout() -> None:
    state = build_model("res18", 10).state_dict()
    assert not any(k.startswith("layer1.0.downsample") for k in state)
    assert "layer2.0.downsample.0.weight" in state
    assert "layer2.0.downsample.1.running_mean" in state
    assert "fc.weight" in state and "fc.bias" in state
    # ImageNet stem: 7x7 stride-2 conv followed by a max-pool
    assert state["conv1.weight"].shape == (64, 3, 7, 7)
    model = build_model("res18", 10)
    assert model.conv1.stride == (2, 2)
    assert any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def test_vgg16_bn_layout() -> None:
    model = build_model("vgg16_bn", 10)
    state = model.state_dict()
    for key in ("normalize.mean", "normalize.std", "features.0.weight", "features.0.bias",
                "features.1.weight", "features.1.running_mean", "classifier.weight", "classifier.bias"):
        assert key in state, key
    assert state["classifier.weight"].shape == (10, 512)
    assert not any(k.startswith("classifier.") and k.count(".") > 1 for k in state)  # one linear layer
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13
    assert [m.out_channels for m in convs] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    pools = [i for i, m in enumerate(model.features) if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 4
    last_conv = max(i for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d))
    assert all(i < last_conv for i in pools), "no max-pool after the last conv block"


def test_vgg16_bn_names_match_torchvision_features() -> None:
    tv_models = pytest.importorskip("torchvision.models")
    ours = build_model("vgg16_bn", 10).state_dict()
    reference = tv_models.vgg16_bn(weights=None, num_classes=10).state_dict()
    features = {k: v for k, v in reference.items() if k.startswith("features.")}
    assert {k for k in ours if k.startswith("features.")} == set(features)
    for key, value in features.items():
        assert ours[key].shape == value.shape, key


@pytest.mark.parametrize("arch", ARCHS)
def test_normalize_is_first_submodule_with_buffers(arch: str) -> None:
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    model = build_model(arch, 10, mean=mean, std=std)
    first_name, first = next(iter(model.named_children()))
    assert first_name == "normalize"
    buffers = dict(model.normalize.named_buffers())
    assert set(buffers) == {"mean", "std"}
    assert torch.allclose(buffers["mean"], torch.tensor(mean))
    assert torch.allclose(buffers["std"], torch.tensor(std))
    assert not list(model.normalize.parameters())  # buffers, not trainable


def test_default_statistics_are_cifar10() -> None:
    model = build_model("res20s", 10)
    assert torch.allclose(model.normalize.mean, torch.tensor([0.4914, 0.4822, 0.4465]))
    assert torch.allclose(model.normalize.std, torch.tensor([0.2470, 0.2435, 0.2616]))


def test_normalize_computes_per_channel_standardisation() -> None:
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.4, 0.8)
    model = build_model("res20s", 10, mean=mean, std=std)
    x = torch.rand(4, 3, 5, 6)
    out = model.normalize(x)
    for c in range(3):
        assert torch.allclose(out[:, c], (x[:, c] - mean[c]) / std[c], atol=1e-6)


def test_normalize_is_applied_in_forward() -> None:
    # Two models with identical weights but different statistics must produce different outputs,
    # and feeding pre-normalised input to an identity-normalisation model must reproduce them.
    torch.manual_seed(0)
    a = build_model("res20s", 10, mean=(0.3, 0.4, 0.5), std=(0.2, 0.3, 0.4)).eval()
    b = build_model("res20s", 10, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)).eval()
    b.load_state_dict({k: v for k, v in a.state_dict().items() if not k.startswith("normalize.")}, strict=False)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out_a = a(x)
        out_b = b(x)
        mean, std = torch.tensor([0.3, 0.4, 0.5]), torch.tensor([0.2, 0.3, 0.4])
        x_norm = (x - mean[None, :, None, None]) / std[None, :, None, None]
        out_b_norm = b(x_norm)
    assert not torch.allclose(out_a, out_b)
    assert torch.allclose(out_a, out_b_norm, atol=1e-5)


def test_unknown_arch_raises_value_error() -> None:
    with pytest.raises(ValueError):
        build_model("res99", 10)
