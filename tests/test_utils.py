"""Durable writes, the fault-injection counter, the save_dir lock and safe checkpoint loads."""
import errno
import os
import signal
import stat
import subprocess
import sys
import textwrap
from typing import Iterator, List

import pytest
import torch

import checkpoint
import durable
import outputs
import utils
from checkpoint import load_checkpoint
from durable import SaveDirLock, atomic_write, remove_stale_temporaries
from outputs import ResultTable
from tests.conftest import REPO
from tests.helpers import Payload, one_line
from utils import UserError


@pytest.fixture
def umask() -> Iterator[None]:
    """Restores the process umask after a test that sets it."""
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


def mode_of(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def temporaries(folder: str) -> List[str]:
    return [name for name in os.listdir(folder) if name.startswith(durable.TEMP_PREFIX)]


# ----------------------------------------------------------------------------- atomic_write
@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002, 0o077])
def test_atomic_write_honours_the_umask(tmp_path, umask: None, mask: int) -> None:
    os.umask(mask)
    assert durable.current_umask() == mask
    path = str(tmp_path / "result.json")
    atomic_write(path, lambda handle: handle.write("{}"), mode="w")
    assert mode_of(path) == 0o666 & ~mask
    table = ResultTable(str(tmp_path / "epochs.csv"), ["round", "epoch"])
    table.append({"round": 0, "epoch": 1})
    assert mode_of(table.path) == 0o666 & ~mask


