"""Shared fixtures: tiny data sets in the real on-disk formats, script runners, and the
device the end-to-end tests run on (``pytest --device cpu|cuda``, default cpu)."""
import os
import subprocess
import sys
from typing import Any, List, Optional, Sequence

import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests import datasets_on_disk  # noqa: E402

# One thread per process when pytest-xdist runs the tests in parallel workers (test.sh runs one
# per core); two on a 2-core machine otherwise. Oversubscribed cores run many times slower.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, torch.get_num_threads())))

TINY_TRAIN = 200  # 180 train + 20 validation after the 90/10 split
TINY_TEST = 60

DEVICES = ("cpu", "cuda")
# The device of this session, set once in pytest_configure from --device. tiny_args reads it
# here rather than from a fixture: it is a plain function called from ~60 places (fixtures,
# parametrize tables of lambdas, helpers shared between modules), and threading a fixture
# through all of them would change every call site for no gain.
DEVICE = "cpu"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", choices=DEVICES, default="cpu",
                     help="device of every test that trains, evaluates, predicts, resumes or benchmarks "
                          "(default: cpu)")
    parser.addoption("--full", action="store_true",
                     help="also run the full tier (tests marked full: fault injection at every write, "
                          "torchrun jobs, sweeps, streamed trees, every bad input); CI runs it")


def pytest_configure(config: pytest.Config) -> None:
    global DEVICE
    DEVICE = config.getoption("--device")
    if DEVICE == "cuda" and not torch.cuda.is_available():
        # One line and a non-zero exit, not one failure per test.
        raise pytest.UsageError(f"--device cuda: torch {torch.__version__} sees no CUDA device "
                                f"(built with CUDA {torch.version.cuda}); run with --device cpu")


SLURM_SKIPPED: List[str] = []  # why the slurm tests were skipped, printed after the run


def slurm_unavailable() -> Optional[str]:
    """Why no SLURM scheduler answers here (sinfo fails), or None when one does."""
    try:
        result = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True, timeout=20)
    except FileNotFoundError:
        return "no SLURM here (sinfo is not installed); start one with: bash .ci/slurm.sh start"
    except subprocess.TimeoutExpired:
        return "the SLURM controller did not answer sinfo in 20 s"
    if result.returncode != 0:
        message = (result.stderr.strip().splitlines() or ["no message"])[0]
        return f"no SLURM scheduler answers (sinfo: {message}); start one with: bash .ci/slurm.sh start"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    if any(item.get_closest_marker("slurm") for item in items):
        reason = slurm_unavailable()
        if reason:
            SLURM_SKIPPED.append(reason)
            for item in items:
                if item.get_closest_marker("slurm"):
                    item.add_marker(pytest.mark.skip(reason=f"slurm: {reason}"))
    for item in items:
        if DEVICE != "cpu" and item.get_closest_marker("cpu_only"):
            item.add_marker(pytest.mark.skip(reason="cpu_only: runs with --device cpu"))
        if DEVICE != "cuda" and item.get_closest_marker("cuda_only"):
            item.add_marker(pytest.mark.skip(reason="cuda_only: runs with --device cuda"))
        if not config.getoption("--full") and item.get_closest_marker("full"):
            item.add_marker(pytest.mark.skip(reason="full tier: run with --full"))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for reason in SLURM_SKIPPED:
        terminalreporter.write_line(f"tests marked slurm skipped: {reason}")


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The session's device (``--device``) for tests that call library functions directly."""
    return torch.device(DEVICE)


@pytest.fixture(scope="session")
def cifar10_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return datasets_on_disk.write_cifar10(str(tmp_path_factory.mktemp("cifar10")), TINY_TRAIN, TINY_TEST)


@pytest.fixture(scope="session")
def cifar100_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return datasets_on_disk.write_cifar100(str(tmp_path_factory.mktemp("cifar100")), TINY_TRAIN, TINY_TEST)


@pytest.fixture(scope="session")
def fashion_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return datasets_on_disk.write_fashion_mnist(str(tmp_path_factory.mktemp("fashion")), TINY_TRAIN, TINY_TEST)


@pytest.fixture(scope="session")
def tiny_imagenet_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return datasets_on_disk.write_tiny_imagenet(str(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="session")
def shuffled_split(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A non-identity split file for the tiny CIFAR-10 set."""
    path = str(tmp_path_factory.mktemp("split") / "split.npy")
    np.save(path, np.random.default_rng(11).permutation(TINY_TRAIN))
    return path


def tiny_args(data_dir: str, save_dir: str, *extra: str) -> List[str]:
    """Common flags for a fast run on the tiny CIFAR-10 set, on the session's device."""
    return ["--data", data_dir, "--dataset", "cifar10", "--arch", "res20s", "--batch_size", "64",
            "--seed", "0", "--no_progress", "--print_freq", "1000", "--device", DEVICE, "--save_dir", save_dir,
            *extra]


def run_script(script: str, args: Sequence[str], threads: int = 1) -> subprocess.CompletedProcess:
    """Runs a script as a user would, in a subprocess."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return subprocess.run([sys.executable, os.path.join(REPO, script), *args], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=600)
