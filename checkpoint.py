"""A run's state and the one codec between it and the checkpoint files.

This is the only module that knows the published checkpoint keys and layouts (``state``,
``best_sa``, ``ta``, ``init_weight``, ``sequence``, ``prediction`` as a list of N x 1 arrays,
...). Everything else works with :class:`RunState` and its plain names, and checkpoints
written here load in the published scripts, as theirs load here.
"""
import collections
import errno
import os
import pickle
import pickletools
import re
import shutil
import warnings
import zipfile
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional

import numpy as np
import torch

import pruner
from durable import atomic_write
from prac import RoundSchedule, RoundStatistics
from utils import UserError

FORMAT = "prac-lth-open/2"
StateDict = Dict[str, torch.Tensor]
PUBLISHED_KEYS = ("state", "result", "epoch", "state_dict", "best_sa", "optimizer", "scheduler")
PRAC_KEYS = ("prediction", "distance_queue", "last_mask", "start_record")
# plain result names <-> the published ``result`` keys
RESULT_KEYS = {"train_acc": "train", "val_acc": "ta", "test_acc": "test_ta"}


@dataclass
class RunState:
    """Everything that changes during a run; saved in every checkpoint."""

    round: int
    schedule: RoundSchedule              # this round's epochs, LR milestones and warm-up
    train_indices: np.ndarray            # dataset indices this round trains on
    base_seed: int
    rewind_weights: Optional[StateDict]  # where rounds rewind to (init, or rewind-epoch weights)
    epoch: int = 0                       # epochs completed in this round
    results: Dict[str, List[float]] = field(default_factory=lambda: {name: [] for name in RESULT_KEYS})
    best_val_acc: float = 0.0            # of this round
    round_finished: bool = False         # Early-Bird stopped this round
    eb_stop_epoch: Optional[int] = None
    cumulative_steps: int = 0
    round_steps: int = 0
    round_examples: int = 0
    round_seconds: float = 0.0
    set_parts: Dict[str, int] = field(default_factory=dict)  # how this round's set was built
    # PrAC runs only
    statistics: Optional[RoundStatistics] = None
    early_bird: Optional[pruner.EarlyBird] = None

    def next_round(self, schedule: RoundSchedule, train_indices: np.ndarray,
                   set_parts: Optional[Dict[str, int]] = None) -> "RunState":
        return RunState(round=self.round + 1, schedule=schedule, train_indices=train_indices,
                        base_seed=self.base_seed, rewind_weights=self.rewind_weights,
                        cumulative_steps=self.cumulative_steps, set_parts=dict(set_parts or {}))


def encode(run: RunState, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
           config: Dict[str, Any], script: str) -> Dict[str, Any]:
    """The checkpoint of ``run``: the published keys, plus ours for an exact resume."""
    checkpoint: Dict[str, Any] = {
        "state": run.round,
        # remain_weight as the published main_train.py records it
        "result": {**{published: list(run.results[name]) for name, published in RESULT_KEYS.items()},
                   "remain_weight": pruner.remaining_weights(model)},
        "epoch": run.epoch, "state_dict": model.state_dict(), "best_sa": run.best_val_acc,
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "init_weight": run.rewind_weights,
        # numpy, as the published scripts store it, so our checkpoints load there too
        "sequence": np.asarray(run.train_indices, dtype=np.int64),
        "format": FORMAT, "script": script, "config": dict(config), "base_seed": run.base_seed,
        "schedule": {"epochs": run.schedule.epochs, "milestones": list(run.schedule.milestones),
                     "warmup": run.schedule.warmup},
        "round_finished": run.round_finished, "eb_stop_epoch": run.eb_stop_epoch,
        "cumulative_steps": run.cumulative_steps, "round_steps": run.round_steps,
        "round_examples": run.round_examples, "round_seconds": run.round_seconds,
        "set_parts": dict(run.set_parts),
    }
    if run.statistics is not None and run.early_bird is not None:
        correctness = run.statistics.correctness.values[:run.epoch].cpu().numpy()
        checkpoint.update({
            # one (examples x 1) int8 array per epoch so far: the published layout
            "prediction": [column.reshape(-1, 1) for column in correctness],
            "remain_para": pruner.unpruned_count(model),
            "distance_queue": run.early_bird.queue, "last_mask": run.early_bird.last_mask,
            "start_record": run.early_bird.start_record,
        })
        if run.statistics.el2n is not None:
            checkpoint["el2n_sums"] = run.statistics.el2n.sums.cpu()
    return checkpoint


@dataclass
class Decoded:
    """A checkpoint's contents in plain names. ``run.statistics`` and ``run.early_bird``
    are left for the caller, which knows the data set and device."""

    run: RunState
    model_state: StateDict
    optimizer_state: Dict[str, Any]
    scheduler_state: Dict[str, Any]
    script: Optional[str]                # None for published checkpoints
    config: Optional[Dict[str, Any]]
    records: Optional[torch.Tensor]      # epochs x examples int8 (PrAC): the recorder's layout
    el2n_sums: Optional[torch.Tensor]
    early_bird: Optional[Dict[str, Any]]  # queue, last_mask, start_record (PrAC)

    @property
    def is_prac(self) -> bool:
        return self.records is not None