def test_atomic_write_error_is_one_line_and_keeps_the_previous_file(tmp_path) -> None:
    path = tmp_path / "0checkpoint.pth.tar"
    path.write_bytes(b"previous checkpoint")

    def disk_full(handle) -> None:
        handle.write(b"half of the new checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(UserError) as info:
        atomic_write(str(path), disk_full)
    assert one_line(info.value)
    assert str(path) in str(info.value) and "No space left on device" in str(info.value)
    assert path.read_bytes() == b"previous checkpoint"
    assert temporaries(str(tmp_path)) == []


def test_torch_save_on_a_full_disk_is_one_line(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save's own writes fail as they would on a full disk."""
    path = tmp_path / "checkpoint.pth.tar"
    checkpoint.save_checkpoint({"weights": torch.zeros(10)}, str(path))
    before = path.read_bytes()
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def write(self, data) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.handle.close()

    monkeypatch.setattr(utils.os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    with pytest.raises(UserError, match="No space left on device"):
        checkpoint.save_checkpoint({"weights": torch.ones(1000)}, str(path))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert temporaries(str(tmp_path)) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_atomic_write_into_a_read_only_folder_is_one_line(tmp_path) -> None:
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(UserError, match="Permission denied") as info:
            atomic_write(str(folder / "x.json"), lambda handle: handle.write("{}"), mode="w")
        assert one_line(info.value)
    finally:
        folder.chmod(0o755)


def test_remove_stale_temporaries_removes_only_ours(tmp_path) -> None:
    ours = [".tmp-ab_c9x1z0checkpoint.pth.tar", ".tmp-00000000epochs.csv"]
    others = [".tmp-short", "notes.tmp-abcdefgh1", "0checkpoint.pth.tar", ".lock", ".tmp-ABCDEFGHx"]
    for name in ours + others:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".tmp-zzzzzzzzdir").mkdir()
    removed = remove_stale_temporaries(str(tmp_path))
    assert sorted(removed) == sorted(ours)
    assert sorted(os.listdir(tmp_path)) == sorted(others + [".tmp-zzzzzzzzdir"])
    assert remove_stale_temporaries(str(tmp_path / "absent")) == []


def test_a_killed_write_leaves_a_temporary_that_is_then_removed(tmp_path) -> None:
    """SIGKILL in the middle of a write: the previous file survives and the temporary it
    leaves is recognised as stale."""
    path = tmp_path / "0checkpoint.pth.tar"
    path.write_bytes(b"previous")
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {REPO!r})
        import checkpoint, durable, outputs, paths, utils
        def write(handle):
            handle.write(b"partial")
            handle.flush()
            print("writing", flush=True)
            time.sleep(60)
        durable.atomic_write({str(path)!r}, write)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert path.read_bytes() == b"previous"
    stale = temporaries(str(tmp_path))
    assert len(stale) == 1
    assert remove_stale_temporaries(str(tmp_path)) == stale
    assert temporaries(str(tmp_path)) == []


# ----------------------------------------------------------------------------- ResultTable
def test_result_table_appends_whole_rows(tmp_path) -> None:
    table = ResultTable(str(tmp_path / "epochs.csv"), ["round", "epoch", "val_acc"])
    for epoch in range(3):
        table.append({"round": 0, "epoch": epoch, "val_acc": 10.0 + epoch, "extra": "ignored"})
    assert [row["epoch"] for row in table.rows()] == ["0", "1", "2"]
    assert table.rows()[2]["val_acc"] == "12"
    table.keep_only(lambda row: int(row["epoch"]) < 2)
    table.append({"round": 0, "epoch": 2, "val_acc": None})
    assert [(row["epoch"], row["val_acc"]) for row in table.rows()] == [("0", "10"), ("1", "11"), ("2", "")]


def test_result_table_drops_a_cut_off_last_row(tmp_path) -> None:
    path = tmp_path / "epochs.csv"
    table = ResultTable(str(path), ["round", "epoch"])
    table.append({"round": 0, "epoch": 0})
    with open(path, "ab") as handle:
        handle.write(b"0,")  # what a crash mid-row of an older version leaves
    table.append({"round": 0, "epoch": 1})
    assert [row["epoch"] for row in table.rows()] == ["0", "1"]


def test_result_table_short_write_is_undone_and_one_line(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "epochs.csv"
    table = ResultTable(str(path), ["round", "epoch"])
    table.append({"round": 0, "epoch": 0})
    before = path.read_bytes()
    real_write = os.write

    def half_write(fd: int, data: bytes) -> int:
        return real_write(fd, data[: len(data) // 2])

    monkeypatch.setattr(utils.os, "write", half_write)
    with pytest.raises(UserError) as info:
        table.append({"round": 0, "epoch": 1})
    monkeypatch.undo()
    assert one_line(info.value) and str(path) in str(info.value)
    assert path.read_bytes() == before


def test_result_table_write_error_is_one_line(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "epochs.csv"
    table = ResultTable(str(path), ["round", "epoch"])
    table.append({"round": 0, "epoch": 0})

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(utils.os, "write", full)
    with pytest.raises(UserError, match="No space left on device") as info:
        table.append({"round": 0, "epoch": 1})
    assert one_line(info.value)


# ----------------------------------------------------------------------------- fault injection
WRITER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, sys.argv[1])
    import checkpoint, durable, outputs, paths, utils
    folder = sys.argv[2]
    table = outputs.ResultTable(os.path.join(folder, "epochs.csv"), ["epoch"])
    for i in range(1, 6):
        if i % 2:
            durable.atomic_write(os.path.join(folder, f"file{i}"), lambda handle: handle.write(b"x"))
        else:
            table.append({"epoch": i})
    print("finished")
""")


def run_writer(folder: str, die_after: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop(durable.DIE_AFTER_WRITE_ENV, None)
    if die_after:
        env[durable.DIE_AFTER_WRITE_ENV] = die_after
    return subprocess.run([sys.executable, "-c", WRITER, REPO, folder], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.mark.parametrize("die_after", [1, 2, 3, 4])
def test_die_after_write_kills_right_after_the_nth_write(tmp_path, die_after: int) -> None:
    proc = run_writer(str(tmp_path), str(die_after))
    assert proc.returncode == durable.DIE_AFTER_WRITE_EXIT_CODE, proc.stderr
    assert "finished" not in proc.stdout
    written = [i for i in (1, 3, 5) if (tmp_path / f"file{i}").exists()]
    assert written == [i for i in (1, 3, 5) if i <= die_after]
    rows = ResultTable(str(tmp_path / "epochs.csv"), ["epoch"]).rows()
    assert [int(row["epoch"]) for row in rows] == [i for i in (2, 4) if i <= die_after]
    assert temporaries(str(tmp_path)) == []


def test_without_die_after_write_the_run_finishes(tmp_path) -> None:
    proc = run_writer(str(tmp_path))
    assert proc.returncode == 0 and "finished" in proc.stdout, proc.stderr
    proc = run_writer(str(tmp_path / "more"), "9")  # more writes asked than happen
    assert proc.returncode != durable.DIE_AFTER_WRITE_EXIT_CODE


def test_die_after_write_must_be_a_number(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(durable.DIE_AFTER_WRITE_ENV, "soon")
    with pytest.raises(UserError, match=durable.DIE_AFTER_WRITE_ENV):
        durable.note_write(str(tmp_path / "x"))


# ----------------------------------------------------------------------------- SaveDirLock
HOLDER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[1])
    import checkpoint, durable, outputs, paths, utils
    with durable.SaveDirLock(sys.argv[2]):
        print("holding", flush=True)
        time.sleep(120)
""")

TAKER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    import checkpoint, durable, outputs, paths, utils
    utils.run_cli(lambda argv: durable.SaveDirLock(sys.argv[2]).__enter__())
    print("took it")
""")


def start_holder(folder: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, REPO, folder, "--marker"], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_second_process_on_a_save_dir_is_refused_naming_the_holder(tmp_path) -> None:
    folder = str(tmp_path)
    holder = start_holder(folder)
    try:
        taker = subprocess.run([sys.executable, "-c", TAKER, REPO, folder], capture_output=True, text=True,
                               timeout=120)
        assert taker.returncode == 2 and "took it" not in taker.stdout
        lines = taker.stderr.strip().splitlines()
        assert len(lines) == 1, taker.stderr
        assert lines[0].startswith(f"error: --save_dir {folder} is in use by process {holder.pid} (")
        assert "--marker" in lines[0] and lines[0].endswith("wait for it or choose another --save_dir")
        with pytest.raises(UserError, match=f"in use by process {holder.pid}"):
            with SaveDirLock(folder):
                pass
    finally:
        holder.kill()
        holder.wait(timeout=30)
    # a killed holder leaves no lock behind
    with SaveDirLock(folder):
        with open(os.path.join(folder, ".lock")) as handle:
            assert handle.read().splitlines()[0] == str(os.getpid())
    taker = subprocess.run([sys.executable, "-c", TAKER, REPO, folder], capture_output=True, text=True, timeout=120)
    assert taker.returncode == 0 and "took it" in taker.stdout, taker.stderr


def test_released_lock_names_nobody_and_can_be_taken_again(tmp_path) -> None:
    lock = SaveDirLock(str(tmp_path))
    with lock:
        assert (tmp_path / ".lock").read_text().startswith(f"{os.getpid()}\n")
    assert (tmp_path / ".lock").read_bytes() == b""
    with SaveDirLock(str(tmp_path)):
        pass


def test_claim_save_dir_locks_then_clears_stale_temporaries(tmp_path) -> None:
    (tmp_path / ".tmp-abcdefghcheckpoint.pth.tar").write_bytes(b"half")
    (tmp_path / "0checkpoint.pth.tar").write_bytes(b"whole")
    with durable.claim_save_dir(str(tmp_path)):
        assert sorted(os.listdir(tmp_path)) == [".lock", "0checkpoint.pth.tar"]
        with pytest.raises(UserError, match="is in use by process"):
            durable.claim_save_dir(str(tmp_path))
    durable.claim_save_dir(str(tmp_path)).release()


def test_lock_in_a_missing_folder_is_one_line(tmp_path) -> None:
    with pytest.raises(UserError) as info:
        SaveDirLock(str(tmp_path / "absent")).acquire()
    assert one_line(info.value) and "cannot be locked" in str(info.value)


# ----------------------------------------------------------------------------- checkpoints
class Opaque:
    pass


def test_checkpoint_carrying_code_gets_its_own_message(tmp_path) -> None:
    marker = tmp_path / "payload_ran"
    path = str(tmp_path / "evil.pth.tar")
    torch.save({"state_dict": {}, "payload": Payload(str(marker))}, path)
    with pytest.raises(UserError) as info:
        load_checkpoint(path)
    assert not marker.exists()
    message = str(info.value)
    assert one_line(info.value) and "carries code or objects" in message and "system" in message
    assert "corrupt" not in message and "--trust_checkpoints" in message and "trust" in message


def test_checkpoint_carrying_an_object_names_its_class(tmp_path) -> None:
    path = str(tmp_path / "object.pth.tar")
    torch.save({"state_dict": {}, "extra": Opaque()}, path)
    with pytest.raises(UserError, match=r"carries code or objects .*\(global tests\.test_utils\.Opaque\)"):
        load_checkpoint(path, "--mask_dir")
    assert isinstance(load_checkpoint(path, trust=True)["extra"], Opaque)


def test_corrupt_checkpoint_is_still_corrupt(tmp_path) -> None:
    path = tmp_path / "corrupt.pth.tar"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_checkpoint(str(path))


def test_file_digest(tmp_path) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    (tmp_path / "b").write_bytes(b"abc")
    (tmp_path / "c").write_bytes(b"abd")
    digest = durable.file_digest(str(tmp_path / "a"))
    assert digest == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert digest == durable.file_digest(str(tmp_path / "b")) != durable.file_digest(str(tmp_path / "c"))
    with pytest.raises(UserError):
        durable.file_digest(str(tmp_path / "absent"))


def test_run_info_records_extra_facts(tmp_path) -> None:
    import json
    path = str(tmp_path / "args.json")
    outputs.save_run_info(path, "main_imp.py", {"data": "../data"}, "cpu",
                        extra={"data_source": "/usr/share/datasets/fashion-mnist"})
    with open(path) as handle:
        info = json.load(handle)
    assert info["arguments"] == {"data": "../data"}
    assert info["data_source"] == "/usr/share/datasets/fashion-mnist"
