"""What a run reports: its result tables (typed columns), its run information and its plots."""
import csv
import errno
import io
import json
import os
import subprocess
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch

from durable import atomic_write, note_write, write_error
from utils import LOG

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
# Per round and layer (every conv and linear layer, in module order): its weights and how
# many of them the round trained with (its mask's ones; all of them for a dense layer).
LAYER_FIELDS = ["round", "layer", "weights", "remaining"]


class ResultTable:
    """An append-only CSV of result rows, safe across kill-and-resume.

    On resume, rows past the checkpoint's position are dropped (they are recomputed),
    so the table never holds a row twice.
    """

    def __init__(self, path: str, fields: Sequence[str]):
        self.path = path
        self.fields = list(fields)

    def rows(self) -> List[Dict[str, str]]:
        """The complete rows: a last line without its end (an append cut off by a crash or a
        power loss) is not a row, so a resume's rewrite cannot make it one."""
        if not os.path.exists(self.path):
            return []
        with open(self.path, newline="") as handle:
            text = handle.read()
        if not text.endswith("\n"):
            text = text[:text.rfind("\n") + 1]
        return list(csv.DictReader(io.StringIO(text, newline="")))

    def keep_only(self, keep: Callable[[Dict[str, str]], bool]) -> None:
        """Rewrites the table (atomically) with only the rows ``keep`` accepts."""
        rows = [row for row in self.rows() if keep(row)]

        def write(handle: Any) -> None:
            writer = csv.DictWriter(handle, fieldnames=self.fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        atomic_write(self.path, write, mode="w")

    def append(self, row: Mapping[str, Any]) -> None:
        """Appends one row, as :meth:`extend` appends several."""
        self.extend([row])

    def extend(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Appends ``rows`` whole, in one durable write: one ``write`` call of the encoded lines, so
        a killed run never leaves half a row; a disk-full short write is undone. The first rows
        create the file (with its header) atomically."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.fields, extrasaction="ignore")
        writer.writeheader()
        header_end = len(buffer.getvalue().encode("utf-8"))
        writer.writerows([{k: _format_cell(row.get(k)) for k in self.fields} for row in rows])
        header_and_line = buffer.getvalue().encode("utf-8")
        if not os.path.exists(self.path):
            atomic_write(self.path, lambda handle: handle.write(header_and_line))
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        except OSError as error:
            raise write_error(self.path, error) from None
        try:
            size = _drop_partial_last_line(fd, self.path)
            line = header_and_line if size == 0 else header_and_line[header_end:]
            written = os.write(fd, line)
            if written != len(line):  # a short write: the disk filled up mid-row
                os.ftruncate(fd, size)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fsync(fd)
        except OSError as error:
            raise write_error(self.path, error) from None
        finally:
            os.close(fd)
        note_write(self.path)


def _drop_partial_last_line(fd: int, path: str) -> int:
    """Cuts a last line without its newline (a row cut off by a crash of an older version
    or a power loss) so that the next row does not join it; returns the file's size."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    tail_start = max(0, size - (1 << 16))
    tail = os.pread(fd, size - tail_start, tail_start)
    if b"\n" not in tail and tail_start > 0:
        return size  # not a row of ours; leave it
    cut = tail_start + tail.rfind(b"\n") + 1
    os.ftruncate(fd, cut)
    LOG.warning(f"{path}: dropped an incomplete last row ({size - cut} bytes) left by an interrupted write")
    return cut


def _format_cell(value: Any) -> Any:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else value


def code_version() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def software_versions() -> Dict[str, Any]:
    """What a seeded rerun must match to give identical numbers (besides device and precision)."""
    import platform
    from importlib import metadata

    import numpy
    try:  # the installed version, read without importing torchvision (seconds of start-up)
        torchvision_version = metadata.version("torchvision")
    except metadata.PackageNotFoundError:
        torchvision_version = "not installed"
    return {"torchvision": torchvision_version, "numpy": numpy.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads()}


def save_run_info(path: str, script: str, config: Mapping[str, Any], device: str,
                  extra: Optional[Mapping[str, Any]] = None) -> None:
    """Saves what produced a run: script, arguments, working folder, code and torch versions,
    and ``extra`` facts found while starting it (e.g. ``data_source``, the folder read)."""
    info = {"script": script, "arguments": dict(config), "cwd": os.getcwd(), "code_version": code_version(),
            "torch": torch.__version__, "device": device, "command": " ".join(sys.argv),
            **software_versions(), **dict(extra or {})}
    atomic_write(path, lambda handle: json.dump(info, handle, indent=2, default=str), mode="w")


def plot_layers(rows: Sequence[Mapping[str, Any]], path: str, title: str = "") -> None:
    """Remaining weights (% of each layer) per layer, one line per round, from LAYER_FIELDS
    rows; drawn with the Agg backend (once per round: the table holds every round so far)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(dict.fromkeys(str(row["layer"]) for row in rows))
    rounds = sorted({int(row["round"]) for row in rows})
    fig, ax = plt.subplots(figsize=(max(6.0, 0.3 * len(layers) + 2), 4.5))
    colours = plt.get_cmap("viridis")
    for k, round_number in enumerate(rounds):
        percent = {str(r["layer"]): 100.0 * float(r["remaining"]) / max(1.0, float(r["weights"]))
                   for r in rows if int(r["round"]) == round_number}
        ax.plot(range(len(layers)), [percent.get(name, float("nan")) for name in layers], marker="o", markersize=3,
                color=colours(k / max(1, len(rounds) - 1)), label=f"round {round_number}")
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels(layers, rotation=90, fontsize=7)
    ax.set_ylabel("remaining weights (% of the layer)")
    ax.set_ylim(0, 105)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(rounds) > 8 else 1)
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=100))
    plt.close(fig)


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
