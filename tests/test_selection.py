"""Selection rules (--select) and the statistics they read: unit tests of each rule, EL2N
against a direct computation, constent tie-breaking on a class-ordered set, and every rule
end to end on tiny on-disk data, including an exact resume in the middle of a scaled round."""
import os
from typing import Any, Dict

import numpy as np
import pytest
import torch

import main_PrAC_imp
import prac
from prac import (
    CorrectnessRecorder,
    RoundStatistics,
    SelectionInput,
    SelectionSettings,
    build_rule,
    el2n_scores,
    next_training_set,
    select_by_forgetting,
)
from tests.conftest import tiny_args
from tests.helpers import argv_for, assert_same_run, read_csv, resume, run_with_snapshots

TRAIN_NUMBER = 180
RULES = sorted(prac.SELECTION_RULES)

# ============================================================================ units
def make_inputs(records: np.ndarray, aware: np.ndarray, round_number: int = 1,
                el2n: np.ndarray = None, seed: int = 0) -> SelectionInput:
    """SelectionInput over ``records`` (examples x epochs) with a fixed pruning-aware part."""
    examples, epochs = records.shape
    statistics = RoundStatistics.empty(epochs, examples, torch.device("cpu"),
                                       score_epochs=None if el2n is None else epochs)
    statistics.correctness.values[:] = torch.from_numpy(records.T.astype(np.int8))
    if el2n is not None:
        statistics.el2n.sums[:] = torch.from_numpy(el2n.astype(np.float32) * epochs)
    trained = np.flatnonzero(records[:, 0] >= 0)
    return SelectionInput(round=round_number, epochs_run=epochs, statistics=statistics, train_indices=trained,
                          pruning_aware=lambda: aware, generator=np.random.default_rng(seed))


@pytest.fixture
def records() -> np.ndarray:
    """12 examples x 4 epochs; examples 10 and 11 are validation (never trained)."""
    rows = np.array([[1, 0, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 1], [1, 1, 1, 1], [1, 1, 0, 1],
                     [1, 1, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [-1] * 4, [-1] * 4])
    return rows


def test_prac_rule_is_the_union_of_both_parts(records: np.ndarray) -> None:
    # forgetting events > 0: rows 0 (2), 2 (never learned), 3 (1), 5 (1)
    selection = build_rule("prac", SelectionSettings()).select(make_inputs(records, np.array([1, 3, 9])))
    assert selection.indices.tolist() == [0, 1, 2, 3, 5, 9]
    assert selection.parts == {"forgetting_part": 4, "pruning_aware_part": 3}


def test_forgetting_and_pruning_aware_rules_are_each_part_alone(records: np.ndarray) -> None:
    inputs = make_inputs(records, np.array([9, 1, 3]))
    assert build_rule("forgetting", SelectionSettings()).select(inputs).indices.tolist() == [0, 2, 3, 5]
    aware = build_rule("pruning_aware", SelectionSettings()).select(inputs)
    assert aware.indices.tolist() == [1, 3, 9] and aware.parts == {"pruning_aware_part": 3}


def test_random_rule_matches_the_prac_size_is_seeded_and_never_picks_validation(records: np.ndarray) -> None:
    rule = build_rule("random", SelectionSettings())
    picks = [rule.select(make_inputs(records, np.array([1, 3, 9]), seed=seed)).indices for seed in range(40)]
    assert all(p.size == 6 and len(set(p.tolist())) == 6 for p in picks)
    assert all(set(p.tolist()) <= set(range(10)) for p in picks)
    assert np.array_equal(picks[0], rule.select(make_inputs(records, np.array([1, 3, 9]), seed=0)).indices)
    # uniform over the 10 training examples: each is picked about 6/10 of the time
    counts = np.bincount(np.concatenate(picks), minlength=10)
    assert counts.min() > 0.3 * 40 and counts.max() < 0.9 * 40


def test_el2n_rule_keeps_the_highest_scores_of_the_prac_size(records: np.ndarray) -> None:
    scores = np.linspace(0.0, 1.1, 12)[::-1].copy()   # example 0 scores highest
    scores[10:] = 5.0                                   # validation rows must never be picked
    selection = build_rule("el2n", SelectionSettings()).select(make_inputs(records, np.array([1, 3, 9]),
                                                                           el2n=scores))
    assert selection.indices.tolist() == [0, 1, 2, 3, 4, 5]
    assert selection.parts == {"forgetting_part": 4, "pruning_aware_part": 3}


def test_el2n_scores_against_a_direct_computation() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 5, generator=generator)
    targets = torch.tensor([0, 4, 2, 2, 1, 3, 0])
    probabilities = np.exp(logits.numpy()) / np.exp(logits.numpy()).sum(axis=1, keepdims=True)
    expected = [np.sqrt(sum((probabilities[i, c] - (c == targets[i].item())) ** 2 for c in range(5)))
                for i in range(7)]
    assert np.allclose(el2n_scores(logits, targets).numpy(), expected, atol=1e-6)


