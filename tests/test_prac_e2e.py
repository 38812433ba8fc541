"""main_PrAC_imp.py end to end on the tiny CIFAR-10 set with a non-identity split (SPEC §4,
§6, §9), and training on a saved subset with main_imp.py --train_subset."""
import os
from typing import Any, Dict

import numpy as np
import pytest
import torch

import main_imp
import main_PrAC_imp
import pruner
from checkpoint import load_checkpoint
from dataset import load_data
from models import build_model
from prac import forgetting_events, select_by_forgetting
from runners import default_eval_batch_size
from tests.conftest import tiny_args
from tests.helpers import read_csv
from training import LoopSettings, predict
from utils import UserError

EPOCHS = 3
ROUNDS = 3
TRAIN_NUMBER = 180
PRAC_KEYS = {"state", "result", "epoch", "state_dict", "best_sa", "optimizer", "scheduler", "init_weight",
             "prediction", "sequence", "remain_para", "distance_queue", "last_mask", "start_record"}

def loaded_model(state_dict: Dict[str, torch.Tensor], arch: str = "res20s") -> torch.nn.Module:
    model = build_model(arch, 10)
    mask = pruner.extract_mask(state_dict)
    if mask:
        pruner.apply_mask(model, mask)
    model.load_state_dict(state_dict)
    return model.eval()


def as_array(value: Any) -> np.ndarray:
    return np.asarray(value.cpu().numpy() if torch.is_tensor(value) else value)


def records_matrix(prediction: Any, examples: int = 200) -> np.ndarray:
    """The 'prediction' entry as an examples x epochs array: ours may be a matrix, the
    published layout is a list with one (examples x 1) array per epoch."""
    if isinstance(prediction, (list, tuple)):
        if not prediction:
            return np.empty((examples, 0), dtype=np.int8)
        return np.concatenate([as_array(p).reshape(-1, 1) for p in prediction], axis=1)
    return as_array(prediction)


@pytest.fixture(scope="module")
def prac_run(cifar10_dir: str, shuffled_split: str, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    save_dir = str(tmp_path_factory.mktemp("prac") / "run")
    main_PrAC_imp.main(tiny_args(cifar10_dir, save_dir, "--split_file", shuffled_split, "--epochs", str(EPOCHS),
                                 "--pruning_times", str(ROUNDS)))
    split = np.load(shuffled_split)
    sets = [np.load(os.path.join(save_dir, f"{k}prac_set.npy")) for k in range(ROUNDS)]
    return {"save_dir": save_dir, "split": split, "sets": sets,
            "rounds": read_csv(os.path.join(save_dir, "rounds.csv")),
            "epochs": read_csv(os.path.join(save_dir, "epochs.csv"))}


def test_files_and_keys(prac_run: Dict[str, Any]) -> None:
    save_dir = prac_run["save_dir"]
    present = set(os.listdir(save_dir))
    expected = {"final_ticket.pth.tar", "epochs.csv", "rounds.csv", "args.json", "epoch_3_rewind_weight.pt"}
    for k in range(ROUNDS):
        expected |= {f"{k}checkpoint.pth.tar", f"{k}model_SA_best.pth.tar", f"{k}net_train.png", f"{k}prac_set.npy"}
    assert expected <= present, f"missing: {expected - present}"
    assert not [f for f in present if f.startswith(".tmp")]
    for k in range(ROUNDS):
        checkpoint = load_checkpoint(os.path.join(save_dir, f"{k}checkpoint.pth.tar"))
        assert PRAC_KEYS <= set(checkpoint), f"round {k}: missing {PRAC_KEYS - set(checkpoint)}"
        assert checkpoint["state"] == k


def test_round0_trains_on_first_train_number_entries(prac_run: Dict[str, Any]) -> None:
    assert np.array_equal(np.sort(prac_run["sets"][0]), np.sort(prac_run["split"][:TRAIN_NUMBER]))
    assert int(prac_run["rounds"][0]["train_examples"]) == TRAIN_NUMBER
    assert int(prac_run["rounds"][0]["epochs_planned"]) == EPOCHS


def test_sets_sizes_and_epoch_scaling(prac_run: Dict[str, Any]) -> None:
    rounds, epochs, sets = prac_run["rounds"], prac_run["epochs"], prac_run["sets"]
    assert [int(r["round"]) for r in rounds] == list(range(ROUNDS))
    validation = set(prac_run["split"][TRAIN_NUMBER:].tolist())
    for k, row in enumerate(rounds):
        size = len(sets[k])
        assert size > 0
        assert len(np.unique(sets[k])) == size, f"round {k} set has duplicates"
        assert not validation & set(sets[k].tolist()), f"round {k} set holds validation indices"
        assert int(row["train_examples"]) == size
        planned = max(1, int(EPOCHS * size / TRAIN_NUMBER)) if k else EPOCHS
        assert int(row["epochs_planned"]) == planned
        rows = [r for r in epochs if int(r["round"]) == k]
        assert len(rows) == int(row["epochs_run"]) <= planned
        if not row["eb_stop_epoch"]:
            assert int(row["epochs_run"]) == planned
        assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1))
        assert all(int(r["train_examples"]) == size for r in rows)
        # PrAC rounds never rewind the learning rate: each starts at --lr
        assert float(rows[0]["lr"]) == pytest.approx(0.1)
    # the test would be vacuous if data pruning never pruned anything
    assert len(sets[1]) < TRAIN_NUMBER


