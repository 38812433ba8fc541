"""The device option of the test suite (``pytest --device cpu|cuda``) and what must hold on
each device: a seeded run repeated gives identical results; on CUDA, seeded runs use
deterministic cuDNN kernels, and ``--compile`` and bf16 runs complete with the checkpoint
format unchanged.
"""
import json
import os
import subprocess
import sys
from typing import Any, Dict

import pytest
import torch

import main_imp
import main_PrAC_imp
from tests.conftest import REPO, tiny_args
from tests.helpers import assert_same_run
from utils import load_checkpoint


def recorded_device(save_dir: str) -> str:
    with open(os.path.join(save_dir, "args.json")) as handle:
        return json.load(handle)["device"]


@pytest.fixture(scope="module")
def twice(cifar10_dir: str, shuffled_split: str, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    """The same seeded PrAC search (2 rounds x 2 epochs) run twice into two folders."""
    root = tmp_path_factory.mktemp("twice")
    runs = {}
    for name in ("first", "second"):
        runs[name] = str(root / name)
        main_PrAC_imp.main(tiny_args(cifar10_dir, runs[name], "--split_file", shuffled_split, "--epochs", "2",
                                     "--pruning_times", "2", "--decreasing_lr", "1"))
    return runs


def test_runs_on_the_session_device(twice: Dict[str, str], device: torch.device) -> None:
    assert recorded_device(twice["first"]).startswith(device.type)


def test_seeded_run_twice_is_identical(twice: Dict[str, str]) -> None:
    """Weights, masks, optimiser state, records, PrAC sets and result tables, bit for bit."""
    assert_same_run(twice["first"], twice["second"])


@pytest.mark.cpu_only
def test_device_option_without_cuda_is_one_line() -> None:
    """``pytest --device cuda`` where torch sees no GPU stops before collecting anything."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--device", "cuda",
                           os.path.join("tests", "test_device.py")],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode != 0
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "--device cuda" in lines[0] and "sees no CUDA device" in lines[0], lines


# ============================================================================ CUDA only
@pytest.mark.cuda_only
def test_seeded_runs_use_deterministic_cudnn_and_unseeded_ones_benchmark(cifar10_dir: str, tmp_path: Any) -> None:
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    try:
        main_imp.main(tiny_args(cifar10_dir, str(tmp_path / "seeded"), "--epochs", "1", "--pruning_times", "1"))
        assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == (True, False)
        unseeded = [a for a in tiny_args(cifar10_dir, str(tmp_path / "unseeded"), "--epochs", "1",
                                         "--pruning_times", "1") if a not in ("--seed", "0")]
        main_imp.main(unseeded)
        assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == (False, True)
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


@pytest.mark.cuda_only
@pytest.mark.parametrize("runtime", [("--compile",), ("--precision", "bf16")], ids=["compile", "bf16"])
def test_compiled_and_bf16_searches_prune_and_save_the_published_format(cifar10_dir: str, tmp_path: Any,
                                                                       runtime: tuple) -> None:
    """Two rounds, so the pruned (masked) model runs through torch.compile / autocast too."""
    save_dir = str(tmp_path / "run")
    main_imp.main(tiny_args(cifar10_dir, save_dir, "--epochs", "1", "--pruning_times", "2", *runtime))
    assert recorded_device(save_dir).startswith("cuda")
    checkpoint = load_checkpoint(os.path.join(save_dir, "1checkpoint.pth.tar"))
    keys = list(checkpoint["state_dict"])
    assert not [k for k in keys if "_orig_mod" in k], "compiled wrapper leaked into the checkpoint"
    assert any(k.endswith("weight_mask") for k in keys)
    assert all(v.device.type == "cpu" for v in checkpoint["state_dict"].values())
