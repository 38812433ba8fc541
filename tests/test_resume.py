"""Resume equivalence (SPEC §3 last sentence, §4 end, §9 last bullet) and interrupted
checkpoint writes.

A seeded run is made once without interruption; while it runs, the whole save_dir is
copied aside each time a chosen checkpoint has been written (what a kill right after that
write would leave). Each copy is then resumed with --resume --checkpoint and must end
exactly where the uninterrupted run ended: the same weights, masks, optimiser state,
results, PrAC sets and result tables (timings aside).
"""
import os
from typing import Any, Dict

import numpy as np
import pytest
import torch

import checkpoint
import main_imp
import main_PrAC_imp
import main_train
from checkpoint import load_checkpoint
from tests.conftest import tiny_args
from tests.helpers import Point, argv_for, assert_same_run, read_csv, resume, run_with_snapshots
from utils import UserError

# ============================================================================ main_imp.py
IMP_POINTS = {
    "before_rewind_epoch": (0, 1),   # rewind_lt: no rewind point yet (init_weight None)
    "end_of_round0": (0, 2),         # last epoch of round 0 written, not pruned yet
    "start_of_round1": (1, 0),       # pruned, rewound, fresh LR-rewound schedule
    "mid_round1": (1, 1),
}


@pytest.fixture(scope="module")
def imp_reference(cifar10_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    root = tmp_path_factory.mktemp("resume_imp")
    save_dir = str(root / "uninterrupted")
    argv = tiny_args(cifar10_dir, save_dir, "--epochs", "2", "--pruning_times", "2", "--prune_type", "rewind_lt",
                     "--rewind_epoch", "1", "--decreasing_lr", "1")
    os.makedirs(root / "snapshots")
    snapshots = run_with_snapshots(main_imp.main, argv, save_dir, str(root / "snapshots"), IMP_POINTS.values())
    return {"argv": argv, "save_dir": save_dir, "snapshots": snapshots, "root": root}


@pytest.mark.parametrize("name", sorted(IMP_POINTS))
def test_imp_resume_is_exact(imp_reference: Dict[str, Any], name: str) -> None:
    point = IMP_POINTS[name]
    folder = imp_reference["snapshots"][point]
    checkpoint = load_checkpoint(os.path.join(folder, f"{point[0]}checkpoint.pth.tar"))
    assert (checkpoint["state"], checkpoint["epoch"]) == point
    if name == "before_rewind_epoch":
        assert checkpoint["init_weight"] is None
        assert not os.path.exists(os.path.join(folder, "epoch_2_rewind_weight.pt"))
    resume(main_imp.main, argv_for(imp_reference["argv"], folder), folder, point[0])
    assert_same_run(imp_reference["save_dir"], folder)


# ============================================================================ main_PrAC_imp.py
PRAC_POINTS = {
    "end_of_round0": (0, 3),
    "mid_scaled_round1": (1, 1),
    "start_of_round2": (2, 0),
}


@pytest.fixture(scope="module")
def prac_reference(cifar10_dir: str, shuffled_split: str, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    root = tmp_path_factory.mktemp("resume_prac")
    save_dir = str(root / "uninterrupted")
    # constent keeps int(180 * 0.8) = 144 examples after round 0, so round 1 runs
    # int(3 * 144 / 180) = 2 epochs: a scaled round with a middle to resume from.
    argv = tiny_args(cifar10_dir, save_dir, "--split_file", shuffled_split, "--epochs", "3", "--pruning_times", "3",
                     "--data_prune", "constent", "--data_rate", "0.2")
    os.makedirs(root / "snapshots")
    snapshots = run_with_snapshots(main_PrAC_imp.main, argv, save_dir, str(root / "snapshots"),
                                   PRAC_POINTS.values())
    return {"argv": argv, "save_dir": save_dir, "snapshots": snapshots, "split": np.load(shuffled_split)}


def test_prac_reference_round1_is_scaled(prac_reference: Dict[str, Any]) -> None:
    rounds = read_csv(os.path.join(prac_reference["save_dir"], "rounds.csv"))
    assert int(rounds[1]["train_examples"]) < 180
    assert int(rounds[1]["epochs_planned"]) == max(1, int(3 * int(rounds[1]["train_examples"]) / 180)) == 2
    round1_set = np.load(os.path.join(prac_reference["save_dir"], "1prac_set.npy"))
    assert not np.array_equal(np.sort(round1_set), np.sort(prac_reference["split"][:180]))


@pytest.mark.parametrize("name", sorted(PRAC_POINTS))
def test_prac_resume_is_exact(prac_reference: Dict[str, Any], name: str) -> None:
    point = PRAC_POINTS[name]
    folder = prac_reference["snapshots"][point]
    checkpoint = load_checkpoint(os.path.join(folder, f"{point[0]}checkpoint.pth.tar"))
    assert (checkpoint["state"], checkpoint["epoch"]) == point
    resume(main_PrAC_imp.main, argv_for(prac_reference["argv"], folder), folder, point[0])
    assert_same_run(prac_reference["save_dir"], folder)


# ============================================================================ main_train.py
@pytest.fixture(scope="module")
def retrain_reference(cifar10_dir: str, imp_reference: Dict[str, Any],
                      tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    root = tmp_path_factory.mktemp("resume_retrain")
    save_dir = str(root / "uninterrupted")
    source = os.path.join(imp_reference["save_dir"], "1checkpoint.pth.tar")
    argv = tiny_args(cifar10_dir, save_dir, "--epochs", "3", "--decreasing_lr", "2",
                     "--init_dir", source, "--mask_dir", source)
    os.makedirs(root / "snapshots")
    snapshots = run_with_snapshots(main_train.main, argv, save_dir, str(root / "snapshots"), [(0, 1), (0, 2)])
    return {"argv": argv, "save_dir": save_dir, "snapshots": snapshots}


@pytest.mark.parametrize("point", [(0, 1), (0, 2)])
def test_retrain_resume_is_exact(retrain_reference: Dict[str, Any], point: Point) -> None:
    folder = retrain_reference["snapshots"][point]
    resume(main_train.main, argv_for(retrain_reference["argv"], folder), folder, None)
    assert_same_run(retrain_reference["save_dir"], folder)


# ============================================================================ interrupted writes
def partial_save_then_fail(obj: Any, handle: Any, *args: Any, **kwargs: Any) -> None:
    handle.write(b"PK\x03\x04 half a zip archive")
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("error", [OSError, KeyboardInterrupt])
def test_interrupted_checkpoint_write_keeps_previous_file(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                                          error: type) -> None:
    path = str(tmp_path / "0checkpoint.pth.tar")
    previous = {"state": 0, "epoch": 1, "state_dict": {"w": torch.arange(6.0)}}
    checkpoint.save_checkpoint(previous, path)
    with open(path, "rb") as handle:
        before = handle.read()

    def failing_save(obj: Any, handle: Any, *args: Any, **kwargs: Any) -> None:
        handle.write(b"PK\x03\x04 half a zip archive")
        raise error()

    monkeypatch.setattr(torch, "save", failing_save)
    # A failed write (disk full, permissions) is one line for the user; Ctrl-C stays Ctrl-C.
    with pytest.raises(UserError if error is OSError else error):
        checkpoint.save_checkpoint({"state": 0, "epoch": 2, "state_dict": {"w": torch.zeros(6)}}, path)
    monkeypatch.undo()
    with open(path, "rb") as handle:
        assert handle.read() == before
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 1 and torch.equal(loaded["state_dict"]["w"], torch.arange(6.0))
    assert os.listdir(tmp_path) == ["0checkpoint.pth.tar"], "a temporary file was left behind"


def test_run_dying_in_checkpoint_write_resumes_exactly(imp_reference: Dict[str, Any]) -> None:
    """The write of round 0's epoch-2 checkpoint fails half-way: the epoch-1 checkpoint
    still loads, no temporary file is left, and resuming from it ends as the uninterrupted
    run did."""
    save_dir = str(imp_reference["root"] / "dies_in_write")
    argv = argv_for(imp_reference["argv"], save_dir)
    real_save = torch.save

    def save(obj: Any, handle: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(obj, dict) and "optimizer" in obj and obj.get("state") == 0 and obj.get("epoch") == 2:
            partial_save_then_fail(obj, handle)
        real_save(obj, handle, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "save", save)
        with pytest.raises(UserError, match="No space left.*previous version of the file.*intact"):
            main_imp.main(argv)
    assert not [f for f in os.listdir(save_dir) if f.startswith(".tmp")], "a temporary file was left behind"
    checkpoint = load_checkpoint(os.path.join(save_dir, "0checkpoint.pth.tar"))
    assert (checkpoint["state"], checkpoint["epoch"]) == (0, 1)
    resume(main_imp.main, argv, save_dir, 0)
    assert_same_run(imp_reference["save_dir"], save_dir)
