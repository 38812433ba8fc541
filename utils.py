"""Shared plumbing: errors, logging, devices, seeds, file names, checkpoints, results."""
import collections
import csv
import json
import logging
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np
import torch

LOG = logging.getLogger("prac_lth")


class UserError(Exception):
    """A problem with the user's input; reported as one line, never as a traceback."""


def run_cli(main: Callable[[Optional[Sequence[str]]], Any]) -> None:
    """Runs a script's main and turns a UserError into one clear line and exit code 2."""
    try:
        main(None)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint in --save_dir resumes the run "
              "(--resume --checkpoint ...)", file=sys.stderr)
        sys.exit(130)


class _TqdmSafeHandler(logging.Handler):
    """Writes log lines through tqdm so they do not break a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm
        try:
            tqdm.write(self.format(record), file=sys.stdout)
        except Exception:  # a logging handler must never raise
            self.handleError(record)


def setup_logging(save_dir: Optional[str] = None) -> None:
    """Logs to stdout and, when given, to ``save_dir/log.txt``."""
    LOG.setLevel(logging.INFO)
    for handler in list(LOG.handlers):
        handler.close()
        LOG.removeHandler(handler)
    LOG.propagate = False
    console = _TqdmSafeHandler()
    console.setFormatter(logging.Formatter("%(message)s"))
    LOG.addHandler(console)
    if save_dir is not None:
        to_file = logging.FileHandler(os.path.join(save_dir, "log.txt"))
        to_file.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        LOG.addHandler(to_file)


# ----------------------------------------------------------------------------- devices
def select_device(requested: str, gpu: int) -> torch.device:
    """``auto`` takes CUDA device ``gpu`` when there is one, else the CPU."""
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        if gpu >= torch.cuda.device_count():
            raise UserError(f"--gpu {gpu} does not exist: this machine has "
                            f"{torch.cuda.device_count()} CUDA device(s)")
        torch.cuda.set_device(gpu)
        return torch.device("cuda", gpu)
    if requested == "cuda":
        raise UserError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    return torch.device("cpu")


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{device.index} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


# ----------------------------------------------------------------------------- seeds
def fresh_seed() -> int:
    """A random base seed for an unseeded run (saved so a resume reproduces it)."""
    return int.from_bytes(os.urandom(4), "little")


def derived_seed(base_seed: int, *keys: int) -> int:
    """A seed that is a pure function of the base seed and ``keys`` (round, epoch, ...).

    Every random stream of a run is derived this way, so resuming needs no RNG state.
    """
    return int(np.random.SeedSequence([base_seed, *keys]).generate_state(1, dtype=np.uint64)[0] >> 1)


def make_generator(device: torch.device, base_seed: int, *keys: int) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(derived_seed(base_seed, *keys))
    return generator


# Stream tags for derived seeds, so two uses never share a stream.
STREAM_INIT, STREAM_TRAIN, STREAM_RANDOM_PRUNE, STREAM_SELECT = 1, 2, 3, 4


# ----------------------------------------------------------------------------- file names
CHECKPOINT_NAME = re.compile(r"^(\d*)checkpoint\.pth\.tar$")

@dataclass(frozen=True)
class RunPaths:
    """Every file a run writes, named as the published scripts name them."""

    save_dir: str

    def _join(self, name: str) -> str:
        return os.path.join(self.save_dir, name)

    def checkpoint(self, state: Optional[int] = None) -> str:
        return self._join(f"{'' if state is None else state}checkpoint.pth.tar")

    def best(self, state: Optional[int] = None) -> str:
        return self._join(f"{'' if state is None else state}model_SA_best.pth.tar")

    def rewind_weight(self, rewind_epoch: int) -> str:
        return self._join(f"epoch_{rewind_epoch + 1}_rewind_weight.pt")

    def curves(self, state: Optional[int] = None) -> str:
        return self._join(f"{'' if state is None else state}net_train.png")

    def final_ticket(self) -> str:
        return self._join("final_ticket.pth.tar")

    def prac_set(self, state: int) -> str:
        return self._join(f"{state}prac_set.npy")

    def newest_checkpoint(self) -> Optional[str]:
        """The checkpoint a resume continues from: the highest round's ``{k}checkpoint.pth.tar``
        (main_train.py's plain ``checkpoint.pth.tar``), or None when there is none."""
        if not os.path.isdir(self.save_dir):
            return None
        rounds = []
        for name in os.listdir(self.save_dir):
            match = CHECKPOINT_NAME.match(name)
            if match:
                rounds.append(int(match.group(1)) if match.group(1) else -1)
        if not rounds:
            return None
        newest = max(rounds)
        return self.checkpoint(None if newest < 0 else newest)

    @property
    def epochs_csv(self) -> str:
        return self._join("epochs.csv")

    @property
    def rounds_csv(self) -> str:
        return self._join("rounds.csv")

    @property
    def run_info(self) -> str:
        return self._join("args.json")


# ----------------------------------------------------------------------------- checkpoints
def atomic_write(path: str, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Writes through a temporary file in the same folder, then ``os.replace``: a crash
    mid-write leaves the previous file intact."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_checkpoint(obj: Any, path: str) -> None:
    atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_copy(source: str, target: str) -> None:
    with open(source, "rb") as handle:
        atomic_write(target, lambda out: shutil.copyfileobj(handle, out, 1 << 20))


def _numpy_safe_globals() -> List[Any]:
    # Published checkpoints hold numpy arrays (the PrAC sequence and records) and the
    # scheduler's Counter; these are data, so they are allowed to the safe loader.
    allowed: List[Any] = [collections.Counter, np.ndarray, np.dtype]
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray  # numpy 2 / 1
    allowed += [multiarray._reconstruct, multiarray.scalar]
    allowed += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "int8", "uint8", "bool")]
    allowed += [np.float64, np.float32, np.int64, np.int32, np.bool_]
    return allowed


