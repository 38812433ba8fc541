"""main_imp.py end to end on the tiny CIFAR-10 set: files, checkpoint keys, sparsity per
round, learning-rate rewinding and the three rewind targets (lt, rewind_lt, pt) plus
random pruning (SPEC §2, §3, §6)."""
import json
import os
import shutil
import warnings
from typing import Any, Dict

import pytest
import torch

import main_imp
import pruner
import runners
from checkpoint import load_checkpoint
from models import build_model
from tests.conftest import tiny_args
from tests.helpers import read_csv

CHECKPOINT_KEYS = {"state", "result", "epoch", "state_dict", "best_sa", "optimizer", "scheduler", "init_weight"}
EPOCHS = 2
ROUNDS = 2
LR = 0.01  # main_imp.py's default
MILESTONES = [1]

# name -> (extra flags, rewind_epoch)
VARIANTS = {
    "lt": (["--prune_type", "lt"], 1),
    "rewind_lt": (["--prune_type", "rewind_lt"], 1),
    "pt": (["--prune_type", "pt"], 0),
    "random": (["--prune_type", "lt", "--random_prune"], 1),
}

def loaded_model(state_dict: Dict[str, torch.Tensor]) -> torch.nn.Module:
    model = build_model("res20s", 10)
    mask = pruner.extract_mask(state_dict)
    if mask:
        pruner.apply_mask(model, mask)
    model.load_state_dict(state_dict)
    return model


