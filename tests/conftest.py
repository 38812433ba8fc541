"""Shared fixtures: tiny data sets in the real on-disk formats and script runners."""
import os
import subprocess
import sys
from typing import List, Sequence

import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests import datasets_on_disk  # noqa: E402

# Two threads per process on a 2-core machine; keep tests from oversubscribing.
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

TINY_TRAIN = 200  # 180 train + 20 validation after the 90/10 split
TINY_TEST = 60


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
    """Common flags for a fast run on the tiny CIFAR-10 set."""
    return ["--data", data_dir, "--dataset", "cifar10", "--arch", "res20s", "--batch_size", "64",
            "--seed", "0", "--no_progress", "--print_freq", "1000", "--save_dir", save_dir, *extra]


def run_script(script: str, args: Sequence[str], threads: int = 1) -> subprocess.CompletedProcess:
    """Runs a script as a user would, in a subprocess."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return subprocess.run([sys.executable, os.path.join(REPO, script), *args], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=600)
