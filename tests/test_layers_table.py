"""Per-layer remaining weights for every round (issue 17): layers.csv (round, layer, weights,
remaining) and layers.png in every run's save_dir, rewritten exactly on resume."""
import csv
import os
import shutil
from typing import Dict, List

import pytest
from torch import nn

import main_imp
import pruner
from checkpoint import load_checkpoint
from models import build_model
from outputs import LAYER_FIELDS, plot_layers
from tests.conftest import tiny_args

PNG_MAGIC = b"\x89PNG"


def read_rows(path: str) -> List[Dict[str, str]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == LAYER_FIELDS == ["round", "layer", "weights", "remaining"]
        return list(reader)


def model_layers() -> List[str]:
    model = build_model("res20s", 10)
    return [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def assert_png(path: str) -> None:
    with open(path, "rb") as handle:
        assert handle.read(4) == PNG_MAGIC


@pytest.fixture(scope="module")
def imp_run(cifar10_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    root = tmp_path_factory.mktemp("layers")
    argv = tiny_args(cifar10_dir, str(root / "imp"), "--epochs", "1", "--pruning_times", "3", "--rewind_epoch", "0",
                     "--prune_mode", "layerwise")
    main_imp.main(argv)
    return {"dir": str(root / "imp"), "root": str(root), "argv": argv}


def test_every_round_has_a_row_per_layer_with_its_mask_count(imp_run: Dict[str, str]) -> None:
    save_dir = imp_run["dir"]
    rows = read_rows(os.path.join(save_dir, "layers.csv"))
    layers = model_layers()
    assert [(int(r["round"]), r["layer"]) for r in rows] == [(k, name) for k in range(3) for name in layers]
    sizes = dict(build_model("res20s", 10).state_dict())
    for row in rows:
        assert int(row["weights"]) == sizes[row["layer"] + ".weight"].numel()
        if int(row["round"]) == 0 or row["layer"] == "fc":  # dense round 0; conv scope leaves fc dense
            assert int(row["remaining"]) == int(row["weights"])
    for k in (1, 2):  # the mask round k trained with is in its checkpoint
        mask = pruner.extract_mask(load_checkpoint(os.path.join(save_dir, f"{k}checkpoint.pth.tar"))["state_dict"])
        got = {r["layer"]: int(r["remaining"]) for r in rows if int(r["round"]) == k}
        assert {name: got[name] for name in got if name != "fc"} == \
            {key[:-len(pruner.MASK_SUFFIX)]: int(value.sum()) for key, value in mask.items()}
        # layer-wise: each layer keeps 0.8^k of its weights (rounded per round)
        conv = next(r for r in rows if int(r["round"]) == k and r["layer"] == "layer3.2.conv2")
        assert int(conv["remaining"]) / int(conv["weights"]) == pytest.approx(0.8 ** k, abs=1e-3)
    assert_png(os.path.join(save_dir, "layers.png"))


def test_a_resumed_run_writes_each_row_once(imp_run: Dict[str, str], cifar10_dir: str) -> None:
    """Resumed at the end of round 1 (its rows written, the next round not started) and in
    round 2: the table equals the uninterrupted run's, no row twice."""
    for tag in (1, 2):
        copy = os.path.join(imp_run["root"], f"resumed{tag}")
        shutil.copytree(imp_run["dir"], copy)
        argv = list(imp_run["argv"])
        argv[argv.index("--save_dir") + 1] = copy
        main_imp.main(argv + ["--resume", "--checkpoint", os.path.join(copy, f"{tag}checkpoint.pth.tar")])
        assert read_rows(os.path.join(copy, "layers.csv")) == read_rows(os.path.join(imp_run["dir"], "layers.csv"))
        assert_png(os.path.join(copy, "layers.png"))


def test_plot_layers_draws_any_rows(tmp_path) -> None:
    rows = [{"round": k, "layer": name, "weights": 10, "remaining": 10 - 2 * k}
            for k in range(3) for name in ("conv1", "fc")]
    plot_layers(rows, str(tmp_path / "layers.png"), title="t")
    assert_png(str(tmp_path / "layers.png"))
