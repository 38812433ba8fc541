"""Shared plumbing: errors, logging, devices, seeds, file names, checkpoints, results."""
import collections
import csv
import errno
import fcntl
import hashlib
import io
import itertools
import json
import logging
import os
import pickle
import pickletools
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np
import torch

LOG = logging.getLogger("prac_lth")


class UserError(Exception):
    """A problem with the user's input; reported as one line, never as a traceback."""


# torch 2.5 brought torch.serialization.safe_globals, which load_checkpoint needs: on older
# versions every checkpoint load would fail (and read as a corrupt file).
MIN_TORCH = (2, 5)


def check_torch_version(version: Optional[str] = None) -> None:
    """One UserError when torch (or ``version``, e.g. "2.4.1+cu121") is older than MIN_TORCH."""
    version = torch.__version__ if version is None else version
    found = re.match(r"(\d+)\.(\d+)", str(version))
    if found is None or (int(found.group(1)), int(found.group(2))) < MIN_TORCH:
        wanted = ".".join(map(str, MIN_TORCH))
        raise UserError(f"torch {version} is too old: this code needs torch>={wanted} "
                        f"(pip install 'torch>={wanted}' with a matching torchvision)")


def run_cli(main: Callable[[Optional[Sequence[str]]], Any]) -> None:
    """Runs a script's main and turns a UserError into one clear line and exit code 2."""
    try:
        check_torch_version()
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


def setup_logging(save_dir: Optional[str] = None, quiet: bool = False) -> None:
    """Logs to stdout and, when given, to ``save_dir/log.txt``; ``quiet``: warnings only
    (the ranks other than 0 of a distributed run)."""
    LOG.setLevel(logging.WARNING if quiet else logging.INFO)
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
STREAM_RANDOM_MASK = 5  # main_train.py --random_mask: the control's mask


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
    def layers_csv(self) -> str:
        return self._join("layers.csv")

    @property
    def layers_plot(self) -> str:
        return self._join("layers.png")

    @property
    def run_info(self) -> str:
        return self._join("args.json")


# ----------------------------------------------------------------------------- durable writes
TEMP_PREFIX = ".tmp-"  # every temporary file of atomic_write starts with this
# mkstemp's names: prefix, 8 random characters from [a-z0-9_], then our suffix
_TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"[a-z0-9_]{8}.+")
DIE_AFTER_WRITE_ENV = "PRAC_LTH_DIE_AFTER_WRITE"
DIE_AFTER_WRITE_EXIT_CODE = 17
WRITE_LOG_ENV = "PRAC_LTH_WRITE_LOG"  # a file that gets "<n>\t<path>" per durable write
_write_numbers = itertools.count(1)  # durable writes of this process, 1-based
_umask_lock = threading.Lock()


def note_write(path: str) -> None:
    """Counts one durable write (already complete) of ``path``; the fault-injection hook.

    With ``PRAC_LTH_DIE_AFTER_WRITE=n`` in the environment, the process exits at once
    (``os._exit``, no clean-up, like SIGKILL) right after its n-th write, so tests can
    kill a run between any two of its writes. With ``PRAC_LTH_WRITE_LOG=file``, each write
    appends a line to that file: the write's number and path, tab-separated (how tests
    count a run's writes).
    """
    number = next(_write_numbers)
    log = os.environ.get(WRITE_LOG_ENV, "")
    if log:
        with open(log, "a") as handle:
            handle.write(f"{number}\t{path}\n")
    wanted = os.environ.get(DIE_AFTER_WRITE_ENV, "").strip()
    if not wanted:
        return
    try:
        die_after = int(wanted)
    except ValueError:
        raise UserError(f"{DIE_AFTER_WRITE_ENV}={wanted!r} must be a positive integer "
                        "(the number of the write after which the process dies)") from None
    if number == die_after:
        os._exit(DIE_AFTER_WRITE_EXIT_CODE)


def current_umask() -> int:
    """The process umask, read without leaving it changed for other threads where possible."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:  # no /proc (not Linux): the only portable way sets it and restores it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _write_error(path: str, error: OSError) -> UserError:
    reason = error.strerror or str(error) or type(error).__name__
    advice = ("; free space on that disk, or pick a --save_dir on another, and rerun with --resume"
              if error.errno == errno.ENOSPC else "")
    return UserError(f"cannot write {path}: {reason} (errno {error.errno}){advice}; "
                     "the previous version of the file, if any, is intact")


def _fsync_folder(folder: str) -> None:
    """Makes a rename in ``folder`` durable; skipped where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Writes through a temporary file in the same folder, then ``os.replace``: a crash
    mid-write leaves the previous file intact.

    The file gets the permissions a plain ``open`` would give (0666 less the umask), not
    mkstemp's 0600. An OSError (disk full, permission) is one UserError naming the file.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=os.path.basename(path))
        try:
            os.fchmod(fd, 0o666 & ~current_umask())
        except OSError:
            os.close(fd)
            raise
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as error:
        raise _write_error(path, error) from None
    finally:
        if tmp is not None:
            try:
                os.remove(tmp)
            except OSError:
                pass
    _fsync_folder(folder)
    note_write(path)


