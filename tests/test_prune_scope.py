"""Pruning scope (issue 17): conv or conv_linear, layers left dense, global or layer-wise;
the published default unchanged; the scope recorded in args.json and the checkpoint and a
resume with another scope refused."""
import json
import os
from typing import Dict, List, Optional, Tuple

import pytest
import torch
from torch import nn

import cli
import main_imp
import main_PrAC_imp
import pruner
from checkpoint import load_checkpoint
from cli import Config, resume_mismatches, run_identity
from models import build_model
from tests.conftest import tiny_args
from utils import UserError

RATE = 0.2


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("res20s", 10)


def weight_layers(model: nn.Module, kinds: Tuple[type, ...] = (nn.Conv2d,)) -> List[Tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, kinds)]


def kept(mask: Dict[str, torch.Tensor]) -> Dict[str, int]:
    return {key[:-len(pruner.MASK_SUFFIX)]: int(value.sum()) for key, value in mask.items()}


def old_global_conv_mask(model: nn.Module, rate: float,
                         generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
    """A copy of the pruner's global L1 conv rule as it was before scopes existed: all conv
    weights concatenated in module order, round(rate * unpruned) lowest (or random) removed."""
    layers = weight_layers(model)
    weights, masks = [], []
    for _, m in layers:
        mask = m.weight_mask.detach() if hasattr(m, "weight_mask") else torch.ones_like(m.weight)
        weight = m.weight_orig.detach() * mask if hasattr(m, "weight_mask") else m.weight.detach()
        weights.append(weight.flatten())
        masks.append(mask.flatten())
    weights_all, masks_all = torch.cat(weights), torch.cat(masks)
    alive = torch.nonzero(masks_all == 1).flatten()
    n_prune = round(rate * alive.numel())
    scores = (torch.rand(alive.numel(), generator=generator) if generator is not None
              else weights_all[alive].abs())
    new = masks_all.clone()
    new[alive[torch.topk(scores, k=n_prune, largest=False).indices]] = 0
    out, offset = {}, 0
    for name, m in layers:
        out[name + pruner.MASK_SUFFIX] = new[offset:offset + m.weight.numel()].view_as(m.weight)
        offset += m.weight.numel()
    return out


def perturb(model: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, m in weight_layers(model, (nn.Conv2d, nn.Linear)):
            target = m.weight_orig if hasattr(m, "weight_orig") else m.weight
            target.add_(0.05 * torch.randn(target.shape, generator=gen))


# ----------------------------------------------------------------------------- the default
def test_default_scope_is_bit_for_bit_the_old_global_conv_rule() -> None:
    model = make_model(1)
    for round_number in range(3):
        expected = old_global_conv_mask(model, RATE)
        got = pruner.candidate_mask(model, RATE)
        assert list(got) == list(expected)  # conv layers only, in module order
        for key in expected:
            assert torch.equal(got[key], expected[key]), key
        pruner.global_magnitude_prune(model, RATE)
        for key, value in pruner.extract_mask(model.state_dict()).items():
            assert torch.equal(value, expected[key]), key
        perturb(model, round_number)
    assert not any(k.startswith("fc.") and k.endswith("mask") for k in model.state_dict())


def test_default_random_prune_draws_exactly_as_before() -> None:
    model = make_model(2)
    expected = old_global_conv_mask(model, RATE, torch.Generator().manual_seed(5))
    pruner.random_prune(model, RATE, torch.Generator().manual_seed(5))
    got = pruner.extract_mask(model.state_dict())
    assert list(got) == list(expected)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


# ----------------------------------------------------------------------------- counts per layer
def test_conv_linear_global_prunes_the_linear_layer_too() -> None:
    model = make_model(3)
    layers = weight_layers(model, (nn.Conv2d, nn.Linear))
    total = sum(m.weight.numel() for _, m in layers)
    mask = pruner.candidate_mask(model, RATE, pruner.PruneScope("conv_linear"))
    assert [k[:-len(pruner.MASK_SUFFIX)] for k in mask] == [n for n, _ in layers]
    assert pruner.mask_size(mask) == total - round(RATE * total)
    # global: the kept weights are exactly the largest |w| across conv and linear together
    threshold = torch.cat([m.weight.detach().abs().flatten() for _, m in layers]).sort().values[round(RATE * total)]
    for name, m in layers:
        assert bool((mask[name + pruner.MASK_SUFFIX].bool() == (m.weight.detach().abs() >= threshold)).all()), name
    pruner.magnitude_prune(model, RATE, pruner.PruneScope("conv_linear"))
    assert hasattr(model.fc, "weight_mask")
    assert pruner.unpruned_count(model) == total - round(RATE * total)
    assert pruner.remaining_weights(model) == pytest.approx(100.0 * (total - round(RATE * total)) / total,
                                                            abs=1e-9)


@pytest.mark.parametrize("layers", ["conv", "conv_linear"])
def test_layerwise_prunes_each_layer_by_the_rate_of_its_own_remaining(layers: str) -> None:
    model = make_model(4)
    scope = pruner.PruneScope(layers, mode="layerwise")
    kinds = (nn.Conv2d, nn.Linear) if layers == "conv_linear" else (nn.Conv2d,)
    expected = {name: m.weight.numel() for name, m in weight_layers(model, kinds)}
    for round_number in range(3):
        expected = {name: n - round(RATE * n) for name, n in expected.items()}
        pruner.magnitude_prune(model, RATE, scope)
        assert kept(pruner.extract_mask(model.state_dict())) == expected, round_number
        perturb(model, round_number)
    # within a layer the smallest |w| go first
    conv = model.layer2[0].conv1
    pruner.magnitude_prune(model, RATE, scope)
    survivors = (conv.weight_orig.detach() * conv.weight_mask).abs()
    before = conv.weight_orig.detach().abs()[conv.weight_mask.bool()]
    assert survivors[conv.weight_mask.bool()].min() >= before.min()


@pytest.mark.parametrize("mode", ["global", "layerwise"])
def test_dense_layers_keep_every_weight(mode: str) -> None:
    model = make_model(5)
    scope = pruner.PruneScope("conv_linear", dense=("conv1", "fc"), mode=mode)
    layers = weight_layers(model, (nn.Conv2d, nn.Linear))
    pruned = [(n, m) for n, m in layers if n not in scope.dense]
    for round_number in range(2):
        alive_before = {n: int(m.weight_mask.sum()) if hasattr(m, "weight_mask") else m.weight.numel()
                        for n, m in layers}
        pruner.magnitude_prune(model, RATE, scope)
        counts = kept(pruner.extract_mask(model.state_dict()))
        assert set(counts) == {n for n, _ in layers}  # dense layers carry an all-ones mask
        assert counts["conv1"] == model.conv1.weight.numel() and counts["fc"] == model.fc.weight.numel()
        if mode == "layerwise":
            for name, _ in pruned:
                assert counts[name] == alive_before[name] - round(RATE * alive_before[name])
        else:
            alive = sum(alive_before[n] for n, _ in pruned)
            assert sum(counts[n] for n, _ in pruned) == alive - round(RATE * alive)
        perturb(model, round_number)


def test_conv_scope_with_a_dense_conv_matches_the_global_rule_on_the_others() -> None:
    model = make_model(6)
    scope = pruner.PruneScope("conv", dense=("layer1.0.conv1",))
    mask = pruner.candidate_mask(model, RATE, scope)
    others = [(n, m) for n, m in weight_layers(model) if n != "layer1.0.conv1"]
    alive = sum(m.weight.numel() for _, m in others)
    assert int(mask["layer1.0.conv1.weight_mask"].sum()) == model.layer1[0].conv1.weight.numel()
    assert sum(int(mask[n + pruner.MASK_SUFFIX].sum()) for n, _ in others) == alive - round(RATE * alive)
    assert not any(k.startswith("fc.") for k in mask)


def test_random_prune_follows_the_scope() -> None:
    model = make_model(7)
    scope = pruner.PruneScope("conv_linear", dense=("conv1",), mode="layerwise")
    pruner.random_prune(model, RATE, torch.Generator().manual_seed(0), scope)
    counts = kept(pruner.extract_mask(model.state_dict()))
    for name, m in weight_layers(model, (nn.Conv2d, nn.Linear)):
        n = m.weight.numel()
        assert counts[name] == (n if name == "conv1" else n - round(RATE * n)), name


def test_candidate_mask_under_a_scope_leaves_the_model_untouched() -> None:
    model = make_model(8)
    pruner.magnitude_prune(model, RATE, pruner.PruneScope("conv_linear", mode="layerwise"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruner.candidate_mask(model, RATE, pruner.PruneScope("conv_linear", mode="layerwise"))
    after = model.state_dict()
    assert list(before) == list(after) and all(torch.equal(before[k], after[k]) for k in before)


def test_a_conv_linear_mask_loads_into_a_fresh_model() -> None:
    model = make_model(9)
    pruner.magnitude_prune(model, RATE, pruner.PruneScope("conv_linear"))
    mask = pruner.extract_mask(model.state_dict())
    fresh = make_model(10)
    pruner.apply_mask(fresh, mask)
    assert kept(pruner.extract_mask(fresh.state_dict())) == kept(mask)
    pruner.remove_masks(fresh)
    assert not any(k.endswith("_mask") or k.endswith("_orig") for k in fresh.state_dict())
    del mask["fc.weight_mask"]  # conv masks and some linear ones: not a mask of this model
    with pytest.raises(UserError, match="does not fit"):
        pruner.check_mask(make_model(0), {**mask, "fc.weight_mask": torch.ones(3, 3)})


@pytest.mark.parametrize("scope, message", [
    (pruner.PruneScope("conv", dense=("fc",)), "--prune_dense fc is not a conv layer"),
    (pruner.PruneScope("conv_linear", dense=("nope",)), "--prune_dense nope is not a conv_linear layer"),
])
def test_dense_names_that_are_no_layer_are_one_line(scope: pruner.PruneScope, message: str) -> None:
    with pytest.raises(UserError, match=message) as error:
        pruner.check_scope(make_model(), scope)
    assert "\n" not in str(error.value) and "conv1" in str(error.value)


def test_unknown_scope_or_mode_is_one_line() -> None:
    with pytest.raises(UserError, match="--prune_mode"):
        pruner.PruneScope(mode="per_layer")
    with pytest.raises(SystemExit):
        cli.build_parser(cli.IMP).parse_args(["--prune_scope", "linear"])


# ----------------------------------------------------------------------------- resume and records
def test_resume_mismatch_names_each_scope_flag() -> None:
    saved = run_identity(Config(save_dir="x"))
    now = Config(save_dir="x", prune_scope="conv_linear", prune_dense=["fc"], prune_mode="layerwise")
    found = resume_mismatches(saved, now, "main_imp.py", "main_imp.py")
    assert [m.split(":")[0] for m in found] == ["--prune_scope", "--prune_dense", "--prune_mode"]
    assert resume_mismatches(saved, Config(save_dir="x"), "main_imp.py", "main_imp.py") == []
    # a checkpoint of ours from before these flags ran the published scope
    older = {k: v for k, v in saved.items() if not k.startswith("prune_")}
    assert [m.split(":")[0] for m in resume_mismatches(older, now, "main_imp.py", "main_imp.py")] == \
        ["--prune_scope", "--prune_dense", "--prune_mode"]
    assert resume_mismatches({}, now, None, "main_imp.py") == []  # published checkpoints record nothing


def test_imp_run_prunes_in_scope_records_it_and_refuses_another_on_resume(cifar10_dir: str, tmp_path) -> None:
    save_dir = str(tmp_path / "run")
    argv = tiny_args(cifar10_dir, save_dir, "--epochs", "1", "--pruning_times", "2", "--rewind_epoch", "0",
                     "--prune_scope", "conv_linear", "--prune_dense", "conv1", "--prune_mode", "layerwise",
                     "--random_prune")
    main_imp.main(argv)
    with open(os.path.join(save_dir, "args.json")) as handle:
        arguments = json.load(handle)["arguments"]
    assert (arguments["prune_scope"], arguments["prune_dense"], arguments["prune_mode"]) == \
        ("conv_linear", ["conv1"], "layerwise")
    checkpoint = load_checkpoint(os.path.join(save_dir, "1checkpoint.pth.tar"))
    assert checkpoint["config"]["prune_mode"] == "layerwise"
    counts = kept(pruner.extract_mask(checkpoint["state_dict"]))
    model = build_model("res20s", 10)
    for name, m in weight_layers(model, (nn.Conv2d, nn.Linear)):
        n = m.weight.numel()
        assert counts[name] == (n if name == "conv1" else n - round(RATE * n)), name
    final = kept(pruner.extract_mask(load_checkpoint(os.path.join(save_dir, "final_ticket.pth.tar"))["state_dict"]))
    n = model.fc.weight.numel()
    assert final["fc"] == (n - round(RATE * n)) - round(RATE * (n - round(RATE * n)))
    before = sorted(os.listdir(save_dir))
    resume = [a for a in argv if a != "layerwise"]
    resume[resume.index("--prune_mode") + 1:resume.index("--prune_mode") + 1] = ["global"]
    with pytest.raises(UserError, match=r"--prune_mode: checkpoint layerwise, now global") as error:
        main_imp.main(resume + ["--resume", "--checkpoint", os.path.join(save_dir, "1checkpoint.pth.tar")])
    assert "\n" not in str(error.value)
    assert sorted(os.listdir(save_dir)) == before


def test_bad_dense_name_stops_a_run_before_it_writes(cifar10_dir: str, tmp_path) -> None:
    save_dir = str(tmp_path / "bad")
    with pytest.raises(UserError, match="--prune_dense classifier is not a conv layer"):
        main_imp.main(tiny_args(cifar10_dir, save_dir, "--epochs", "1", "--pruning_times", "1",
                                "--prune_dense", "classifier"))
    assert not os.path.exists(os.path.join(save_dir, "args.json"))


def test_early_bird_candidate_follows_the_scope(cifar10_dir: str, shuffled_split: str, tmp_path) -> None:
    """The PrAC run's ticket (its last Early-Bird candidate) is pruned layer-wise with fc dense."""
    save_dir = str(tmp_path / "prac")
    main_PrAC_imp.main(tiny_args(cifar10_dir, save_dir, "--split_file", shuffled_split, "--epochs", "2",
                                 "--pruning_times", "1", "--prune_mode", "layerwise",
                                 "--prune_scope", "conv_linear", "--prune_dense", "fc"))
    final = load_checkpoint(os.path.join(save_dir, "final_ticket.pth.tar"))
    counts = kept(pruner.extract_mask(final["state_dict"]))
    for name, m in weight_layers(build_model("res20s", 10), (nn.Conv2d, nn.Linear)):
        n = m.weight.numel()
        assert counts[name] == (n if name == "fc" else n - round(RATE * n)), name


def test_early_bird_distances_are_relative_to_the_scopes_remaining_weights() -> None:
    model = make_model(11)
    conv_linear = pruner.PruneScope("conv_linear")
    total = sum(m.weight.numel() for _, m in weight_layers(model, (nn.Conv2d, nn.Linear)))
    convs = sum(m.weight.numel() for _, m in weight_layers(model))
    assert pruner.unpruned_count(model) == convs == pruner.unpruned_count(model, pruner.DEFAULT_SCOPE)
    assert pruner.unpruned_count(model, conv_linear) == total  # fc counts before it carries a mask
    pruner.magnitude_prune(model, RATE, conv_linear)
    assert pruner.unpruned_count(model) == pruner.unpruned_count(model, conv_linear) == total - round(RATE * total)
