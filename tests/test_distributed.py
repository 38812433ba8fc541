"""main_PrAC_imp.py under ``torchrun --nproc_per_node 2`` with gloo on the CPU, one thread per
process: every index trained once per epoch across the ranks, the same records and sets on
both ranks as rank 0 saved, files written by rank 0 alone, resumes across world sizes, and a
rank killed mid-epoch. Each rank saves what it trained, recorded and selected through
PRAC_LTH_TRACE."""
import collections
import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pytest

from checkpoint import load_checkpoint, records_matrix
from durable import DIE_AFTER_WRITE_ENV, TEMP_PREFIX, WRITE_LOG_ENV
from tests import datasets_on_disk
from tests.conftest import REPO, run_script, tiny_args
from tests.helpers import CLASSES, PER_CLASS, TEST_PER_CLASS, TRAIN_NUMBER, tree_args

pytestmark = pytest.mark.cpu_only  # gloo on the CPU; the GPU run is NCCL (README)

EPOCHS = 3
ROUNDS = 3
TIMEOUT = 600


def torchrun(args: Sequence[str], processes: int = 2, env: Optional[Dict[str, str]] = None,
             wait: bool = True) -> "subprocess.Popen[str]":
    """``torchrun --standalone --nproc_per_node N main_PrAC_imp.py args`` as a user runs it."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               os.path.join(REPO, "main_PrAC_imp.py"), *args]
    full_env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **(env or {}))
    process = subprocess.Popen(command, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    if wait:
        output, _ = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 0, output[-3000:]
    return process


def rounds_run(save_dir: str) -> List[int]:
    """Epochs run per round, from rounds.csv."""
    with open(os.path.join(save_dir, "rounds.csv"), newline="") as handle:
        return [int(row["epochs_run"]) for row in csv.DictReader(handle)]


def check_trained_once(save_dir: str, trace: str, rounds: Sequence[int], epochs_run: Sequence[int]) -> None:
    """Every index of each round's set trained exactly once per epoch across the two ranks."""
    for k in rounds:
        expected = np.sort(np.load(os.path.join(save_dir, f"{k}prac_set.npy")))
        for epoch in range(epochs_run[k]):
            parts = [np.load(os.path.join(trace, f"trained.r{k}.e{epoch}.rank{r}.npy")) for r in (0, 1)]
            assert all(part.size for part in parts), f"round {k} epoch {epoch}: a rank trained nothing"
            together = np.sort(np.concatenate(parts))
            np.testing.assert_array_equal(together, expected, err_msg=f"round {k} epoch {epoch}")


def check_complete(save_dir: str, rounds: int) -> None:
    epochs_run = rounds_run(save_dir)
    assert len(epochs_run) == rounds
    assert os.path.exists(os.path.join(save_dir, "final_ticket.pth.tar"))
    with open(os.path.join(save_dir, "epochs.csv"), newline="") as handle:
        keys = [(row["round"], row["epoch"]) for row in csv.DictReader(handle)]
    assert len(keys) == len(set(keys)) == sum(epochs_run), "epochs.csv holds a row twice or misses one"