def test_checkpoint_sequence_and_records(prac_run: Dict[str, Any]) -> None:
    for k in range(ROUNDS):
        checkpoint = load_checkpoint(os.path.join(prac_run["save_dir"], f"{k}checkpoint.pth.tar"))
        sequence = as_array(checkpoint["sequence"])
        assert np.array_equal(sequence, prac_run["sets"][k]), f"round {k}: sequence != {k}prac_set.npy"
        records = records_matrix(checkpoint["prediction"])
        assert records.shape == (200, checkpoint["epoch"])
        inside = np.zeros(200, dtype=bool)
        inside[sequence] = True
        assert (records[~inside] == -1).all(), "an example outside the sequence has a record"
        assert np.isin(records[inside], [0, 1]).all(), "an example of the sequence lacks a record"


def test_next_set_is_forgetting_part_union_pruning_aware_part(prac_run: Dict[str, Any], cifar10_dir: str,
                                                                shuffled_split: str, device: torch.device) -> None:
    """The predictions are recomputed as the run made them: on its device, in its evaluation
    batches (the process's fp32 and cuDNN settings are still the run's), so a near tie
    cannot flip between the run and this check."""
    save_dir, split = prac_run["save_dir"], prac_run["split"]
    data = load_data("cifar10", cifar10_dir, shuffled_split, download=False).to(device)
    train_positions = torch.as_tensor(split[:TRAIN_NUMBER], device=device)
    settings = LoopSettings(batch_size=1, eval_batch_size=default_eval_batch_size(device, data.info.image_size))

    def predictions(path: str) -> np.ndarray:
        model = loaded_model(load_checkpoint(path)["state_dict"]).to(device)
        return predict(model, data.train, settings, train_positions).cpu().numpy()

    dense = predictions(os.path.join(save_dir, "0model_SA_best.pth.tar"))
    for k in range(ROUNDS - 1):
        checkpoint = load_checkpoint(os.path.join(save_dir, f"{k}checkpoint.pth.tar"))
        events = forgetting_events(records_matrix(checkpoint["prediction"]))
        forgetting = select_by_forgetting(events, "zero_out", 0.2, k, 0, TRAIN_NUMBER)
        next_set = prac_run["sets"][k + 1]
        assert set(forgetting.tolist()) <= set(next_set.tolist())
        row = prac_run["rounds"][k + 1]
        assert int(row["forgetting_part"]) == len(forgetting)
        if k == 0:
            aware = np.empty(0, dtype=np.int64)
        else:
            pruned = predictions(os.path.join(save_dir, f"{k}model_SA_best.pth.tar"))
            aware = split[:TRAIN_NUMBER][dense != pruned]
        assert int(row["pruning_aware_part"]) == len(aware)
        expected = np.union1d(forgetting, aware)
        if expected.size:
            assert np.array_equal(np.sort(next_set), expected)
        else:  # SPEC §9: an empty PrAC set keeps the previous training set
            assert np.array_equal(np.sort(next_set), np.sort(prac_run["sets"][k]))