def lr_after_rewind(steps: int) -> float:
    """The lr of a fresh SGD + MultiStepLR after ``steps`` scheduler steps."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], LR, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=MILESTONES, gamma=0.1)
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
    return optimizer.param_groups[0]["lr"]


def assert_same_tensors(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor], what: str) -> None:
    assert set(a) == set(b), f"{what}: keys differ: {set(a) ^ set(b)}"
    for key in a:
        assert torch.equal(a[key], b[key]), f"{what}: {key} differs"


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def imp_run(request: Any, cifar10_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """One seeded 2-round x 2-epoch run per variant; the checkpoint written at the start of
    each later round (before any training) is kept aside, since later epochs overwrite it."""
    name = request.param
    extra, rewind_epoch = VARIANTS[name]
    root = tmp_path_factory.mktemp(f"imp_{name}")
    save_dir = str(root / "run")
    boundary_dir = root / "boundary"
    boundary_dir.mkdir()
    def keep_boundary(session: Any, run: Any) -> None:
        if run.epoch == 0:
            shutil.copy(session.paths.checkpoint(run.round), boundary_dir / f"{run.round}checkpoint.pth.tar")

    argv = tiny_args(cifar10_dir, save_dir, "--epochs", str(EPOCHS), "--pruning_times", str(ROUNDS),
                     "--decreasing_lr", ",".join(map(str, MILESTONES)), "--rewind_epoch", str(rewind_epoch),
                     *extra)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main_imp.main(argv, events=runners.RunEvents(checkpoint=[keep_boundary]))
    return {"name": name, "save_dir": save_dir, "boundary": str(boundary_dir), "rewind_epoch": rewind_epoch,
            "warnings": [str(w.message) for w in caught]}


def test_files_written(imp_run: Dict[str, Any]) -> None:
    save_dir = imp_run["save_dir"]
    expected = {"final_ticket.pth.tar", "epochs.csv", "rounds.csv", "args.json",
                f"epoch_{imp_run['rewind_epoch'] + 1}_rewind_weight.pt"}
    for k in range(ROUNDS):
        expected |= {f"{k}checkpoint.pth.tar", f"{k}model_SA_best.pth.tar", f"{k}net_train.png"}
    present = set(os.listdir(save_dir))
    assert expected <= present, f"missing: {expected - present}"
    assert not [f for f in present if f.startswith(".tmp")], "temporary files left behind"
    with open(os.path.join(save_dir, "args.json")) as handle:
        info = json.load(handle)
    assert info["arguments"]["rewind_epoch"] == imp_run["rewind_epoch"]
    # what a seeded rerun must match to be identical (README, "Reproducibility")
    assert info["threads"] == torch.get_num_threads() and info["torch"] == torch.__version__
    assert {"numpy", "torchvision", "python", "device"} <= set(info)
    for k in range(ROUNDS):
        with open(os.path.join(save_dir, f"{k}net_train.png"), "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_keys_and_results(imp_run: Dict[str, Any]) -> None:
    for k in range(ROUNDS):
        for stem in ("checkpoint", "model_SA_best"):
            checkpoint = load_checkpoint(os.path.join(imp_run["save_dir"], f"{k}{stem}.pth.tar"))
            assert CHECKPOINT_KEYS <= set(checkpoint), f"{k}{stem}: missing {CHECKPOINT_KEYS - set(checkpoint)}"
            assert checkpoint["state"] == k
        checkpoint = load_checkpoint(os.path.join(imp_run["save_dir"], f"{k}checkpoint.pth.tar"))
        assert checkpoint["epoch"] == EPOCHS
        assert set(checkpoint["result"]) >= {"train", "ta", "test_ta"}
        assert all(len(checkpoint["result"][key]) == EPOCHS for key in ("train", "ta", "test_ta"))
        assert checkpoint["best_sa"] == pytest.approx(max(checkpoint["result"]["ta"]))
        assert checkpoint["init_weight"] is not None


def test_remaining_weights_per_round(imp_run: Dict[str, Any]) -> None:
    save_dir = imp_run["save_dir"]
    rounds = read_csv(os.path.join(save_dir, "rounds.csv"))
    assert [int(r["round"]) for r in rounds] == list(range(ROUNDS))
    expected = [100.0, 80.0]
    for row, want in zip(rounds, expected):
        assert float(row["remaining_weights"]) == pytest.approx(want, abs=0.01)
        assert int(row["epochs_run"]) == EPOCHS and int(row["train_examples"]) == 180
    for k, want in enumerate(expected):
        checkpoint = load_checkpoint(os.path.join(save_dir, f"{k}checkpoint.pth.tar"))
        assert pruner.remaining_weights(loaded_model(checkpoint["state_dict"])) == pytest.approx(want, abs=0.01)
    ticket = load_checkpoint(os.path.join(save_dir, "final_ticket.pth.tar"))
    assert pruner.remaining_weights(loaded_model(ticket["state_dict"])) == pytest.approx(64.0, abs=0.01)
    mask = pruner.extract_mask(ticket["state_dict"])
    total = sum(m.numel() for m in mask.values())
    assert 100.0 * pruner.mask_size(mask) / total == pytest.approx(64.0, abs=0.01)
    epochs = read_csv(os.path.join(save_dir, "epochs.csv"))
    assert [(int(r["round"]), int(r["epoch"])) for r in epochs] == [(k, e) for k in range(ROUNDS)
                                                                    for e in range(1, EPOCHS + 1)]
    for row in epochs:
        assert float(row["remaining_weights"]) == pytest.approx(expected[int(row["round"])], abs=0.01)


def test_learning_rate_rewinding(imp_run: Dict[str, Any]) -> None:
    """SPEC §2: every later round starts a fresh schedule stepped rewind_epoch times."""
    epochs = read_csv(os.path.join(imp_run["save_dir"], "epochs.csv"))
    lr = {(int(r["round"]), int(r["epoch"])): float(r["lr"]) for r in epochs}
    assert lr[(0, 1)] == pytest.approx(0.01)
    assert lr[(0, 2)] == pytest.approx(0.001)
    rewind = imp_run["rewind_epoch"]
    assert lr[(1, 1)] == pytest.approx(lr_after_rewind(rewind))
    assert lr[(1, 2)] == pytest.approx(lr_after_rewind(rewind + 1))
    if rewind == 1:
        assert lr[(1, 1)] == pytest.approx(0.001)
    else:
        assert lr[(1, 1)] == pytest.approx(0.01)


def test_pruning_uses_trained_weights(imp_run: Dict[str, Any]) -> None:
    """The round-1 mask prunes 20% of the round-0 weights: by magnitude, or at random."""
    end_of_round0 = load_checkpoint(os.path.join(imp_run["save_dir"], "0checkpoint.pth.tar"))
    magnitude_mask = pruner.candidate_mask(loaded_model(end_of_round0["state_dict"]), 0.2)
    round1 = load_checkpoint(os.path.join(imp_run["save_dir"], "1checkpoint.pth.tar"))
    mask = pruner.extract_mask(round1["state_dict"])
    assert set(mask) == set(magnitude_mask)
    assert pruner.mask_size(mask) == pruner.mask_size(magnitude_mask)
    same = all(torch.equal(mask[k], magnitude_mask[k]) for k in mask)
    if imp_run["name"] == "random":
        assert not same, "--random_prune gave the magnitude mask"
    else:
        assert same, "the round-1 mask is not the magnitude mask of the round-0 weights"
    ticket = load_checkpoint(os.path.join(imp_run["save_dir"], "final_ticket.pth.tar"))
    ticket_mask = pruner.extract_mask(ticket["state_dict"])
    # masks only shrink
    assert all(bool((ticket_mask[k] <= mask[k]).all()) for k in mask)


def test_rewind_target(imp_run: Dict[str, Any]) -> None:
    """lt: the initialisation; rewind_lt: epoch_{K+1}_rewind_weight.pt; pt: 0model_SA_best."""
    save_dir, name = imp_run["save_dir"], imp_run["name"]
    round0 = load_checkpoint(os.path.join(save_dir, "0checkpoint.pth.tar"))
    round1 = load_checkpoint(os.path.join(save_dir, "1checkpoint.pth.tar"))
    boundary = load_checkpoint(os.path.join(imp_run["boundary"], "1checkpoint.pth.tar"))
    assert boundary["state"] == 1 and boundary["epoch"] == 0 and boundary["result"]["ta"] == []
    rewind_file = load_checkpoint(os.path.join(save_dir, f"epoch_{imp_run['rewind_epoch'] + 1}_rewind_weight.pt"))
    if name in ("lt", "random"):
        assert_same_tensors(round1["init_weight"], round0["init_weight"], "init_weight")
        target = round0["init_weight"]
        # the initialisation is the seeded fresh model
        torch.manual_seed(0)
        fresh = build_model("res20s", 10)
        assert_same_tensors(pruner.dense_state_dict(target), fresh.state_dict(), "initialisation")
    elif name == "rewind_lt":
        assert_same_tensors(round1["init_weight"], rewind_file, "init_weight vs rewind file")
        target = rewind_file
    else:
        target = load_checkpoint(os.path.join(save_dir, "0model_SA_best.pth.tar"))["state_dict"]
    target = pruner.dense_state_dict(target)
    # The round starts from the target's weights (weight_orig = target, masks applied).
    assert_same_tensors(pruner.dense_state_dict(boundary["state_dict"]), target, "round-1 start")
    start = loaded_model(boundary["state_dict"])
    mask = pruner.extract_mask(boundary["state_dict"])
    for key in start.state_dict():
        if key.endswith(".weight_orig"):
            module = key[: -len(".weight_orig")]
            effective = dict(start.named_modules())[module].weight_orig * mask[module + ".weight_mask"]
            assert torch.equal(effective, target[module + ".weight"] * mask[module + ".weight_mask"])
    # the final ticket rewinds to the same target as well
    ticket = load_checkpoint(os.path.join(save_dir, "final_ticket.pth.tar"))
    assert_same_tensors(pruner.dense_state_dict(ticket["state_dict"]), target, "final ticket weights")


def test_no_scheduler_order_warning(imp_run: Dict[str, Any]) -> None:
    """Learning-rate rewinding steps the schedule before any optimiser step on purpose;
    runners._new_round_optimizer means to silence torch's warning about that, so a user must
    not be told that 'PyTorch skips the first value of the learning rate schedule'."""
    scheduler_warnings = [m for m in imp_run["warnings"] if "lr_scheduler.step()" in m]
    assert not scheduler_warnings, scheduler_warnings[0]
