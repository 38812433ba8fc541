"""Global magnitude pruning, masks, rewinding, random pruning and the Early-Bird rule; the
models live on the session's device (``pytest --device``), built on the CPU first so their
weights are the same on every device."""
from typing import Dict, List, Optional, Tuple

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import pruner
from models import build_model
from tests import conftest
from tests.helpers import one_line
from utils import UserError


# ----------------------------------------------------------------------------- helpers
def make_model(seed: int = 0, arch: str = "res20s") -> nn.Module:
    torch.manual_seed(seed)
    return build_model(arch, 10).to(conftest.DEVICE)


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def forward_once(model: nn.Module) -> None:
    """One eval-mode forward pass: recomputes a pruned module's ``.weight`` attribute."""
    model.eval()
    with torch.no_grad():
        model(torch.rand(1, 3, 32, 32).to(device_of(model)))


def convs(model: nn.Module) -> List[Tuple[str, nn.Conv2d]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def effective(conv: nn.Conv2d) -> torch.Tensor:
    if hasattr(conv, "weight_orig"):
        return (conv.weight_orig * conv.weight_mask).detach()
    return conv.weight.detach()


def clone_model(model: nn.Module, arch: str = "res20s") -> nn.Module:
    """A copy of a (possibly pruned) model: pruned modules cannot be deep-copied."""
    copy = build_model(arch, 10).to(device_of(model))
    mask = pruner.extract_mask(model.state_dict())
    if mask:
        pruner.apply_mask(copy, mask)
    copy.load_state_dict(model.state_dict())
    # a pruned module's .weight attribute is only recomputed by a forward pass
    forward_once(copy)
    copy.train()
    return copy


def snapshot(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


def assert_same_mask(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key].float(), b[key].float()), key


def perturb_surviving(model: nn.Module, seed: int) -> None:
    """Simulates training: changes weight_orig everywhere (pruned entries too, as weight decay does)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, m in convs(model):
            target = m.weight_orig if hasattr(m, "weight_orig") else m.weight
            target.add_(0.05 * torch.randn(target.shape, generator=gen).to(target.device))

# ----------------------------------------------------------------------------- pruning
def test_only_conv_weights_are_pruned() -> None:
    model = make_model()
    fc_before = model.fc.weight.detach().clone()
    bn_before = model.bn1.weight.detach().clone()
    pruner.global_magnitude_prune(model, 0.2)
    state = model.state_dict()
    conv_names = [n for n, _ in convs(model)]
    assert {k for k in state if k.endswith("weight_mask")} == {n + ".weight_mask" for n in conv_names}
    assert {k for k in state if k.endswith("weight_orig")} == {n + ".weight_orig" for n in conv_names}
    assert "fc.weight" in state and "fc.weight_mask" not in state
    assert torch.equal(model.fc.weight.detach(), fc_before)
    assert torch.equal(model.bn1.weight.detach(), bn_before)


def test_pruning_is_global_not_per_layer() -> None:
    model = make_model()
    tiny_layer = model.layer2[1].conv2
    with torch.no_grad():
        tiny_layer.weight.mul_(1e-6)
    total = pruner.conv_weight_count(model)
    assert tiny_layer.weight.numel() < 0.2 * total  # the tiny layer alone does not fill the quota
    pruner.global_magnitude_prune(model, 0.2)
    kept_in_tiny = float(tiny_layer.weight_mask.mean())
    assert kept_in_tiny < 0.5, "a per-layer pruner would keep 80% of every layer"
    assert kept_in_tiny == 0.0  # all its weights are smaller than any other layer's
    assert abs(pruner.remaining_weights(model) - 80.0) < 0.01
    # other layers lose less than 20%
    other = [float(m.weight_mask.mean()) for _, m in convs(model) if m is not tiny_layer]
    assert min(other) > 0.5 and sum(other) / len(other) > 0.8


def test_prunes_the_smallest_magnitudes_across_layers() -> None:
    model = make_model(1)
    before = torch.cat([m.weight.detach().abs().flatten() for _, m in convs(model)])
    pruner.global_magnitude_prune(model, 0.2)
    mask = torch.cat([m.weight_mask.flatten() for _, m in convs(model)])
    assert before[mask == 0].max() <= before[mask == 1].min()
    assert int((mask == 0).sum()) == round(0.2 * before.numel())


@pytest.mark.parametrize("rounds", [1, 2, 3])
def test_remaining_weights_after_k_rounds(rounds: int) -> None:
    model = make_model(2)
    assert pruner.remaining_weights(model) == pytest.approx(100.0)
    for k in range(rounds):
        perturb_surviving(model, seed=k)
        pruner.global_magnitude_prune(model, 0.2)
    assert abs(pruner.remaining_weights(model) - 100 * 0.8 ** rounds) < 0.01
    total = pruner.conv_weight_count(model)
    assert abs(100.0 * pruner.unpruned_count(model) / total - 100 * 0.8 ** rounds) < 0.01


def test_masks_are_nested_even_when_pruned_weights_grow() -> None:
    model = make_model(3)
    pruner.global_magnitude_prune(model, 0.2)
    previous = pruner.extract_mask(model.state_dict())
    for k in range(3):
        with torch.no_grad():
            # make every pruned weight_orig huge: it must still stay pruned
            for _, m in convs(model):
                m.weight_orig[m.weight_mask == 0] = 100.0
        perturb_surviving(model, seed=10 + k)
        pruner.global_magnitude_prune(model, 0.2)
        current = pruner.extract_mask(model.state_dict())
        for key in previous:
            assert bool((current[key] <= previous[key]).all()), key
        previous = current
    assert abs(pruner.remaining_weights(model) - 100 * 0.8 ** 4) < 0.01


def test_pruned_weights_are_zero_in_forward() -> None:
    model = make_model(4)
    pruner.global_magnitude_prune(model, 0.5)
    forward_once(model)
    for _, m in convs(model):
        assert bool((m.weight[m.weight_mask == 0] == 0).all())


# ----------------------------------------------------------------------------- candidate mask
def test_candidate_mask_leaves_model_untouched_and_matches_real_pruning() -> None:
    model = make_model(5)
    pruner.global_magnitude_prune(model, 0.2)
    perturb_surviving(model, seed=5)  # weights changed after the last forward: .weight is stale
    before = snapshot(model)
    unpruned_before = pruner.unpruned_count(model)
    candidate = pruner.candidate_mask(model, 0.2)
    assert_same_state(before, snapshot(model))
    assert pruner.unpruned_count(model) == unpruned_before
    assert all(prune.is_pruned(m) for _, m in convs(model))

    reference = clone_model(model)
    pruner.global_magnitude_prune(reference, 0.2)
    assert_same_mask(candidate, pruner.extract_mask(reference.state_dict()))
    assert pruner.mask_size(candidate) == round(unpruned_before * 0.8)


def test_candidate_mask_on_dense_model_leaves_it_dense() -> None:
    model = make_model(6)
    before = snapshot(model)
    candidate = pruner.candidate_mask(model, 0.2)
    assert_same_state(before, snapshot(model))
    assert not any(prune.is_pruned(m) for _, m in convs(model))
    assert set(candidate) == {n + ".weight_mask" for n, _ in convs(model)}
    reference = clone_model(model)
    pruner.global_magnitude_prune(reference, 0.2)
    assert_same_mask(candidate, pruner.extract_mask(reference.state_dict()))


def test_candidate_mask_equals_torch_global_unstructured() -> None:
    model = make_model(7)
    pruner.global_magnitude_prune(model, 0.2)
    perturb_surviving(model, seed=7)
    forward_once(model)  # refresh .weight, as the published code relied on
    candidate = pruner.candidate_mask(model, 0.2)

    published = clone_model(model)
    parameters = tuple((m, "weight") for _, m in convs(published))
    prune.global_unstructured(parameters, pruning_method=prune.L1Unstructured, amount=0.2)
    assert_same_mask(candidate, pruner.extract_mask(published.state_dict()))


def test_candidate_mask_uses_current_weights_not_stale_forward_copy() -> None:
    model = make_model(8)
    pruner.global_magnitude_prune(model, 0.2)
    perturb_surviving(model, seed=8)
    candidate = pruner.candidate_mask(model, 0.2)
    refreshed = clone_model(model)  # a fresh copy has .weight == weight_orig * mask
    parameters = tuple((m, "weight") for _, m in convs(refreshed))
    prune.global_unstructured(parameters, pruning_method=prune.L1Unstructured, amount=0.2)
    assert_same_mask(candidate, pruner.extract_mask(refreshed.state_dict()))


# ----------------------------------------------------------------------------- masks
def test_extract_mask_returns_only_weight_masks() -> None:
    model = make_model(9)
    assert pruner.extract_mask(model.state_dict()) == {}
    pruner.global_magnitude_prune(model, 0.2)
    state = model.state_dict()
    mask = pruner.extract_mask(state)
    assert set(mask) == {k for k in state if k.endswith(".weight_mask")}
    assert len(mask) == len(convs(model))
    assert not any(k.endswith("weight_orig") or k.startswith("normalize") for k in mask)
    key = next(iter(mask))
    mask[key].zero_()  # a copy: the model's mask is not changed
    assert float(model.state_dict()[key].sum()) > 0


def test_apply_mask_reproduces_a_saved_mask_on_a_fresh_model() -> None:
    source = make_model(10)
    pruner.global_magnitude_prune(source, 0.36)
    mask = pruner.extract_mask(source.state_dict())
    target = make_model(11)
    pruner.apply_mask(target, mask)
    assert_same_mask(mask, pruner.extract_mask(target.state_dict()))
    assert pruner.remaining_weights(target) == pytest.approx(pruner.remaining_weights(source))


def test_remove_masks_folds_masks_into_weights() -> None:
    model = make_model(12)
    pruner.global_magnitude_prune(model, 0.2)
    perturb_surviving(model, seed=12)
    expected = {n: effective(m).clone() for n, m in convs(model)}
    remaining = pruner.remaining_weights(model)
    pruner.remove_masks(model)
    state = model.state_dict()
    assert not any(k.endswith("_orig") or k.endswith("_mask") for k in state)
    for name, weight in expected.items():
        assert torch.equal(state[name + ".weight"], weight), name
    assert pruner.remaining_weights(model) == pytest.approx(remaining)


def test_dense_state_dict_drops_reparametrisation() -> None:
    model = make_model(13)
    pruner.global_magnitude_prune(model, 0.2)
    dense = pruner.dense_state_dict(model.state_dict())
    assert set(dense) == set(build_model("res20s", 10).state_dict())
    assert torch.equal(dense["conv1.weight"], model.conv1.weight_orig.detach())


def test_check_mask_refuses_a_mask_of_another_architecture() -> None:
    other = make_model(14, "res56s")
    pruner.global_magnitude_prune(other, 0.2)
    mask = pruner.extract_mask(other.state_dict())
    model = make_model(15)
    with pytest.raises(UserError) as info:
        pruner.check_mask(model, mask)
    assert one_line(info.value)
    with pytest.raises(UserError) as info:
        pruner.apply_mask(model, mask)
    assert one_line(info.value)
    assert not any(prune.is_pruned(m) for _, m in convs(model))


def test_check_mask_refuses_a_wrong_shape() -> None:
    model = make_model(16)
    mask = {n + ".weight_mask": torch.ones_like(m.weight) for n, m in convs(model)}
    pruner.check_mask(model, mask)  # a good mask passes
    mask["layer2.0.conv1.weight_mask"] = torch.ones(32, 16, 1, 1)
    with pytest.raises(UserError) as info:
        pruner.check_mask(model, mask)
    assert one_line(info.value)
    assert "layer2.0.conv1" in str(info.value)


def test_check_mask_refuses_a_missing_layer() -> None:
    model = make_model(17)
    mask = {n + ".weight_mask": torch.ones_like(m.weight) for n, m in convs(model)}
    del mask["layer3.2.conv2.weight_mask"]
    with pytest.raises(UserError) as info:
        pruner.check_mask(model, mask)
    assert one_line(info.value)


def test_check_mask_refuses_a_non_binary_mask() -> None:
    model = make_model(18)
    mask = {n + ".weight_mask": torch.ones_like(m.weight) for n, m in convs(model)}
    mask["conv1.weight_mask"][0, 0, 0, 0] = 0.5
    with pytest.raises(UserError) as info:
        pruner.check_mask(model, mask)
    assert one_line(info.value)
    with pytest.raises(UserError):
        pruner.apply_mask(model, mask)


def test_mask_distance_on_hand_made_masks() -> None:
    a = {"x.weight_mask": torch.tensor([1.0, 0.0, 1.0, 1.0]), "y.weight_mask": torch.tensor([[1.0, 1.0], [0.0, 0.0]])}
    b = {"x.weight_mask": torch.tensor([1.0, 1.0, 0.0, 1.0]), "y.weight_mask": torch.tensor([[1.0, 0.0], [0.0, 0.0]])}
    assert pruner.mask_distance(a, b, 4) == pytest.approx(3 / 4)
    assert pruner.mask_distance(a, b, 6.0) == pytest.approx(0.5)
    assert pruner.mask_distance(a, a, 6.0) == 0.0
    assert pruner.mask_distance(b, a, 3) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- rewinding
def test_rewind_sets_survivors_to_the_rewind_point_and_zeroes_the_rest() -> None:
    model = make_model(19)
    rewind_point = snapshot(model)
    perturb_surviving(model, seed=19)
    with torch.no_grad():
        model.fc.weight.add_(1.0)
        model.bn1.running_mean.add_(3.0)
    pruner.global_magnitude_prune(model, 0.2)
    perturb_surviving(model, seed=20)
    pruner.global_magnitude_prune(model, 0.2)
    mask = pruner.extract_mask(model.state_dict())

    pruner.rewind(model, rewind_point, mask)
    assert_same_mask(mask, pruner.extract_mask(model.state_dict()))
    forward_once(model)
    for name, m in convs(model):
        expected = rewind_point[name + ".weight"] * mask[name + ".weight_mask"]
        assert torch.equal(effective(m), expected), name
        assert torch.equal(m.weight.detach(), expected), name
        assert bool((m.weight[mask[name + ".weight_mask"] == 0] == 0).all())
    # everything that is not a conv weight is back at the rewind point too
    assert torch.equal(model.fc.weight.detach(), rewind_point["fc.weight"])
    assert torch.equal(model.bn1.running_mean, rewind_point["bn1.running_mean"])
    assert abs(pruner.remaining_weights(model) - 64.0) < 0.01


def test_rewind_accepts_a_pruned_state_dict_as_rewind_point() -> None:
    # rewind_lt's rewind point can itself hold weight_orig / weight_mask entries
    source = make_model(21)
    pruner.global_magnitude_prune(source, 0.2)
    rewind_point = snapshot(source)
    model = make_model(22)
    pruner.global_magnitude_prune(model, 0.5)
    mask = pruner.extract_mask(model.state_dict())
    pruner.rewind(model, rewind_point, mask)
    for name, m in convs(model):
        expected = rewind_point[name + ".weight_orig"] * mask[name + ".weight_mask"]
        assert torch.equal(effective(m), expected), name


# ----------------------------------------------------------------------------- random pruning
def test_random_prune_removes_the_magnitude_count_reproducibly() -> None:
    base = make_model(23)
    magnitude = clone_model(base)
    pruner.global_magnitude_prune(magnitude, 0.2)
    first = clone_model(base)
    pruner.random_prune(first, 0.2, generator=torch.Generator().manual_seed(1))
    second = clone_model(base)
    pruner.random_prune(second, 0.2, generator=torch.Generator().manual_seed(1))
    third = clone_model(base)
    pruner.random_prune(third, 0.2, generator=torch.Generator().manual_seed(2))

    assert pruner.unpruned_count(first) == pruner.unpruned_count(magnitude)
    assert pruner.unpruned_count(third) == pruner.unpruned_count(magnitude)
    mask_first = pruner.extract_mask(first.state_dict())
    assert_same_mask(mask_first, pruner.extract_mask(second.state_dict()))
    assert pruner.mask_distance(mask_first, pruner.extract_mask(third.state_dict()), 1) > 0
    assert pruner.mask_distance(mask_first, pruner.extract_mask(magnitude.state_dict()), 1) > 0
    # random: each layer keeps about 80% (a magnitude pruner would not, for a layer of tiny weights)
    kept = [float(m.weight_mask.mean()) for _, m in convs(first) if m.weight.numel() >= 2000]
    assert all(abs(k - 0.8) < 0.06 for k in kept)


def test_random_prune_is_nested_and_counts_only_unpruned() -> None:
    model = make_model(24)
    pruner.global_magnitude_prune(model, 0.2)
    before = pruner.extract_mask(model.state_dict())
    alive = pruner.unpruned_count(model)
    pruner.random_prune(model, 0.2, generator=torch.Generator().manual_seed(0))
    after = pruner.extract_mask(model.state_dict())
    for key in before:
        assert bool((after[key] <= before[key]).all())
    assert pruner.unpruned_count(model) == alive - round(0.2 * alive)


# ----------------------------------------------------------------------------- Early-Bird
N = 100  # mask entries; remaining = N, so a distance of k flips is k / 100


def mask_sequence(flips: List[int]) -> List[Dict[str, torch.Tensor]]:
    """Masks whose consecutive Hamming distances are ``flips`` (first mask: epoch 0)."""
    current = torch.ones(N)
    current[::3] = 0
    masks = [{"a.weight_mask": current.clone()}]
    for k in flips:
        current = current.clone()
        current[:k] = 1 - current[:k]
        masks.append({"a.weight_mask": current})
    return masks


def run_early_bird(flips: List[int], eps: float = 0.08, queue_length: int = 5,
                   warmup: int = 0) -> Tuple[Optional[int], List[Optional[float]]]:
    """Feeds the masks epoch by epoch; returns (epoch at which it stops or None, distances)."""
    bird = pruner.EarlyBird(eps, queue_length, warmup)
    distances = []
    for epoch, mask in enumerate(mask_sequence(flips)):
        distance, stop = bird.update(epoch, mask, float(N))
        distances.append(distance)
        if stop:
            return epoch, distances
    return None, distances


def test_mask_sequence_helper_has_the_requested_distances() -> None:
    masks = mask_sequence([20, 1, 3])
    assert [pruner.mask_distance(a, b, N) for a, b in zip(masks, masks[1:])] == [0.2, 0.01, 0.03]


def test_early_bird_stops_after_queue_length_small_recorded_distances() -> None:
    # epochs 1, 2: small (not recorded: recording has not started); epoch 3: 0.2 > eps starts
    # recording and enters the queue; epochs 4..8 are five small distances: the queue of five
    # holds only them after epoch 8, so the round stops exactly there.
    flips = [1, 1, 20] + [1] * 10
    stop_epoch, distances = run_early_bird(flips)
    assert distances[0] is None
    assert distances[1:4] == [pytest.approx(0.01), pytest.approx(0.01), pytest.approx(0.2)]
    assert stop_epoch == 8


def test_early_bird_large_distance_blocks_the_queue_until_pushed_out() -> None:
    # A second large distance restarts the count of small ones.
    flips = [20, 1, 1, 1, 20, 1, 1, 1, 1, 1, 1, 1]
    stop_epoch, _ = run_early_bird(flips)
    assert stop_epoch == 5 + 5


def test_early_bird_queue_length_is_respected() -> None:
    flips = [20] + [1] * 10
    assert run_early_bird(flips, queue_length=2)[0] == 1 + 2
    assert run_early_bird(flips, queue_length=5)[0] == 1 + 5


def test_early_bird_never_stops_without_a_distance_above_eps() -> None:
    flips = [1] * 30  # all 0.01 < eps: recording never starts, the queue stays at ones
    stop_epoch, distances = run_early_bird(flips)
    assert stop_epoch is None
    assert all(d == pytest.approx(0.01) for d in distances[1:])
    bird = pruner.EarlyBird(0.08, 5, 0)
    for epoch, mask in enumerate(mask_sequence(flips)):
        bird.update(epoch, mask, float(N))
    assert not bird.start_record
    assert torch.equal(bird.queue, torch.ones(5))


def test_early_bird_distance_equal_to_eps_does_not_start_recording() -> None:
    flips = [8] + [1] * 10  # 0.08 is not above eps = 0.08
    assert run_early_bird(flips)[0] is None


def test_early_bird_warmup_delays_queueing() -> None:
    flips = [20] + [1] * 12
    # without warm-up: 0.2 queued at epoch 1, five small ones at epochs 2..6
    assert run_early_bird(flips, warmup=0)[0] == 6
    # warm-up 3: recording starts at epoch 1 but nothing is queued before epoch 4 (epoch > warmup),
    # so the five small distances of epochs 4..8 fill the queue at epoch 8
    assert run_early_bird(flips, warmup=3)[0] == 8


def test_early_bird_distance_is_relative_to_remaining() -> None:
    masks = mask_sequence([10])
    bird = pruner.EarlyBird(0.08, 5, 0)
    assert bird.update(0, masks[0], 50.0) == (None, False)
    distance, stop = bird.update(1, masks[1], 50.0)
    assert distance == pytest.approx(0.2)
    assert not stop and bird.start_record
