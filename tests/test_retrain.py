"""main_train.py: retraining a ticket from our checkpoints, from a checkpoint in the
published format, from a plain rewind-weight file and from the final ticket (SPEC §5, §6)."""
import json
import os
from typing import Any, Dict, Optional

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import main_imp
import main_train
import pruner
import runners
import utils
from checkpoint import load_checkpoint
from models import build_model
from tests.conftest import tiny_args
from tests.helpers import read_csv
from utils import UserError

EPOCHS = 2

def mask_percent(mask: Dict[str, torch.Tensor]) -> float:
    return 100.0 * pruner.mask_size(mask) / sum(m.numel() for m in mask.values())


@pytest.fixture(scope="module")
def imp_dir(cifar10_dir: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    save_dir = str(tmp_path_factory.mktemp("retrain_source") / "imp")
    main_imp.main(tiny_args(cifar10_dir, save_dir, "--epochs", "2", "--pruning_times", "2",
                            "--prune_type", "rewind_lt", "--rewind_epoch", "0"))
    return save_dir


@pytest.fixture(scope="module")
def published_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A round-1 checkpoint as the published scripts write it: a plain dict saved with
    torch.save, masks made by torch.nn.utils.prune.global_unstructured, numpy sequence."""
    torch.manual_seed(3)
    model = build_model("res20s", 10)
    initialization = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():  # "train" a little so the weights differ from the initialisation
        for _, module in model.named_modules():
            if isinstance(module, nn.Conv2d):
                module.weight.add_(torch.randn_like(module.weight) * 0.05)
    parameters = [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d)]
    prune.global_unstructured(parameters, pruning_method=prune.L1Unstructured, amount=0.2)
    optimizer = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[91, 136], gamma=0.1)
    checkpoint = {
        "state": 1,
        "result": {"train": [30.0, 40.0], "ta": [20.0, 25.0], "test_ta": [21.0, 24.0]},
        "epoch": 2,
        "state_dict": model.state_dict(),
        "best_sa": 25.0,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "init_weight": initialization,
        "sequence": np.arange(180),
    }
    assert any(k.endswith("weight_orig") for k in checkpoint["state_dict"])
    assert any(k.endswith("weight_mask") for k in checkpoint["state_dict"])
    path = str(tmp_path_factory.mktemp("published") / "1checkpoint.pth.tar")
    torch.save(checkpoint, path)
    return path


def retrain(cifar10_dir: str, save_dir: str, init_dir: Optional[str], mask_dir: Optional[str],
            monkeypatch: pytest.MonkeyPatch, *extra: str) -> Dict[str, torch.Tensor]:
    """Runs main_train.py in-process; returns the model's state just before training."""
    captured: Dict[str, Dict[str, torch.Tensor]] = {}
    def keep_start(session: Any, model: nn.Module, run: Any) -> None:
        captured.setdefault("start", {k: v.detach().clone() for k, v in model.state_dict().items()})

    ticket = [*(["--init_dir", init_dir] if init_dir else []), *(["--mask_dir", mask_dir] if mask_dir else [])]
    main_train.main(tiny_args(cifar10_dir, save_dir, "--epochs", str(EPOCHS), *ticket, *extra),
                    events=runners.RunEvents(round_start=[keep_start]))
    return captured["start"]


def check_retrain_outputs(save_dir: str, expected_remaining: float) -> None:
    present = set(os.listdir(save_dir))
    assert {"checkpoint.pth.tar", "model_SA_best.pth.tar", "net_train.png", "epochs.csv", "rounds.csv",
            "layers.csv", "layers.png"} <= present
    assert not [f for f in present if f.startswith(".tmp")]
    rows = read_csv(os.path.join(save_dir, "epochs.csv"))
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))
    for row in rows:
        assert float(row["remaining_weights"]) == pytest.approx(expected_remaining, abs=0.01)
        assert int(row["train_examples"]) == 180
    # main_train.py never rewinds the learning rate
    assert float(rows[0]["lr"]) == pytest.approx(0.1)
    checkpoint = load_checkpoint(os.path.join(save_dir, "checkpoint.pth.tar"))
    assert {"state", "result", "epoch", "state_dict", "best_sa", "optimizer", "scheduler"} <= set(checkpoint)
    assert checkpoint["epoch"] == EPOCHS
    assert all(len(checkpoint["result"][k]) == EPOCHS for k in ("train", "ta", "test_ta"))
    model = build_model("res20s", 10)
    mask = pruner.extract_mask(checkpoint["state_dict"])
    if mask:
        pruner.apply_mask(model, mask)
    model.load_state_dict(checkpoint["state_dict"])
    assert pruner.remaining_weights(model) == pytest.approx(expected_remaining, abs=0.01)
    rounds = read_csv(os.path.join(save_dir, "rounds.csv"))
    assert len(rounds) == 1 and float(rounds[0]["remaining_weights"]) == pytest.approx(expected_remaining, abs=0.01)
    layers = read_csv(os.path.join(save_dir, "layers.csv"))  # one round: this run's mask, layer by layer
    counts = {key[:-len(pruner.MASK_SUFFIX)]: int(value.sum()) for key, value in mask.items()}
    assert [row["round"] for row in layers] == ["0"] * len(layers)
    assert {row["layer"]: int(row["remaining"]) for row in layers if row["layer"] in counts} == counts
    convs = [row for row in layers if row["layer"] != "fc"]
    assert 100.0 * sum(int(r["remaining"]) for r in convs) / sum(int(r["weights"]) for r in convs) == \
        pytest.approx(expected_remaining, abs=0.01)