def decode(checkpoint: Any, path: str, fallback_seed: int, full_schedule: RoundSchedule,
           split_indices: np.ndarray, scaled_schedule: Callable[[int], RoundSchedule]) -> Decoded:
    """Reads a checkpoint dictionary (ours or the published scripts') into a complete run state.

    What a published checkpoint does not hold is filled in as the published run had it: its
    training set is the whole split (``split_indices``) when it records none; its schedule is
    ``full_schedule``, or for a PrAC round after the first the one its set's size determines
    (``scaled_schedule(size)``: the published resume ran the unscaled one).
    """
    require_keys(checkpoint, PUBLISHED_KEYS, path, "checkpoint")
    saved = checkpoint.get("schedule")
    sequence = checkpoint.get("sequence")
    train_indices = (np.asarray(sequence, dtype=np.int64) if sequence is not None and len(sequence)
                     else np.asarray(split_indices, dtype=np.int64).copy())
    is_prac = "prediction" in checkpoint
    if saved:
        schedule = RoundSchedule(int(saved["epochs"]), [int(m) for m in saved["milestones"]], int(saved["warmup"]))
    elif is_prac and int(checkpoint["state"]) > 0:
        schedule = scaled_schedule(len(train_indices))
    else:
        schedule = full_schedule
    result = checkpoint["result"]
    run = RunState(
        round=int(checkpoint["state"]), schedule=schedule, train_indices=train_indices,
        base_seed=int(checkpoint.get("base_seed", fallback_seed)),
        rewind_weights=checkpoint["init_weight"] if "init_weight" in checkpoint else None,
        epoch=int(checkpoint["epoch"]),
        results={name: [float(v) for v in result.get(published, [])] for name, published in RESULT_KEYS.items()},
        best_val_acc=float(checkpoint["best_sa"]),
        round_finished=bool(checkpoint.get("round_finished", False)),
        eb_stop_epoch=checkpoint.get("eb_stop_epoch"),
        cumulative_steps=int(checkpoint.get("cumulative_steps", 0)),
        round_steps=int(checkpoint.get("round_steps", 0)),
        round_examples=int(checkpoint.get("round_examples", 0)),
        round_seconds=float(checkpoint.get("round_seconds", 0.0)),
        set_parts={k: int(v) for k, v in dict(checkpoint.get("set_parts") or {}).items() if v is not None})
    if is_prac:
        require_keys(checkpoint, PRAC_KEYS, path, "PrAC checkpoint")
    return Decoded(
        run=run, model_state=checkpoint["state_dict"], optimizer_state=checkpoint["optimizer"],
        scheduler_state=checkpoint["scheduler"],
        script=checkpoint.get("script"), config=checkpoint.get("config"),
        records=records_matrix(checkpoint["prediction"]).t() if is_prac else None,
        el2n_sums=checkpoint.get("el2n_sums"),
        early_bird=({"queue": torch.as_tensor(checkpoint["distance_queue"]), "last_mask": checkpoint["last_mask"],
                     "start_record": bool(checkpoint["start_record"]),
                     "stop_known": "round_finished" in checkpoint} if is_prac else None))


def records_matrix(prediction: Any) -> torch.Tensor:
    """The examples x epochs records of a checkpoint: a list of (examples x 1) arrays, one
    per epoch (ours and the published layout; empty at the start of a round), or a matrix."""
    if torch.is_tensor(prediction):
        return prediction.to(torch.int8).cpu()
    if isinstance(prediction, list):
        if not prediction:
            return torch.empty((0, 0), dtype=torch.int8)
        return torch.from_numpy(np.concatenate([np.asarray(p).reshape(-1, 1) for p in prediction], axis=1)
                                .astype(np.int8))
    return torch.from_numpy(np.asarray(prediction).astype(np.int8))


def encode_final_ticket(run: RunState, model: torch.nn.Module) -> Dict[str, Any]:
    """The mask pruning after the last round gives, with its rewound weights: main_train.py
    retrains it with --init_dir / --mask_dir pointing at this file."""
    return {"state": run.round + 1, "state_dict": model.state_dict(), "init_weight": run.rewind_weights,
            "remaining_weights": pruner.remaining_weights(model), "format": FORMAT}


# ----------------------------------------------------------------------------- checkpoint files
# After a torch.save that stopped short, less room than this left on its disk means it is full.
FULL_DISK_BYTES = 1 << 20


def save_checkpoint(obj: Any, path: str) -> None:
    """torch.save through :func:`atomic_write`. torch reports a failed write of its zip
    container as a RuntimeError ("unexpected pos"), not the OSError beneath it; it is turned
    back into that OSError (ENOSPC when the disk is full), so it too is one line."""
    def write(handle: Any) -> None:
        try:
            torch.save(obj, handle)
        except RuntimeError as error:
            raise _failed_write(handle, error) from None

    atomic_write(path, write)