def test_rounds_rewind_to_initialisation(prac_run: Dict[str, Any]) -> None:
    save_dir = prac_run["save_dir"]
    first = load_checkpoint(os.path.join(save_dir, "0checkpoint.pth.tar"))["init_weight"]
    torch.manual_seed(0)
    fresh = build_model("res20s", 10).state_dict()
    assert set(first) == set(fresh) and all(torch.equal(first[k], fresh[k]) for k in fresh)
    for k in range(1, ROUNDS):
        init = load_checkpoint(os.path.join(save_dir, f"{k}checkpoint.pth.tar"))["init_weight"]
        assert all(torch.equal(init[key], first[key]) for key in first)


def test_final_ticket(prac_run: Dict[str, Any]) -> None:
    ticket = load_checkpoint(os.path.join(prac_run["save_dir"], "final_ticket.pth.tar"))
    assert pruner.remaining_weights(loaded_model(ticket["state_dict"])) == pytest.approx(100 * 0.8 ** ROUNDS, abs=0.01)
    for k, row in enumerate(prac_run["rounds"]):
        assert float(row["remaining_weights"]) == pytest.approx(100 * 0.8 ** k, abs=0.01)
    weights = pruner.dense_state_dict(ticket["state_dict"])
    init = pruner.dense_state_dict(ticket["init_weight"])
    assert all(torch.equal(weights[k], init[k]) for k in init)


@pytest.fixture(scope="module")
def subset_file(shuffled_split: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    split = np.load(shuffled_split)
    subset = np.random.default_rng(5).choice(split[:TRAIN_NUMBER], size=90, replace=False)
    path = str(tmp_path_factory.mktemp("subset") / "subset.npy")
    np.save(path, subset)
    return path


def test_train_subset_with_another_arch(cifar10_dir: str, shuffled_split: str, subset_file: str,
                                        tmp_path: Any) -> None:
    """A saved set trains another architecture with main_imp.py, epochs scaled by its size."""
    save_dir = str(tmp_path / "transfer")
    epochs = 2
    argv = tiny_args(cifar10_dir, save_dir, "--split_file", shuffled_split, "--train_subset", subset_file,
                     "--epochs", str(epochs), "--pruning_times", "1")
    argv[argv.index("--arch") + 1] = "res56s"
    main_imp.main(argv)
    scaled = max(1, int(epochs * 90 / TRAIN_NUMBER))
    rows = read_csv(os.path.join(save_dir, "epochs.csv"))
    assert len(rows) == scaled
    assert all(int(r["train_examples"]) == 90 for r in rows)
    rounds = read_csv(os.path.join(save_dir, "rounds.csv"))
    assert int(rounds[0]["train_examples"]) == 90 and int(rounds[0]["epochs_planned"]) == scaled
    checkpoint = load_checkpoint(os.path.join(save_dir, "0checkpoint.pth.tar"))
    assert np.array_equal(np.sort(as_array(checkpoint["sequence"])), np.sort(np.load(subset_file)))
    model = loaded_model(checkpoint["state_dict"], arch="res56s")
    assert sum(p.numel() for p in model.parameters()) > 800_000  # it really is res56s


def test_train_subset_with_validation_index_is_refused(cifar10_dir: str, shuffled_split: str,
                                                       tmp_path: Any) -> None:
    split = np.load(shuffled_split)
    path = str(tmp_path / "bad_subset.npy")
    np.save(path, np.concatenate([split[:10], split[-1:]]))
    with pytest.raises(UserError, match="validation"):
        main_imp.main(tiny_args(cifar10_dir, str(tmp_path / "run"), "--split_file", shuffled_split,
                                "--train_subset", path, "--epochs", "2", "--pruning_times", "1"))