def load_checkpoint(path: str, what: str = "checkpoint", trust: bool = False) -> Any:
    """Loads onto the CPU with ``weights_only=True`` (pickle only when ``trust``).

    Every failure is a UserError naming the file and what to do.
    """
    if not path:
        raise UserError(f"no {what} file was given")
    if not os.path.isfile(path):
        raise UserError(f"{what} {path} does not exist")
    try:
        if trust:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        refused = [line.strip() for line in str(error).splitlines() if "Unsupported global" in line]
        if refused:
            detail = refused[0].split(" was not")[0].replace("WeightsUnpickler error: ", "")
            raise UserError(f"{what} {path} holds objects the safe loader refuses ({detail[:160]}); "
                            "if you trust the file, add --trust_checkpoints") from None
        raise UserError(f"{what} {path} is corrupt or truncated ({message[:160]}); "
                        "use an earlier checkpoint or re-run") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"{what} {path} is corrupt or truncated ({message[:160]}); "
                        "use an earlier checkpoint or re-run") from None


def require_keys(checkpoint: Any, keys: Iterable[str], path: str, what: str) -> None:
    if not isinstance(checkpoint, dict):
        raise UserError(f"{what} {path} is not a checkpoint dictionary")
    missing = [k for k in keys if k not in checkpoint]
    if missing:
        raise UserError(f"{what} {path} lacks the entries {', '.join(missing)}; "
                        "is it a checkpoint of this script?")


# ----------------------------------------------------------------------------- results
# Per epoch: train_examples is the epoch's; round_steps / round_examples_seen are totals of
# the round so far; cumulative_steps is the total since the start of the run.
EPOCH_FIELDS = ["round", "epoch", "lr", "train_acc", "val_acc", "test_acc", "remaining_weights",
                "train_examples", "round_steps", "round_examples_seen", "cumulative_steps",
                "eb_distance", "eb_seconds", "seconds"]
ROUND_FIELDS = ["round", "remaining_weights", "train_examples", "forgetting_part",
                "pruning_aware_part", "epochs_planned", "epochs_run", "eb_stop_epoch", "steps",
                "examples_seen", "cumulative_steps", "best_val_acc", "test_acc_at_best_val",
                "seconds", "select_rule"]


class ResultTable:
    """An append-only CSV of result rows, safe across kill-and-resume.

    On resume, rows past the checkpoint's position are dropped (they are recomputed),
    so the table never holds a row twice.
    """

    def __init__(self, path: str, fields: Sequence[str]):
        self.path = path
        self.fields = list(fields)

    def rows(self) -> List[Dict[str, str]]:
        if not os.path.exists(self.path):
            return []
        with open(self.path, newline="") as handle:
            return list(csv.DictReader(handle))

    def keep_only(self, keep: Callable[[Dict[str, str]], bool]) -> None:
        rows = [row for row in self.rows() if keep(row)]
        self._rewrite(rows)

    def _rewrite(self, rows: List[Dict[str, Any]]) -> None:
        def write(handle: Any) -> None:
            writer = csv.DictWriter(handle, fieldnames=self.fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        atomic_write(self.path, write, mode="w")

    def append(self, row: Mapping[str, Any]) -> None:
        fresh = not os.path.exists(self.path)
        with open(self.path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.fields, extrasaction="ignore")
            if fresh:
                writer.writeheader()
            writer.writerow({k: _format_cell(row.get(k)) for k in self.fields})


def _format_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def code_version() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def save_run_info(path: str, script: str, config: Mapping[str, Any], device: str,
                  extra: Optional[Mapping[str, Any]] = None) -> None:
    """Saves what produced a run: script, arguments, working folder, code and torch versions
    (and ``extra``, e.g. where a retrained ticket came from)."""
    info = {"script": script, "arguments": dict(config), "cwd": os.getcwd(), "code_version": code_version(),
            "torch": torch.__version__, "device": device, "command": " ".join(sys.argv), **(extra or {})}
    atomic_write(path, lambda handle: json.dump(info, handle, indent=2, default=str), mode="w")


def plot_curves(result: Mapping[str, Sequence[float]], path: str, title: str = "") -> None:
    """Train / validation / test accuracy per epoch, drawn with the Agg backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("train_acc", "train"), ("val_acc", "validation"), ("test_acc", "test")):
        values = list(result.get(key, []))
        ax.plot(range(1, len(values) + 1), values, marker="o" if len(values) < 20 else None, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=100))
    plt.close(fig)
