"""Helpers shared by the test modules (fixtures live in conftest.py)."""
import contextlib
import csv
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

import runners
import utils
from checkpoint import load_checkpoint
from dataset import train_number_for

SCRIPT_MODULES = {"main_imp.py": "main_imp", "main_PrAC_imp.py": "main_PrAC_imp", "main_train.py": "main_train",
                  "sweep.py": "sweep", "report.py": "report"}


def read_csv(path: str) -> List[Dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def one_line(error: BaseException) -> bool:
    """An error message a user reads at a glance: not empty, one line."""
    text = str(error)
    return bool(text.strip()) and "\n" not in text


class Payload:
    """Unpickling this runs a shell command: what a poisoned file carries."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def run_in_process(script: str, argv: Sequence[str]) -> subprocess.CompletedProcess:
    """Runs a script's command line in this process, as ``python script argv`` would (its
    ``run_cli`` turns errors into one line and an exit code), and returns what a subprocess
    would: exit code, stdout and stderr. For errors raised before training; a Python
    process costs ~2 s of start-up here, this costs nothing."""
    module = importlib.import_module(SCRIPT_MODULES[script])
    stdout, stderr = io.StringIO(), io.StringIO()
    saved_argv, code = sys.argv, 0
    sys.argv = [script, *argv]
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                utils.run_cli(module.main)
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else 1
            finally:
                for handler in list(utils.LOG.handlers):  # the run's log file goes with it
                    handler.close()
                    utils.LOG.removeHandler(handler)
    finally:
        sys.argv = saved_argv
    return subprocess.CompletedProcess([script, *argv], code, stdout.getvalue(), stderr.getvalue())


# ============================================================================ comparing runs
Point = Tuple[int, int]  # (round, epochs completed in that round) of a checkpoint
# Checkpoint entries that legitimately differ between an uninterrupted and a resumed run.
VOLATILE_KEYS = {"config", "round_seconds"}
VOLATILE_COLUMNS = {"seconds", "eb_seconds"}


def run_with_snapshots(main: Callable[..., None], argv: Sequence[str], save_dir: str,
                       side: str, points: Iterable[Point]) -> Dict[Point, str]:
    """Runs ``main(argv)`` in-process; after the checkpoint of each of ``points`` is written,
    copies the whole save_dir to ``side/<round>_<epoch>`` (a checkpoint event)."""
    wanted = set(points)
    snapshots: Dict[Point, str] = {}

    def snapshot(session: Any, run: Any) -> None:
        point = (run.round, run.epoch)
        if point in wanted and point not in snapshots:
            target = os.path.join(side, f"{point[0]}_{point[1]}")
            shutil.copytree(save_dir, target)
            snapshots[point] = target

    main(argv, events=runners.RunEvents(checkpoint=[snapshot]))
    assert set(snapshots) == wanted, f"never saved: {wanted - set(snapshots)}"
    return snapshots


def assert_same(a: Any, b: Any, where: str) -> None:
    """Exact, recursive equality of loaded checkpoint contents."""
    if torch.is_tensor(a) or torch.is_tensor(b):
        assert torch.is_tensor(a) and torch.is_tensor(b), f"{where}: tensor vs {type(b).__name__}"
        assert a.dtype == b.dtype and a.shape == b.shape, \
            f"{where}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
        assert torch.equal(a, b), f"{where}: values differ"
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert np.array_equal(np.asarray(a), np.asarray(b)), f"{where}: arrays differ"
    elif isinstance(a, dict):
        assert isinstance(b, dict), f"{where}: dict vs {type(b).__name__}"
        keys_a = set(a) - VOLATILE_KEYS
        keys_b = set(b) - VOLATILE_KEYS
        assert keys_a == keys_b, f"{where}: keys differ: {sorted(map(str, keys_a ^ keys_b))}"
        for key in keys_a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ ({a!r} vs {b!r})"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_table(path_a: str, path_b: str) -> None:
    rows_a, rows_b = read_csv(path_a), read_csv(path_b)
    keys = [(r.get("round"), r.get("epoch"), r.get("layer")) for r in rows_b]
    assert len(keys) == len(set(keys)), f"{os.path.basename(path_b)} holds a row twice: {keys}"
    assert len(rows_a) == len(rows_b), f"{os.path.basename(path_b)}: {len(rows_a)} rows vs {len(rows_b)}"
    for row_a, row_b in zip(rows_a, rows_b):
        assert {k: v for k, v in row_a.items() if k not in VOLATILE_COLUMNS} == \
               {k: v for k, v in row_b.items() if k not in VOLATILE_COLUMNS}


def assert_same_run(dir_a: str, dir_b: str) -> None:
    """Every checkpoint, weight file and PrAC set of run A is in run B with the same content."""
    def artefacts(folder: str) -> List[str]:
        return sorted(f for f in os.listdir(folder) if f.endswith((".pth.tar", ".pt", ".npy")))

    assert artefacts(dir_a) == artefacts(dir_b)
    for name in artefacts(dir_a):
        path_a, path_b = os.path.join(dir_a, name), os.path.join(dir_b, name)
        if name.endswith(".npy"):
            assert np.array_equal(np.load(path_a), np.load(path_b)), name
        else:
            assert_same(load_checkpoint(path_a), load_checkpoint(path_b), name)
    assert_same_table(os.path.join(dir_a, "epochs.csv"), os.path.join(dir_b, "epochs.csv"))
    assert_same_table(os.path.join(dir_a, "rounds.csv"), os.path.join(dir_b, "rounds.csv"))
    assert_same_table(os.path.join(dir_a, "layers.csv"), os.path.join(dir_b, "layers.csv"))
    assert not [f for f in os.listdir(dir_b) if f.startswith(".tmp")]


def resume(main: Callable[[Sequence[str]], None], argv: Sequence[str], folder: str, tag: Optional[int]) -> None:
    checkpoint = os.path.join(folder, f"{'' if tag is None else tag}checkpoint.pth.tar")
    main([*argv, "--resume", "--checkpoint", checkpoint])


def argv_for(argv: List[str], save_dir: str) -> List[str]:
    out = list(argv)
    out[out.index("--save_dir") + 1] = save_dir
    return out


BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def bn_keys(prefix: str) -> List[str]:
    return [f"{prefix}.{s}" for s in BN_SUFFIXES]


def published_cifar_resnet_keys(blocks: int) -> List[str]:
    """Key names of the published CIFAR ResNet-s (Idelbayev's layout, option-A shortcuts),
    ``blocks`` per stage, in state_dict order."""
    keys = ["normalize.mean", "normalize.std", "conv1.weight", *bn_keys("bn1")]
    for stage in (1, 2, 3):
        for block in range(blocks):
            p = f"layer{stage}.{block}"
            keys += [f"{p}.conv1.weight", *bn_keys(f"{p}.bn1"), f"{p}.conv2.weight", *bn_keys(f"{p}.bn2")]
    return keys + ["fc.weight", "fc.bias"]


# ============================================================================ sweeps
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID_VALUES = ["0.0001", "0.0005"]  # the grid tests' --grid weight_decay=...


def sweep_flags(data: str, split: str, device: str) -> List[str]:
    """Script flags of a tiny sweep on the 200-image Fashion-MNIST set (2 rounds of 2 epochs)."""
    return ["--data", data, "--dataset", "fashionmnist", "--split_file", split, "--arch", "res20s",
            "--epochs", "2", "--decreasing_lr", "1", "--pruning_times", "2", "--prune_type", "rewind_lt",
            "--rewind_epoch", "1", "--lr", "0.1", "--batch_size", "64", "--no_progress", "--print_freq", "1000",
            "--device", device]


def tiny_sweep_inputs(root: Any, device: str) -> Dict[str, Any]:
    """A 200-image Fashion-MNIST on disk in ``root``, a shuffled split, and a tiny sweep's flags."""
    from tests import datasets_on_disk
    data = datasets_on_disk.write_fashion_mnist(str(root / "fashion"), 200, 60)
    split = str(root / "split.npy")
    np.save(split, np.random.default_rng(5).permutation(200))
    return {"root": root, "flags": sweep_flags(data, split, device)}


def run_sweep(args: List[str], flags: List[str], env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    environment = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **(env or {}))
    return subprocess.run([sys.executable, os.path.join(REPO, "sweep.py"), *args, "--", *flags],
                          capture_output=True, text=True, cwd=REPO, env=environment, timeout=900)


def arguments(folder: str) -> Dict[str, Any]:
    """A run folder's args.json."""
    with open(os.path.join(folder, "args.json")) as handle:
        return json.load(handle)


def sweep_status(out: str) -> Dict[str, List[str]]:
    """sweep.py --status OUT as {run: [state, detail]}."""
    result = run_in_process("sweep.py", ["--status", out])
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {}
    for line in result.stdout.splitlines()[1:-1]:
        name, rest = line.split(None, 1)
        state = "not started" if rest.startswith("not started") else rest.split()[0]
        rows[name] = [state, rest[len(state):].strip()]
    return rows


def assert_grid_reported(out: str, flags: List[str]) -> None:
    """A --grid weight_decay=GRID_VALUES sweep of imp and prac: one folder per setting with its
    setting.json and its runs; the sweep's report has the two settings as two groups."""
    assert not os.path.exists(os.path.join(out, "runs"))  # the runs live in the settings' folders
    for value in GRID_VALUES:
        folder = os.path.join(out, f"weight_decay={value}")
        with open(os.path.join(folder, "setting.json")) as handle:
            setting = json.load(handle)
        assert setting["setting"] == {"--weight_decay": value}
        assert setting["flags"] == [*flags, "--weight_decay", value]
        for method in ["imp", "prac"]:
            assert arguments(os.path.join(folder, "runs", f"{method}-seed0"))["arguments"]["weight_decay"] == \
                float(value)
    groups: Dict[str, set] = {}
    for row in read_csv(os.path.join(out, "report", "aggregate.csv")):
        groups.setdefault(row["setting"], set()).add(row["method"])
    assert groups == {f"weight_decay {value}": {"imp", "prac"} for value in GRID_VALUES}


# ============================================================================ streamed image trees
CLASSES, PER_CLASS, TEST_PER_CLASS = 3, 8, 4
TRAIN_SIZE = CLASSES * PER_CLASS       # 24: 22 train + 2 validation
TRAIN_NUMBER = train_number_for(TRAIN_SIZE)
SIZE = 32                              # --image_size for the tests: cheap on the CPU


def tree_args(root: str, save_dir: str, *extra: str, name: str = "folder", workers: int = 0) -> List[str]:
    return ["--data", root, "--dataset", name, "--data_mode", "stream", "--image_size", str(SIZE),
            "--workers", str(workers), "--arch", "res20s", "--batch_size", "8", "--seed", "0", "--no_progress",
            "--print_freq", "1000", "--device", current_device(), "--save_dir", save_dir, *extra]


def current_device() -> str:
    """The session's device (``pytest --device``), set by conftest.py."""
    from tests import conftest
    return conftest.DEVICE