def remove_stale_temporaries(save_dir: str) -> List[str]:
    """Removes the temporary files that killed writes left in ``save_dir``; returns their names.

    Only names atomic_write makes are touched. Call it while holding the folder's
    SaveDirLock: another run's temporary file is live until that run renames it.
    """
    removed = []
    try:
        names = sorted(os.listdir(save_dir))
    except OSError:
        return removed
    for name in names:
        path = os.path.join(save_dir, name)
        if _TEMP_NAME.fullmatch(name) and os.path.isfile(path) and not os.path.islink(path):
            try:
                os.remove(path)
                removed.append(name)
            except OSError as error:
                LOG.warning(f"could not remove the stale temporary file {path} ({error.strerror})")
    if removed:
        LOG.info(f"removed {len(removed)} temporary file(s) left in {save_dir} by an interrupted write")
    return removed


def file_digest(path: str) -> str:
    """``sha256:<hex>`` of a file's bytes (identifies a split file wherever it is moved)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as error:
        raise UserError(f"cannot read {path} ({error.strerror or error})") from None
    return "sha256:" + digest.hexdigest()


class SaveDirLock:
    """One run per save_dir: an exclusive OS lock on ``save_dir/.lock`` held for the run's life.

    The lock file names its holder (pid and command); the OS drops the lock when the holder
    exits, however it exits, so a killed run never leaves the folder locked.
    """

    NAME = ".lock"

    def __init__(self, save_dir: str):
        self.save_dir = save_dir
        self.path = os.path.join(save_dir, self.NAME)
        self._fd: Optional[int] = None

    def acquire(self) -> None:
        if self._fd is not None:  # already held (claim_save_dir, then ``with``)
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise UserError(f"--save_dir {self.save_dir} cannot be locked for this run: cannot open "
                            f"{self.path} ({error.strerror or error})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _read_holder(fd)
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UserError(f"--save_dir {self.save_dir} is in use by {holder}; "
                                "wait for it or choose another --save_dir") from None
            raise UserError(f"--save_dir {self.save_dir} cannot be locked for this run "
                            f"({error.strerror or error})") from None
        command = " ".join(sys.argv) or sys.executable
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n{command}\n".encode("utf-8", "replace"), 0)
        except OSError:
            pass  # the lock holds without the note of who holds it
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # a released lock names nobody
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "SaveDirLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def claim_save_dir(save_dir: str) -> SaveDirLock:
    """Locks ``save_dir`` for this run, then removes the temporaries of killed writes (in
    that order: before the lock, they may be another live run's). Release the returned
    lock (or use it as a context manager) when the run ends; exiting the process does too."""
    lock = SaveDirLock(save_dir)
    lock.acquire()
    try:
        remove_stale_temporaries(save_dir)
    except BaseException:
        lock.release()
        raise
    return lock


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
    except OSError:
        text = ""
    lines = text.splitlines()
    if lines and lines[0].strip().isdigit():
        command = lines[1].strip() if len(lines) > 1 else "?"
        return f"process {lines[0].strip()} ({command})"
    return "another process"


# ----------------------------------------------------------------------------- checkpoints
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
        rows = [row for row in self.rows() if keep(row)]
        self._rewrite(rows)

    def _rewrite(self, rows: List[Dict[str, Any]]) -> None:
        def write(handle: Any) -> None:
            writer = csv.DictWriter(handle, fieldnames=self.fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        atomic_write(self.path, write, mode="w")

    def append(self, row: Mapping[str, Any]) -> None:
        """Appends one row whole: one ``write`` call of the encoded line, so a killed run
        never leaves half a row; a disk-full short write is undone. The first row creates
        the file (with its header) atomically."""
        self.extend([row])

    def extend(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Appends ``rows`` in one durable write, as :meth:`append` appends one."""
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
            raise _write_error(self.path, error) from None
        try:
            size = _drop_partial_last_line(fd, self.path)
            line = header_and_line if size == 0 else header_and_line[header_end:]
            written = os.write(fd, line)
            if written != len(line):  # a short write: the disk filled up mid-row
                os.ftruncate(fd, size)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fsync(fd)
        except OSError as error:
            raise _write_error(self.path, error) from None
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
