"""Durable files: atomic writes (and the fault injection the crash tests use), input digests,
and the lock that keeps two runs out of one --save_dir."""
import contextlib
import errno
import fcntl
import hashlib
import itertools
import os
import re
import sys
import tempfile
import threading
from typing import Any, Callable, List, Optional

from utils import LOG, UserError

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
    if log := os.environ.get(WRITE_LOG_ENV, ""):
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
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _umask_lock:  # no /proc (not Linux): the only portable way sets it and restores it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def write_error(path: str, error: OSError) -> UserError:
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
        with contextlib.suppress(OSError):
            os.fsync(fd)
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
        raise write_error(path, error) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.remove(tmp)
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
        with contextlib.suppress(OSError):  # the lock holds without the note of who holds it
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n{command}\n".encode("utf-8", "replace"), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)  # a released lock names nobody
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
