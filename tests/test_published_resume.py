"""PrAC checkpoints in the published scripts' format resume here (SPEC §6, §9).

A published checkpoint holds only the published keys: no scaled schedule, no record of an
Early-Bird stop, records as a list of float arrays. Resuming one must still run the scaled
epoch count of its round and must not train on after an Early-Bird stop.
"""
import csv
import os
from typing import Any, Dict, List

import numpy as np
import pytest
import torch

import main_PrAC_imp
from checkpoint import load_checkpoint
from tests.conftest import tiny_args
from tests.helpers import argv_for, resume, run_with_snapshots

PUBLISHED_PRAC_KEYS = ("state", "result", "epoch", "state_dict", "best_sa", "optimizer", "scheduler",
                       "init_weight", "prediction", "sequence", "remain_para", "distance_queue",
                       "last_mask", "start_record")


def rewrite_as_published(path: str, **overrides: Any) -> None:
    ours = load_checkpoint(path)
    published = {key: ours[key] for key in PUBLISHED_PRAC_KEYS}
    published["prediction"] = [np.asarray(column, dtype=np.float64) for column in ours["prediction"]]
    published.update(overrides)
    torch.save(published, path)


def rounds(save_dir: str) -> List[Dict[str, str]]:
    with open(os.path.join(save_dir, "rounds.csv"), newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def reference(cifar10_dir: str, shuffled_split: str, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    root = tmp_path_factory.mktemp("published_resume")
    save_dir = str(root / "uninterrupted")
    # constent keeps 144 of 180 examples, so round 1 is scaled to int(3 * 144 / 180) = 2 epochs.
    argv = tiny_args(cifar10_dir, save_dir, "--split_file", shuffled_split, "--epochs", "3",
                     "--pruning_times", "2", "--data_prune", "constent", "--data_rate", "0.2")
    os.makedirs(root / "snapshots")
    snapshots = run_with_snapshots(main_PrAC_imp.main, argv, save_dir, str(root / "snapshots"), [(0, 1), (1, 1)])
    return {"argv": argv, "save_dir": save_dir, "snapshots": snapshots}


def test_published_checkpoint_mid_scaled_round_resumes_to_the_same_ticket(reference: Dict[str, Any]) -> None:
    folder = reference["snapshots"][(1, 1)]
    rewrite_as_published(os.path.join(folder, "1checkpoint.pth.tar"))
    resume(main_PrAC_imp.main, argv_for(reference["argv"], folder), folder, 1)
    assert int(rounds(folder)[1]["epochs_planned"]) == 2  # scaled from the PrAC set, not 3
    expected = load_checkpoint(os.path.join(reference["save_dir"], "final_ticket.pth.tar"))
    resumed = load_checkpoint(os.path.join(folder, "final_ticket.pth.tar"))
    for key, value in expected["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    uninterrupted = load_checkpoint(os.path.join(reference["save_dir"], "1checkpoint.pth.tar"))["result"]
    assert load_checkpoint(os.path.join(folder, "1checkpoint.pth.tar"))["result"] == uninterrupted


def test_published_checkpoint_after_early_bird_stop_trains_no_further(reference: Dict[str, Any]) -> None:
    folder = reference["snapshots"][(0, 1)]
    # A queue whose maximum is below eps means the published run stopped after this epoch.
    rewrite_as_published(os.path.join(folder, "0checkpoint.pth.tar"), distance_queue=torch.full((5,), 0.001))
    resume(main_PrAC_imp.main, argv_for(reference["argv"], folder), folder, 0)
    round0 = rounds(folder)[0]
    assert int(round0["epochs_run"]) == 1 and int(round0["epochs_planned"]) == 3
