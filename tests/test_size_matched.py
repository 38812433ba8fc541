"""Size-matched random (issue 17): --select random --match_sizes DIR draws, each round, as
many examples as the PrAC run in DIR trained on in that round; never validation examples;
without DIR it keeps its own-size behaviour."""
import csv
import os
from typing import Any

import numpy as np
import pytest
import torch

import main_PrAC_imp
import runners
from checkpoint import load_checkpoint
from cli import Config, validate
from prac import RoundStatistics, SelectionInput, SelectionSettings, build_rule
from outputs import ROUND_FIELDS
from tests.conftest import tiny_args
from utils import UserError


def make_inputs(records: np.ndarray, seed: int = 0) -> SelectionInput:
    """SelectionInput over ``records`` (examples x epochs): the rows trained in epoch 0 form
    the training split, the others validate."""
    examples, epochs = records.shape
    statistics = RoundStatistics.empty(epochs, examples, torch.device("cpu"))
    statistics.correctness.values[:] = torch.from_numpy(records.T.astype(np.int8))
    return SelectionInput(round=1, epochs_run=epochs, statistics=statistics,
                          train_indices=np.flatnonzero(records[:, 0] >= 0),
                          pruning_aware=lambda: np.array([1, 3, 9]), generator=np.random.default_rng(seed))


@pytest.fixture
def records() -> np.ndarray:
    """12 examples x 4 epochs; examples 10 and 11 are validation (never trained)."""
    return np.array([[1, 0, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 1], [1, 1, 1, 1], [1, 1, 0, 1],
                     [1, 1, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [-1] * 4, [-1] * 4])


def test_a_target_size_is_drawn_exactly_from_the_training_split_seeded(records: np.ndarray) -> None:
    rule = build_rule("random", SelectionSettings())
    for size in (0, 1, 4, 9, 10):
        picks = []
        for seed in range(20):
            inputs = make_inputs(records, seed=seed)
            inputs.target_size = size
            picks.append(rule.select(inputs).indices)
        assert all(p.size == size == len(set(p.tolist())) for p in picks)
        assert all(set(p.tolist()) <= set(range(10)) for p in picks)  # 10 and 11 validate
        again = make_inputs(records, seed=0)
        again.target_size = size
        assert np.array_equal(rule.select(again).indices, picks[0])
    too_many = make_inputs(records)
    too_many.target_size = 11
    with pytest.raises(ValueError):
        rule.select(too_many)


def test_matched_set_size_reads_the_set_file_then_rounds_csv(tmp_path: Any) -> None:
    run = tmp_path / "prac"
    run.mkdir()
    np.save(run / "1prac_set.npy", np.arange(37, dtype=np.int64))
    with open(run / "rounds.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=ROUND_FIELDS)
        writer.writeheader()
        writer.writerow({"round": 1, "train_examples": 99})
        writer.writerow({"round": 2, "train_examples": 21})
    assert runners.matched_set_size(str(run), 1, 180) == 37  # the set file wins
    assert runners.matched_set_size(str(run), 2, 180) == 21
    with pytest.raises(UserError, match="records no training set for round 3") as error:
        runners.matched_set_size(str(run), 3, 180)
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="more than this run's 20 training examples"):
        runners.matched_set_size(str(run), 1, 20)


@pytest.mark.parametrize("settings, message", [
    ({"select": "prac"}, "--match_sizes applies to --select random"),
    ({"select": "random", "match_sizes": "/no/such/folder"}, "is not a folder"),
])
def test_bad_match_sizes_are_one_line(settings: dict, message: str, tmp_path: Any) -> None:
    values = {"save_dir": str(tmp_path / "run"), "match_sizes": str(tmp_path), **settings}
    with pytest.raises(UserError, match=message):
        validate(Config(**values))


@pytest.mark.full  # the quick tier's sweep test (tests/test_sweep_controls.py) checks the same sizes
def test_random_run_takes_each_rounds_size_from_the_prac_run(cifar10_dir: str, shuffled_split: str,
                                                             tmp_path: Any) -> None:
    common = ["--split_file", shuffled_split, "--epochs", "2", "--pruning_times", "3"]
    prac_dir, random_dir = str(tmp_path / "prac"), str(tmp_path / "random")
    main_PrAC_imp.main(tiny_args(cifar10_dir, prac_dir, *common))
    main_PrAC_imp.main(tiny_args(cifar10_dir, random_dir, *common, "--select", "random",
                                 "--match_sizes", prac_dir, "--seed", "1"))
    validation = set(np.load(shuffled_split)[180:].tolist())
    for k in range(3):
        prac_set = np.load(os.path.join(prac_dir, f"{k}prac_set.npy"))
        random_set = np.load(os.path.join(random_dir, f"{k}prac_set.npy"))
        assert random_set.size == prac_set.size, k
        assert not set(random_set.tolist()) & validation
        if k:
            assert not np.array_equal(random_set, prac_set)
    with open(os.path.join(random_dir, "rounds.csv"), newline="") as a, \
            open(os.path.join(prac_dir, "rounds.csv"), newline="") as b:
        assert [r["train_examples"] for r in csv.DictReader(a)] == [r["train_examples"] for r in csv.DictReader(b)]
    config = load_checkpoint(os.path.join(random_dir, "2checkpoint.pth.tar"))["config"]
    assert config["match_sizes"] == prac_dir