def _failed_write(handle: Any, error: RuntimeError) -> OSError:
    """The OSError behind a RuntimeError of torch.save: ENOSPC when the file's disk has no
    room left (what a write that stops short on a full disk means), else EIO with torch's
    first line."""
    try:
        handle.flush()  # surfaces the OSError of a buffered write, if any
    except OSError as cause:
        return cause
    try:
        disk = os.fstatvfs(handle.fileno())
        full = disk.f_bavail * disk.f_frsize < FULL_DISK_BYTES
    except OSError:
        full = False
    if full:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return OSError(errno.EIO, f"{os.strerror(errno.EIO)} ({first_line[:160]})")


def atomic_copy(source: str, target: str) -> None:
    with open(source, "rb") as handle:
        atomic_write(target, lambda out: shutil.copyfileobj(handle, out, 1 << 20))


def _numpy_safe_globals() -> List[Any]:
    # Published checkpoints hold numpy arrays (the PrAC sequence and records) and the
    # scheduler's Counter; these are data, so they are allowed to the safe loader.
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray  # numpy 2 / 1
    return [collections.Counter, np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar,
            *(type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "int8", "uint8", "bool")),
            np.float64, np.float32, np.int64, np.int32, np.bool_]


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
        with torch.serialization.safe_globals(_numpy_safe_globals()), warnings.catch_warnings():
            # A raw pickle (not torch.save's zip) of a newer protocol makes torch warn before it
            # fails; the failure below is the one line the user sees.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = _refused_raw_global(path) or refused_by_safe_loader(str(error))
        if refused is not None:
            raise UserError(f"{what} {path} carries code or objects that the safe loader refuses "
                            f"({refused}); it was not loaded. Only if you trust the file and its "
                            "source, load it with --trust_checkpoints") from None
        raise _corrupt(path, what, error) from None
    except Exception as error:  # noqa: BLE001 - random bytes fail deep inside the unpickler in many ways
        raise _corrupt(path, what, error) from None


# What the weights-only unpickler says when a file asks for code or for an object it does
# not build (as opposed to bytes that are not a pickle at all).
_GLOBAL_IN_MESSAGE = re.compile(r"GLOBAL ([\w.]+)")
_OBJECT_MESSAGES = ("Trying to call reduce for unrecognized function", "Can only create new object",
                    "Can only build Tensor", "Only persistent_load of storage")


def refused_by_safe_loader(message: str) -> Optional[str]:
    """What a weights-only load refused ("global posix.system"), or None when the error
    is not such a refusal (a corrupt or truncated file)."""
    found = _GLOBAL_IN_MESSAGE.search(message)
    if found:
        return f"global {found.group(1)}"
    for line in message.splitlines():
        for marker in _OBJECT_MESSAGES:
            if marker in line:
                return line.strip().replace("WeightsUnpickler error: ", "")[:160]
    return None


def _refused_raw_global(path: str) -> Optional[str]:
    """For a raw pickle (not torch.save's zip format), which the weights-only unpickler may
    fail on before it names what it refuses: the globals the file asks for that the safe
    loader does not allow ("global posix.system"), read opcode by opcode without running
    anything. None for a zip file, one asking only for allowed globals, or unreadable bytes."""
    if zipfile.is_zipfile(path):
        return None
    allowed = set(torch._weights_only_unpickler._get_allowed_globals())
    allowed |= {f"{g.__module__}.{g.__qualname__}" for g in _numpy_safe_globals()}
    refused: List[str] = []
    strings: List[str] = []
    try:
        with open(path, "rb") as handle:
            while handle.peek(1):  # torch's legacy format is several pickles in a row
                for opcode, argument, _ in pickletools.genops(handle):
                    if isinstance(argument, str):
                        strings = [*strings[-1:], argument]
                    name = (argument.replace(" ", ".") if opcode.name in ("GLOBAL", "INST") else
                            ".".join(strings) if opcode.name == "STACK_GLOBAL" and len(strings) == 2 else None)
                    if name is not None and name not in allowed and name not in refused:
                        refused.append(name)
                    if opcode.name == "STOP":
                        break
                else:
                    break
    except (OSError, ValueError, pickle.UnpicklingError):
        return None
    return f"global{'s' if len(refused) > 1 else ''} {', '.join(refused[:4])}" if refused else None


def _corrupt(path: str, what: str, error: BaseException) -> UserError:
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return UserError(f"{what} {path} is corrupt or truncated ({message[:160]}); "
                     "use an earlier checkpoint or re-run")


def require_keys(checkpoint: Any, keys: Iterable[str], path: str, what: str) -> None:
    if not isinstance(checkpoint, dict):
        raise UserError(f"{what} {path} is not a checkpoint dictionary")
    missing = [k for k in keys if k not in checkpoint]
    if missing:
        raise UserError(f"{what} {path} lacks the entries {', '.join(missing)}; "
                        "is it a checkpoint of this script?")