def test_el2n_recorder_averages_over_the_first_score_epochs_only(device: torch.device) -> None:
    statistics = RoundStatistics.empty(epochs=4, examples=6, device=device, score_epochs=2)
    generator = torch.Generator().manual_seed(1)
    per_epoch = []
    for epoch in range(4):
        logits = torch.randn(3, 5, generator=generator)
        targets = torch.tensor([1, 0, 4])
        statistics.batch_hook(epoch)(torch.tensor([5, 0, 2], device=device), logits.to(device), targets.to(device))
        per_epoch.append(el2n_scores(logits, targets).numpy())
    scores = statistics.el2n.scores(epochs_run=4)
    assert np.allclose(scores[[5, 0, 2]], (per_epoch[0] + per_epoch[1]) / 2, atol=1e-6)
    assert scores[[1, 3, 4]].tolist() == [0, 0, 0]
    assert statistics.correctness.values[:, 1].tolist() == [-1] * 4


def test_correctness_recorder_is_one_write_per_batch(device: torch.device) -> None:
    recorder = CorrectnessRecorder(epochs=2, examples=5, device=device)
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]], device=device)
    recorder.record(1, torch.tensor([4, 0, 2], device=device), logits, torch.tensor([0, 0, 1], device=device))
    assert recorder.values.tolist() == [[-1] * 5, [0, -1, 0, -1, 1]]


def test_an_empty_selection_keeps_the_previous_set() -> None:
    previous = np.array([3, 4, 7])
    kept, fell_back = next_training_set(prac.Selection(np.empty(0, dtype=np.int64)), previous)
    assert fell_back and kept.tolist() == [3, 4, 7]
    chosen, fell_back = next_training_set(prac.Selection(np.array([1, 2])), previous)
    assert not fell_back and chosen.tolist() == [1, 2]