@pytest.fixture(scope="module")
def two_process_run(cifar10_dir: str, shuffled_split: str, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    root = tmp_path_factory.mktemp("ddp")
    save_dir, trace, write_log = str(root / "run"), str(root / "trace"), str(root / "writes.txt")
    torchrun(tiny_args(cifar10_dir, save_dir, "--split_file", shuffled_split, "--epochs", str(EPOCHS),
                       "--pruning_times", str(ROUNDS)),
             env={"PRAC_LTH_TRACE": trace, WRITE_LOG_ENV: write_log})
    return {"save_dir": save_dir, "trace": trace, "write_log": write_log}


def test_each_index_trained_once_per_epoch(two_process_run: Dict[str, str]) -> None:
    save_dir, trace = two_process_run["save_dir"], two_process_run["trace"]
    check_complete(save_dir, ROUNDS)
    check_trained_once(save_dir, trace, range(ROUNDS), rounds_run(save_dir))


def test_records_and_sets_agree_with_saved(two_process_run: Dict[str, str]) -> None:
    save_dir, trace = two_process_run["save_dir"], two_process_run["trace"]
    epochs_run = rounds_run(save_dir)
    for k in range(ROUNDS - 1):
        records = [np.load(os.path.join(trace, f"records.r{k}.rank{r}.npy")) for r in (0, 1)]
        np.testing.assert_array_equal(records[0], records[1])
        saved = records_matrix(load_checkpoint(os.path.join(save_dir, f"{k}checkpoint.pth.tar"))["prediction"])
        np.testing.assert_array_equal(records[0], saved.numpy()[:, :epochs_run[k]])
        # each trained example has a record in every epoch: it was trained, once, by one rank
        trained = np.load(os.path.join(save_dir, f"{k}prac_set.npy"))
        assert (records[0][trained] >= 0).all() and (np.delete(records[0], trained, axis=0) < 0).all()
        selected = [np.load(os.path.join(trace, f"selected.r{k}.rank{r}.npy")) for r in (0, 1)]
        np.testing.assert_array_equal(selected[0], selected[1])
        np.testing.assert_array_equal(selected[0], np.load(os.path.join(save_dir, f"{k + 1}prac_set.npy")))


def test_files_written_once_by_rank_0(two_process_run: Dict[str, str]) -> None:
    save_dir = two_process_run["save_dir"]
    with open(two_process_run["write_log"]) as handle:
        writes = collections.Counter(os.path.basename(line.split("\t")[1].strip()) for line in handle)
    epochs_run = rounds_run(save_dir)
    for k in range(ROUNDS):
        # once when the round starts, then once per epoch; twice would mean rank 1 wrote too
        assert writes[f"{k}checkpoint.pth.tar"] == epochs_run[k] + 1
        assert writes[f"{k}prac_set.npy"] == 1
        assert writes[f"{k}net_train.png"] == 1
    assert writes["final_ticket.pth.tar"] == 1
    assert not [name for name in os.listdir(save_dir) if name.startswith(TEMP_PREFIX)]


@pytest.mark.full
def test_one_process_checkpoint_resumes_with_two(cifar10_dir: str, shuffled_split: str, tmp_path: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1-process run killed after the first checkpoint of round 1 finishes under torchrun."""
    save_dir, trace, write_log = str(tmp_path / "run"), str(tmp_path / "trace"), str(tmp_path / "writes.txt")
    args = tiny_args(cifar10_dir, save_dir, "--split_file", shuffled_split, "--epochs", str(EPOCHS),
                     "--pruning_times", "2")
    monkeypatch.setenv(WRITE_LOG_ENV, write_log)
    full = run_script("main_PrAC_imp.py", args)
    monkeypatch.delenv(WRITE_LOG_ENV)
    assert full.returncode == 0, full.stderr[-3000:]
    with open(write_log) as handle:
        names = [os.path.basename(line.split("\t")[1].strip()) for line in handle]
    shutil.rmtree(save_dir)
    die_after = names.index("1checkpoint.pth.tar") + 1  # the round-1 set and its first checkpoint are on disk
    monkeypatch.setenv(DIE_AFTER_WRITE_ENV, str(die_after))
    killed = run_script("main_PrAC_imp.py", args)
    monkeypatch.delenv(DIE_AFTER_WRITE_ENV)
    assert killed.returncode != 0
    assert load_checkpoint(os.path.join(save_dir, "1checkpoint.pth.tar"))["epoch"] == 0
    torchrun([*args, "--resume"], env={"PRAC_LTH_TRACE": trace})
    check_complete(save_dir, 2)
    check_trained_once(save_dir, trace, [1], rounds_run(save_dir))


def _rank_pid(parent: int, rank: int) -> Optional[int]:
    """The worker of ``rank`` among the children of torchrun's process ``parent``."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            with open(f"/proc/{name}/environ", "rb") as handle:
                if f"RANK={rank}".encode() in handle.read().split(b"\0"):
                    return int(name)
        except (OSError, ValueError, IndexError):
            continue
    return None


@pytest.mark.full
def test_rank_killed_mid_epoch_resumes_with_one(cifar10_dir: str, shuffled_split: str, tmp_path: Any) -> None:
    """SIGKILL of rank 1 in round 0's second epoch: the checkpoint of the first epoch stays
    intact and one process resumes the run to its end."""
    save_dir, trace = str(tmp_path / "run"), str(tmp_path / "trace")
    args = tiny_args(cifar10_dir, save_dir, "--split_file", shuffled_split, "--epochs", str(EPOCHS),
                     "--pruning_times", "2")
    process = torchrun(args, env={"PRAC_LTH_TRACE": trace}, wait=False)
    marker = os.path.join(trace, "trained.r0.e1.rank1.npy")  # rank 1 trained a batch of epoch 2
    deadline = time.time() + TIMEOUT
    while not os.path.exists(marker) and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    victim = _rank_pid(process.pid, 1)
    assert victim is not None, "rank 1 not found"
    os.kill(victim, signal.SIGKILL)
    output, _ = process.communicate(timeout=TIMEOUT)
    assert process.returncode != 0, output[-3000:]
    checkpoint = load_checkpoint(os.path.join(save_dir, "0checkpoint.pth.tar"))
    assert checkpoint["state"] == 0 and checkpoint["epoch"] >= 1
    resumed = run_script("main_PrAC_imp.py", [*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    check_complete(save_dir, 2)


@pytest.mark.full
def test_streamed_imp_with_an_empty_slice(tmp_path: Any) -> None:
    """main_imp.py on a streamed folder, 22 training images in global batches of 7: the last
    batch has 1 image, so rank 0's slice of it is empty; each index is still trained once
    per epoch and the run finishes."""
    root = datasets_on_disk.write_image_tree(str(tmp_path / "tree"), "folder", CLASSES, PER_CLASS, TEST_PER_CLASS)
    save_dir, trace = str(tmp_path / "run"), str(tmp_path / "trace")
    args = tree_args(root, save_dir, "--epochs", "2", "--pruning_times", "1", "--device", "cpu")
    args[args.index("--batch_size") + 1] = "7"
    process = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                              os.path.join(REPO, "main_imp.py"), *args], cwd=REPO, capture_output=True, text=True,
                             env=dict(os.environ, OMP_NUM_THREADS="1", PRAC_LTH_TRACE=trace), timeout=TIMEOUT)
    assert process.returncode == 0, (process.stdout + process.stderr)[-3000:]
    split_train = None
    for epoch in range(2):
        parts = [np.load(os.path.join(trace, f"trained.r0.e{epoch}.rank{r}.npy")) for r in (0, 1)]
        together = np.sort(np.concatenate(parts))
        assert together.size == np.unique(together).size == TRAIN_NUMBER
        split_train = together if split_train is None else split_train
        np.testing.assert_array_equal(together, split_train)
    assert os.path.exists(os.path.join(save_dir, "0checkpoint.pth.tar"))
