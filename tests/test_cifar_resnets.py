"""ResNet-(6n+2) of any depth and width as open_lth names them (cifar_resnet_D_W), built
from the published CIFAR ResNet code: sizes, names, pruning, saving, loading, resuming."""
import os
import shutil
from typing import List

import pytest
import torch
from torch import nn

import main_imp
import main_train
import pruner
from checkpoint import load_checkpoint
from cli import Config, validate
from models import build_model, is_architecture
from tests.conftest import tiny_args
from tests.helpers import published_cifar_resnet_keys
from utils import UserError


def expected_parameters(depth: int, width: int, classes: int) -> int:
    """Conv 3x3 weights, batch-norm scale and shift, and the linear layer, counted by hand."""
    blocks = (depth - 2) // 6
    count = 3 * 9 * width + 2 * width  # stem conv and its batch norm
    in_channels = width
    for stage in range(3):
        channels = width * 2 ** stage
        for _ in range(blocks):
            count += in_channels * channels * 9 + 2 * channels + channels * channels * 9 + 2 * channels
            in_channels = channels
    return count + 4 * width * classes + classes


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("depth, width", [(8, 16), (14, 8), (20, 16), (32, 4), (56, 16), (8, 64)])
def test_parameter_counts(depth: int, width: int) -> None:
    assert n_params(build_model(f"cifar_resnet_{depth}_{width}", 10)) == expected_parameters(depth, width, 10)


@pytest.mark.parametrize("published, depth", [("res20s", 20), ("res56s", 56)])
def test_published_models_are_depth_d_width_16_with_unchanged_names(published: str, depth: int) -> None:
    torch.manual_seed(0)
    ours = build_model(published, 10).state_dict()
    torch.manual_seed(0)
    general = build_model(f"cifar_resnet_{depth}_16", 10).state_dict()
    assert list(ours) == published_cifar_resnet_keys((depth - 2) // 6)  # names and order as published
    assert list(general) == list(ours)
    assert all(torch.equal(general[k], ours[k]) for k in ours)  # the same model, the same initialisation


def test_any_depth_has_the_published_layout_and_width_scales_channels() -> None:
    model = build_model("cifar_resnet_8_32", 7)
    assert list(model.state_dict()) == published_cifar_resnet_keys(1)
    assert model.conv1.weight.shape == (32, 3, 3, 3)
    assert model.layer3[0].conv2.weight.shape == (128, 128, 3, 3)
    assert model.fc.weight.shape == (7, 128)
    with torch.no_grad():
        assert model.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize("name", ["cifar_resnet_21_16", "cifar_resnet_2_16", "cifar_resnet_20",
                                  "cifar_resnet_20_0", "cifar_resnet_20_16_1", "cifar_resnet_a_16", "resnet20"])
def test_bad_names_are_one_line_naming_the_form(name: str) -> None:
    assert not is_architecture(name)
    with pytest.raises(ValueError, match="cifar_resnet_D_W"):
        build_model(name, 10)
    with pytest.raises(UserError) as error:
        validate(Config(save_dir="x", arch=name))
    text = str(error.value)
    assert "\n" not in text and "6n+2" in text and "res20s" in text and name in text


def test_prunes_like_the_published_models() -> None:
    torch.manual_seed(1)
    model = build_model("cifar_resnet_14_8", 10)
    for _ in range(2):
        pruner.global_magnitude_prune(model, 0.2)
    assert pruner.remaining_weights(model) == pytest.approx(64.0, abs=0.01)
    mask = pruner.extract_mask(model.state_dict())
    fresh = build_model("cifar_resnet_14_8", 10)
    pruner.apply_mask(fresh, mask)
    fresh.load_state_dict(model.state_dict())
    with pytest.raises(UserError, match="does not fit"):  # another depth is another architecture
        pruner.check_mask(build_model("cifar_resnet_20_8", 10), mask)


def mask_counts(path: str) -> List[int]:
    return [int(v.sum()) for v in pruner.extract_mask(load_checkpoint(path)["state_dict"]).values()]


def test_a_run_trains_prunes_resumes_and_retrains(cifar10_dir: str, tmp_path) -> None:
    save_dir = str(tmp_path / "imp")
    argv = tiny_args(cifar10_dir, save_dir, "--arch", "cifar_resnet_8_16", "--epochs", "1", "--pruning_times", "2",
                     "--rewind_epoch", "0")
    main_imp.main(argv)
    ticket = os.path.join(save_dir, "final_ticket.pth.tar")
    assert load_checkpoint(ticket)["remaining_weights"] == pytest.approx(64.0, abs=0.01)
    # resumed from the start of round 1, the run ends with the same ticket
    copy = str(tmp_path / "resumed")
    shutil.copytree(save_dir, copy)
    os.remove(os.path.join(copy, "final_ticket.pth.tar"))
    main_imp.main(argv[:argv.index("--save_dir") + 1] + [copy] + argv[argv.index("--save_dir") + 2:]
                  + ["--resume", "--checkpoint", os.path.join(copy, "1checkpoint.pth.tar")])
    resumed = load_checkpoint(os.path.join(copy, "final_ticket.pth.tar"))["state_dict"]
    original = load_checkpoint(ticket)["state_dict"]
    assert list(resumed) == list(original) and all(torch.equal(resumed[k], original[k]) for k in original)
    # main_train.py loads and retrains it
    retrain_dir = str(tmp_path / "retrain")
    main_train.main(tiny_args(cifar10_dir, retrain_dir, "--arch", "cifar_resnet_8_16", "--epochs", "1",
                              "--init_dir", ticket, "--mask_dir", ticket))
    assert mask_counts(os.path.join(retrain_dir, "checkpoint.pth.tar")) == mask_counts(ticket)
    with pytest.raises(UserError, match="does not fit this architecture"):
        main_train.main(tiny_args(cifar10_dir, str(tmp_path / "wrong"), "--epochs", "1",
                                  "--init_dir", ticket, "--mask_dir", ticket))  # res20s