def test_a_new_rule_is_a_class_and_a_registry_line(records: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    class EveryOther(prac.SelectionRule):
        def select(self, inputs: SelectionInput) -> prac.Selection:
            return prac.Selection(inputs.train_indices[::2])

    monkeypatch.setitem(prac.SELECTION_RULES, "every_other", EveryOther)
    assert build_rule("every_other", SelectionSettings()).select(make_inputs(records, np.array([]))).indices.tolist() \
        == [0, 2, 4, 6, 8]


def test_constent_ties_fall_as_the_published_argsort_not_by_class_order() -> None:
    """A Tiny-ImageNet-shaped, class-ordered train set (200 classes x 500, a shuffled split,
    validation rows -1) whose events are mostly tied: the kept examples are exactly the
    published ``np.argsort(events)[-k:]``, and the tie group at the cut is not handed to
    the last classes wholesale, as a stable sort does."""
    classes, per_class = 200, 500
    rng = np.random.default_rng(0)
    split = rng.permutation(classes * per_class)
    events = rng.choice([0, 1, 2, 3], size=split.size, p=[0.5, 0.3, 0.15, 0.05]).astype(np.int64)
    events[split[90000:]] = -1
    keep = int(90000 * 0.8)
    chosen = select_by_forgetting(events, "constent", 0.2, 0, 0, 90000)
    assert np.array_equal(chosen, np.sort(np.argsort(events)[-keep:]))
    kept = np.bincount(chosen // per_class, minlength=classes)
    trained = np.bincount(np.flatnonzero(events >= 0) // per_class, minlength=classes)
    stable = np.bincount(np.sort(np.argsort(events, kind="stable")[-keep:]) // per_class, minlength=classes)
    # a stable sort keeps nearly every trained example of the last classes ...
    assert stable[-20:].sum() > 0.98 * trained[-20:].sum()
    # ... the published order does not
    assert kept[-20:].sum() < 0.9 * trained[-20:].sum()


def test_constent_with_untrained_rows_never_selects_them() -> None:
    events = np.array([-1, 0, 0, 2, -1, 1, 0, -1])
    chosen = select_by_forgetting(events, "constent", 0.0, 0, 0, 100)  # asks for more than exist
    assert chosen.tolist() == [1, 2, 3, 5, 6]


# ============================================================================ end to end
@pytest.fixture(scope="module")
def rule_runs(cifar10_dir: str, shuffled_split: str, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """Every rule, seeded alike: 3 rounds x 3 epochs with constent sets, so later rounds are
    scaled; the save_dir is copied aside after the checkpoint in the middle of round 1."""
    root = tmp_path_factory.mktemp("rules")
    runs = {}
    for rule in RULES:
        save_dir = str(root / rule)
        argv = tiny_args(cifar10_dir, save_dir, "--split_file", shuffled_split, "--epochs", "3",
                         "--pruning_times", "3", "--data_prune", "constent", "--data_rate", "0.2",
                         "--select", rule, "--score_epochs", "2")
        side = root / f"{rule}_snapshots"
        os.makedirs(side)
        snapshots = run_with_snapshots(main_PrAC_imp.main, argv, save_dir, str(side), [(1, 1)])
        runs[rule] = {"argv": argv, "save_dir": save_dir, "snapshot": snapshots[(1, 1)]}
    return {"runs": runs, "split": np.load(shuffled_split)}


@pytest.mark.parametrize("rule", RULES)
def test_every_rule_writes_its_sets_and_parts(rule_runs: Dict[str, Any], rule: str) -> None:
    save_dir = rule_runs["runs"][rule]["save_dir"]
    validation = set(rule_runs["split"][TRAIN_NUMBER:].tolist())
    rows = read_csv(os.path.join(save_dir, "rounds.csv"))
    assert [r["select_rule"] for r in rows] == [rule] * 3
    for k, row in enumerate(rows):
        chosen = np.load(os.path.join(save_dir, f"{k}prac_set.npy"))
        assert int(row["train_examples"]) == chosen.size == len(set(chosen.tolist()))
        assert not validation & set(chosen.tolist()), "a validation example was selected"
        assert int(row["epochs_planned"]) == max(1, int(3 * chosen.size / TRAIN_NUMBER))
    if rule in ("prac", "random", "el2n"):
        assert rows[1]["forgetting_part"] == str(int(TRAIN_NUMBER * 0.8)) and rows[1]["pruning_aware_part"] == "0"
    if rule == "pruning_aware":
        # the dense round has no pruning-aware part: the empty set keeps the training split
        assert int(rows[1]["train_examples"]) == TRAIN_NUMBER and rows[1]["forgetting_part"] == ""


def test_random_and_el2n_sets_have_the_prac_size_of_the_same_seed(rule_runs: Dict[str, Any]) -> None:
    sizes = {rule: np.load(os.path.join(rule_runs["runs"][rule]["save_dir"], "1prac_set.npy")).size
             for rule in ("prac", "random", "el2n")}
    assert sizes["random"] == sizes["el2n"] == sizes["prac"]
    prac_set = np.load(os.path.join(rule_runs["runs"]["prac"]["save_dir"], "1prac_set.npy"))
    random_set = np.load(os.path.join(rule_runs["runs"]["random"]["save_dir"], "1prac_set.npy"))
    assert not np.array_equal(prac_set, random_set)


def test_args_and_checkpoint_record_the_rule(rule_runs: Dict[str, Any]) -> None:
    import json

    from checkpoint import load_checkpoint
    save_dir = rule_runs["runs"]["el2n"]["save_dir"]
    with open(os.path.join(save_dir, "args.json")) as handle:
        assert json.load(handle)["arguments"]["select"] == "el2n"
    saved = load_checkpoint(os.path.join(save_dir, "2checkpoint.pth.tar"))
    assert saved["config"]["select"] == "el2n" and saved["el2n_sums"].shape == (200,)


# prac and el2n (which also restores its score sums) in the quick tier; the rules that read
# the same records as prac in the full tier.
@pytest.mark.parametrize("rule", [pytest.param(rule, marks=() if rule in ("prac", "el2n") else pytest.mark.full)
                                  for rule in RULES])
def test_every_rule_resumes_mid_round_exactly(rule_runs: Dict[str, Any], rule: str) -> None:
    run = rule_runs["runs"][rule]
    folder = run["snapshot"]
    resume(main_PrAC_imp.main, argv_for(run["argv"], folder), folder, 1)
    assert_same_run(run["save_dir"], folder)