def check_start(start: Dict[str, torch.Tensor], init: Dict[str, torch.Tensor], mask: Dict[str, torch.Tensor]) -> None:
    """Training started from ``init`` (dense keys) with exactly ``mask`` applied."""
    assert pruner.extract_mask(start).keys() == mask.keys()
    for key, value in mask.items():
        assert torch.equal(start[key], value.to(start[key].dtype)), f"{key} differs from --mask_dir's mask"
    dense = pruner.dense_state_dict(start)
    init = pruner.dense_state_dict(init)
    assert set(dense) == set(init)
    for key in init:
        assert torch.equal(dense[key], init[key]), f"{key} does not start from --init_dir's weights"


def test_retrain_from_our_round_checkpoint(cifar10_dir: str, imp_dir: str, tmp_path: Any,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    source = os.path.join(imp_dir, "1checkpoint.pth.tar")
    start = retrain(cifar10_dir, str(tmp_path / "retrain"), source, source, monkeypatch)
    checkpoint = load_checkpoint(source)
    mask = pruner.extract_mask(checkpoint["state_dict"])
    assert mask_percent(mask) == pytest.approx(80.0, abs=0.01)
    check_start(start, checkpoint["init_weight"], mask)
    check_retrain_outputs(str(tmp_path / "retrain"), 80.0)


def test_retrain_from_rewind_weight_file_and_round_mask(cifar10_dir: str, imp_dir: str, tmp_path: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """--init_dir may be a plain state_dict (epoch_K_rewind_weight.pt)."""
    init_file = os.path.join(imp_dir, "epoch_1_rewind_weight.pt")
    mask_file = os.path.join(imp_dir, "1checkpoint.pth.tar")
    start = retrain(cifar10_dir, str(tmp_path / "retrain"), init_file, mask_file, monkeypatch)
    check_start(start, load_checkpoint(init_file), pruner.extract_mask(load_checkpoint(mask_file)["state_dict"]))
    check_retrain_outputs(str(tmp_path / "retrain"), 80.0)


def test_published_checkpoint_loads_safely_and_retrains(cifar10_dir: str, published_checkpoint: str,
                                                        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = load_checkpoint(published_checkpoint)  # the safe (weights_only) loader
    assert isinstance(checkpoint["sequence"], np.ndarray)
    assert np.array_equal(checkpoint["sequence"], np.arange(180))
    mask = pruner.extract_mask(checkpoint["state_dict"])
    assert len(mask) == len([m for m in build_model("res20s", 10).modules() if isinstance(m, nn.Conv2d)])
    expected = mask_percent(mask)
    assert expected == pytest.approx(80.0, abs=0.01)
    start = retrain(cifar10_dir, str(tmp_path / "retrain"), published_checkpoint, published_checkpoint, monkeypatch)
    check_start(start, checkpoint["init_weight"], mask)
    check_retrain_outputs(str(tmp_path / "retrain"), expected)


def test_retrain_final_ticket(cifar10_dir: str, imp_dir: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ticket_path = os.path.join(imp_dir, "final_ticket.pth.tar")
    ticket = load_checkpoint(ticket_path)
    mask = pruner.extract_mask(ticket["state_dict"])
    assert mask_percent(mask) == pytest.approx(64.0, abs=0.01)
    start = retrain(cifar10_dir, str(tmp_path / "retrain"), ticket_path, ticket_path, monkeypatch)
    check_start(start, ticket["init_weight"], mask)
    check_retrain_outputs(str(tmp_path / "retrain"), 64.0)


def seeded_init(seed: int = 0) -> Dict[str, torch.Tensor]:
    """The weights a seeded run initialises res20s with (tiny_args passes --seed 0)."""
    torch.manual_seed(seed)
    return build_model("res20s", 10).state_dict()


def test_mask_alone_retrains_the_mask_from_a_fresh_initialisation(cifar10_dir: str, imp_dir: str, tmp_path: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The lottery-ticket random re-initialisation control: same mask, fresh seeded weights."""
    source = os.path.join(imp_dir, "1checkpoint.pth.tar")
    save_dir = str(tmp_path / "reinit")
    start = retrain(cifar10_dir, save_dir, None, source, monkeypatch)
    ticket = load_checkpoint(source)
    mask = pruner.extract_mask(ticket["state_dict"])
    fresh = seeded_init(0)
    check_start(start, fresh, mask)
    rewind = pruner.dense_state_dict(ticket["init_weight"])
    conv = next(k for k in rewind if k.endswith("conv1.weight"))
    assert not torch.equal(pruner.dense_state_dict(start)[conv], rewind[conv])
    check_retrain_outputs(save_dir, 80.0)
    with open(os.path.join(save_dir, "args.json")) as handle:
        record = json.load(handle)["ticket"]
    assert record["reinit"] is True and record["source_round"] == 1 and record["init_dir"] is None
    assert record["random_mask"] is False
    assert record["source_run"] == os.path.abspath(imp_dir)


def test_init_alone_trains_those_weights_dense_and_neither_trains_the_dense_network(
        cifar10_dir: str, imp_dir: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    init_file = os.path.join(imp_dir, "epoch_1_rewind_weight.pt")
    start = retrain(cifar10_dir, str(tmp_path / "init_only"), init_file, None, monkeypatch)
    assert not pruner.extract_mask(start)
    init = load_checkpoint(init_file)
    assert all(torch.equal(start[k], init[k]) for k in init)
    check_retrain_outputs(str(tmp_path / "init_only"), 100.0)
    start = retrain(cifar10_dir, str(tmp_path / "dense"), None, None, monkeypatch)
    fresh = seeded_init(0)
    assert not pruner.extract_mask(start) and all(torch.equal(start[k], fresh[k]) for k in fresh)
    check_retrain_outputs(str(tmp_path / "dense"), 100.0)


def test_result_holds_remain_weight_and_args_the_ticket_source(cifar10_dir: str, imp_dir: str, tmp_path: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ticket_path = os.path.join(imp_dir, "final_ticket.pth.tar")
    save_dir = str(tmp_path / "retrain")
    retrain(cifar10_dir, save_dir, ticket_path, ticket_path, monkeypatch)
    result = load_checkpoint(os.path.join(save_dir, "checkpoint.pth.tar"))["result"]
    assert result["remain_weight"] == pytest.approx(64.0, abs=0.01)
    with open(os.path.join(save_dir, "args.json")) as handle:
        info = json.load(handle)
    assert info["script"] == "main_train.py"
    assert info["ticket"] == {"init_dir": os.path.abspath(ticket_path), "mask_dir": os.path.abspath(ticket_path),
                              "source_run": os.path.abspath(imp_dir), "source_round": 2, "reinit": False,
                              "random_mask": False}


# ----------------------------------------------------------------------------- the random-mask control
def layer_counts(mask: Dict[str, torch.Tensor]) -> Dict[str, int]:
    return {key: int(value.sum()) for key, value in mask.items()}


def test_random_mask_keeps_each_layer_count_and_the_ticket_weights(cifar10_dir: str, imp_dir: str, tmp_path: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """open_lth's randomly_prune: the ticket's weights, a seeded random mask of its per-layer counts."""
    ticket_path = os.path.join(imp_dir, "final_ticket.pth.tar")
    ticket = load_checkpoint(ticket_path)
    ticket_mask = pruner.extract_mask(ticket["state_dict"])
    save_dir = str(tmp_path / "random_mask")
    start = retrain(cifar10_dir, save_dir, ticket_path, ticket_path, monkeypatch, "--random_mask")
    mask = pruner.extract_mask(start)
    assert layer_counts(mask) == layer_counts(ticket_mask)
    assert pruner.mask_distance(mask, ticket_mask, 1) > 0
    big = [k for k, v in ticket_mask.items() if v.numel() >= 2000]
    assert all(not torch.equal(mask[k], ticket_mask[k]) for k in big)  # every large layer is redrawn
    check_start(start, ticket["init_weight"], mask)  # the ticket's weights under the new mask
    check_retrain_outputs(save_dir, 64.0)
    with open(os.path.join(save_dir, "args.json")) as handle:
        record = json.load(handle)["ticket"]
    assert record["random_mask"] is True and record["reinit"] is False
    # seeded: the same seed draws the same mask, another seed another one
    again = pruner.extract_mask(retrain(cifar10_dir, str(tmp_path / "again"), ticket_path, ticket_path,
                                        monkeypatch, "--random_mask"))
    assert all(torch.equal(again[k], mask[k]) for k in mask)
    other = pruner.extract_mask(retrain(cifar10_dir, str(tmp_path / "other"), ticket_path, ticket_path,
                                        monkeypatch, "--random_mask", "--seed", "1"))
    assert layer_counts(other) == layer_counts(ticket_mask) and pruner.mask_distance(other, mask, 1) > 0


def test_random_mask_stream_is_its_own() -> None:
    """The control's mask comes from its own derived stream (not the training or pruning ones)."""
    streams = [utils.STREAM_TRAIN, utils.STREAM_RANDOM_PRUNE, utils.STREAM_SELECT,
               utils.STREAM_RANDOM_MASK]
    assert len(set(streams)) == len(streams)
    mask = {"a.weight_mask": (torch.rand(4, 50, generator=torch.Generator().manual_seed(0)) > 0.5).float()}
    first = pruner.random_mask_like(mask, utils.make_generator(torch.device("cpu"), 3, utils.STREAM_RANDOM_MASK))
    second = pruner.random_mask_like(mask, utils.make_generator(torch.device("cpu"), 3, utils.STREAM_RANDOM_MASK))
    assert torch.equal(first["a.weight_mask"], second["a.weight_mask"])
    assert int(first["a.weight_mask"].sum()) == int(mask["a.weight_mask"].sum())
    assert set(first["a.weight_mask"].unique().tolist()) <= {0.0, 1.0}


def test_random_mask_without_mask_dir_is_one_line(cifar10_dir: str, tmp_path: Any) -> None:
    with pytest.raises(UserError, match="--random_mask needs --mask_dir"):
        main_train.main(tiny_args(cifar10_dir, str(tmp_path / "x"), "--epochs", "1", "--random_mask"))
