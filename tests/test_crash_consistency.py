"""Crash consistency by fault injection: a run killed after any one of its writes, or in the
middle of the next one, and recovered as the README says, ends exactly as the run that was
never interrupted.

For a tiny seeded main_imp.py run and a tiny seeded main_PrAC_imp.py run, the uninterrupted
run is made once as a plain script (``PRAC_LTH_WRITE_LOG`` lists its N writes). Then for
every n in 1..N the run is made again with ``PRAC_LTH_DIE_AFTER_WRITE=n`` (it exits with 17
right after its n-th write, like SIGKILL), the leftover of a write n+1 killed half-way is
planted (a temporary file, or half a CSV row), and the run is recovered the way a user
would: the same command plus ``--resume``; when that is refused because the run died before
its first checkpoint, the command the refusal names. Every checkpoint (weights, masks,
optimiser, schedule, results, rewind weights, per-example records), best file, rewind
weight file, PrAC set, the final ticket and the rows of epochs.csv, rounds.csv and layers.csv (their
wall-time columns aside) must equal the uninterrupted run's.

The killed and recovering runs are forked from one process that has imported torch once
(a fresh process per run, killed for real, but without paying the imports 2N times).

Also here: one run per save_dir (the second gets one line naming the holder), and a resume
with other settings is refused in one line with nothing in save_dir changed.
"""
import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest

import durable
import paths
import outputs
from tests import datasets_on_disk
from tests.conftest import REPO, tiny_args
from tests.helpers import argv_for, assert_same_run

TRAIN_IMAGES, TEST_IMAGES = 50, 10  # 45 train + 5 validation: one or two batches an epoch
NO_CHECKPOINT = "found no checkpoint"
RESTART_MARKER = "without --resume: "

# A process that imports the scripts once, then runs each request in a forked child as
# ``python SCRIPT ARGV...`` would (run_cli, exit code, stdout and stderr to files).
FORK_SERVER = textwrap.dedent("""
    import itertools, json, os, signal, sys, traceback
    sys.path.insert(0, sys.argv[1])
    os.chdir(sys.argv[1])
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot, torch, torchvision
    import main_imp, main_PrAC_imp, main_train, durable, utils
    scripts = {"main_imp.py": main_imp, "main_PrAC_imp.py": main_PrAC_imp, "main_train.py": main_train}
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            signal.alarm(300)  # a hung run fails the test instead of hanging it
            try:
                for fd, name in ((1, "stdout"), (2, "stderr")):
                    out = os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    os.dup2(out, fd)
                    os.close(out)
                for key, value in request["env"].items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
                durable._write_numbers = itertools.count(1)  # a fresh process counts from 1
                sys.argv = [request["script"], *request["argv"]]
                try:
                    utils.run_cli(scripts[request["script"]].main)
                    code = 0
                except SystemExit as done:
                    code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
                except BaseException:
                    traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), flush=True)
""")


class ForkServer:
    def __init__(self, folder: str):
        self.folder = folder
        self.count = 0
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        for name in (durable.DIE_AFTER_WRITE_ENV, durable.WRITE_LOG_ENV):
            env.pop(name, None)
        self.process = subprocess.Popen([sys.executable, "-c", FORK_SERVER, REPO], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=env)
        assert self.process.stdout.readline().strip() == "ready"

    def run(self, script: str, argv: Sequence[str], die_after: Optional[int] = None) -> Tuple[int, str, str]:
        """Runs ``python script argv...`` in a fresh forked process; (exit code, stdout, stderr)."""
        self.count += 1
        out, err = (os.path.join(self.folder, f"{self.count}.{name}") for name in ("out", "err"))
        env = {durable.DIE_AFTER_WRITE_ENV: None if die_after is None else str(die_after)}
        request = {"script": script, "argv": list(argv), "stdout": out, "stderr": err, "env": env}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        with open(out) as handle_out, open(err) as handle_err:
            return answer["rc"], handle_out.read(), handle_err.read()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def run_real(script: str, argv: Sequence[str], **env: str) -> subprocess.CompletedProcess:
    """``python script argv...`` in a plain subprocess on one thread, with extra environment."""
    full_env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **env)
    for name in (durable.DIE_AFTER_WRITE_ENV, durable.WRITE_LOG_ENV):
        if name not in env:
            full_env.pop(name, None)
    return subprocess.run([sys.executable, script, *argv], capture_output=True, text=True, cwd=REPO,
                          env=full_env, timeout=600)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    root = tmp_path_factory.mktemp("crash_data")
    split = str(root / "split.npy")
    np.save(split, np.random.default_rng(5).permutation(TRAIN_IMAGES))
    other_split = str(root / "other_split.npy")
    np.save(other_split, np.random.default_rng(6).permutation(TRAIN_IMAGES))
    data = datasets_on_disk.write_cifar10(str(root / "data"), TRAIN_IMAGES, TEST_IMAGES)
    datasets_on_disk.write_cifar100(data, TRAIN_IMAGES, TEST_IMAGES)  # the same --data serves both
    # a ticket for main_train.py: one pruned round of a small IMP run
    ticket_run = str(root / "ticket_run")
    made = run_real("main_imp.py", tiny_args(data, ticket_run, "--epochs", "1", "--pruning_times", "1"))
    assert made.returncode == 0, made.stderr[-3000:]
    return {"data": data, "split": split, "other_split": other_split,
            "ticket": os.path.join(ticket_run, "final_ticket.pth.tar")}


@pytest.fixture(scope="module")
def fork_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = ForkServer(str(tmp_path_factory.mktemp("fork_server_output")))
    yield server
    server.close()


# script -> extra flags. IMP: rewind_lt with a rewind epoch (rewind weights, init_weight None
# before it), two rounds (LR rewinding, a final ticket). PrAC: constent keeps int(45 * 0.8) = 36
# examples, so round 1 trains on a PrAC set for int(3 * 36 / 45) = 2 scaled epochs; the rewind
# snapshot comes after epoch index 2 of round 0.
RUNS = {
    "main_imp.py": ["--epochs", "2", "--pruning_times", "2", "--prune_type", "rewind_lt", "--rewind_epoch", "1",
                    "--decreasing_lr", "1"],
    "main_PrAC_imp.py": ["--epochs", "3", "--pruning_times", "2", "--data_prune", "constent", "--data_rate", "0.2"],
    # main_train.py: a ticket retrained 3 epochs, the LR dropping after the first
    "main_train.py": ["--epochs", "3", "--decreasing_lr", "1"],
}
SEARCHES = ("main_imp.py", "main_PrAC_imp.py")
# every kind of file a run writes, and which run writes it
WRITE_KINDS = {
    "args.json": tuple(RUNS), "epochs.csv": tuple(RUNS), "rounds.csv": tuple(RUNS),
    "layers.csv": tuple(RUNS), "layers.png": tuple(RUNS),
    "{k}checkpoint.pth.tar": SEARCHES, "{k}model_SA_best.pth.tar": SEARCHES, "epoch_{e}_rewind_weight.pt": SEARCHES,
    "{k}net_train.png": SEARCHES, "final_ticket.pth.tar": SEARCHES, "{k}prac_set.npy": ("main_PrAC_imp.py",),
    "checkpoint.pth.tar": ("main_train.py",), "model_SA_best.pth.tar": ("main_train.py",),
    "net_train.png": ("main_train.py",),
}


def write_kind(name: str) -> str:
    for kind in WRITE_KINDS:
        head, _, tail = kind.replace("{e}", "{k}").partition("{k}")
        if (name == kind) or (tail and name.startswith(head) and name.endswith(tail)
                              and name[len(head):len(name) - len(tail)].isdigit()):
            return kind
    raise AssertionError(f"a write of an unexpected file: {name}")


def script_argv(script: str, data: Dict[str, str], save_dir: str) -> List[str]:
    extra = {"main_PrAC_imp.py": ["--split_file", data["split"]],
             "main_train.py": ["--init_dir", data["ticket"], "--mask_dir", data["ticket"]]}.get(script, [])
    return tiny_args(data["data"], save_dir, *extra, *RUNS[script])


def uninterrupted(script: str, data: Dict[str, str], root: Any) -> Tuple[List[str], List[str]]:
    """Runs the script once without interruption; (its argv, the file name of each write)."""
    log = str(root / "writes.log")
    argv = script_argv(script, data, str(root / "uninterrupted"))
    proc = run_real(script, argv, **{durable.WRITE_LOG_ENV: log})
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(log) as handle:
        entries = [line.rstrip("\n").split("\t") for line in handle]
    assert [int(number) for number, _ in entries] == list(range(1, len(entries) + 1))
    return argv, [os.path.basename(path) for _, path in entries]


def plant_interrupted_write(folder: str, name: str) -> None:
    """What a kill in the middle of writing ``name`` leaves: atomic_write's temporary file, or
    for a row appended to an existing table, a row without its end."""
    path = os.path.join(folder, name)
    if name.endswith(".csv") and os.path.exists(path):
        with open(path) as handle:
            last = handle.read().splitlines()[-1]
        with open(path, "a") as handle:
            handle.write(last[: len(last) // 2])
        return
    with open(os.path.join(folder, f"{durable.TEMP_PREFIX}k1ll3d_x{name}"), "wb") as handle:
        handle.write(b"PK\x03\x04 the first half of a file")


def recover(server: ForkServer, script: str, argv: List[str], folder: str) -> str:
    """Recovers a killed run as the README says; returns how ("resume" or "restart")."""
    had_checkpoint = paths.RunPaths(folder).newest_checkpoint() is not None
    rc, _, err = server.run(script, [*argv, "--resume"])
    if had_checkpoint:
        assert rc == 0, f"--resume failed:\n{err[-3000:]}"
        return "resume"
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and NO_CHECKPOINT in lines[0], f"rc {rc}:\n{err[-3000:]}"
    assert RESTART_MARKER in lines[0], lines[0]
    command = shlex.split(lines[0].split(RESTART_MARKER, 1)[1])
    assert command[:2] == ["python", script] and "--resume" not in command, command
    rc, _, err = server.run(script, command[2:])
    assert rc == 0, f"the named command failed:\n{err[-3000:]}"
    return "restart"


def kill_points(writes: List[str], every_write: bool) -> List[int]:
    """The writes after which a run is killed: all of them (the full tier), or three that take
    the three ways back (the quick tier): the last write before the first checkpoint (restart
    with the named command), an epochs.csv row after it (resume, a half row planted), and a
    later round's training set (resume across a round boundary, PrAC)."""
    if every_write:
        return list(range(1, len(writes) + 1))
    numbered = list(enumerate(writes, 1))
    first_checkpoint = next(n for n, name in numbered if name.endswith("checkpoint.pth.tar"))
    points = {max(1, first_checkpoint - 1)}
    points.update([n for n, name in numbered if n > first_checkpoint and name == "epochs.csv"][:1])
    points.update([n for n, name in numbered if name.endswith("prac_set.npy") and name != "0prac_set.npy"][:1])
    return sorted(points)


# The quick tier recovers main_PrAC_imp.py, the script with the most state, at three kill
# points; the full tier every script after every write.
@pytest.mark.parametrize("script, every_write",
                         [pytest.param("main_PrAC_imp.py", False, id="main_PrAC_imp.py-three_writes"),
                          *[pytest.param(script, True, marks=pytest.mark.full, id=f"{script}-every_write")
                            for script in sorted(RUNS)]])
def test_killed_after_any_write_recovers_exactly(script: str, every_write: bool, small_data: Dict[str, str],
                                                 fork_server: ForkServer,
                                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp(f"crash_{script.split('.')[0]}")
    started = time.time()
    argv, writes = uninterrupted(script, small_data, root)
    reference = str(root / "uninterrupted")
    kinds = {write_kind(name) for name in writes}
    assert kinds == {k for k, who in WRITE_KINDS.items() if script in who}, kinds
    how = {}
    for n in kill_points(writes, every_write):
        folder = str(root / f"killed_after_{n}")
        run_argv = argv_for(argv, folder)
        rc, _, err = fork_server.run(script, run_argv, die_after=n)
        assert rc == durable.DIE_AFTER_WRITE_EXIT_CODE, f"write {n} ({writes[n - 1]}): rc {rc}\n{err[-3000:]}"
        if n < len(writes):
            plant_interrupted_write(folder, writes[n])
        try:
            how[n] = recover(fork_server, script, run_argv, folder)
            assert_same_run(reference, folder)
        except AssertionError as error:
            raise AssertionError(f"killed after write {n} ({writes[n - 1]}): {error}") from None
        shutil.rmtree(folder)
    # the runs that died before their first checkpoint are the ones restarted
    first_checkpoint = writes.index("checkpoint.pth.tar" if script == "main_train.py" else "0checkpoint.pth.tar") + 1
    assert [n for n, way in how.items() if way == "restart"] == [n for n in how if n < first_checkpoint]
    print(f"\n{script}: {len(writes)} writes, killed after {len(how)} of them and recovered in "
          f"{time.time() - started:.0f}s")


# ============================================================================ one run per save_dir
HOLDER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[1])
    import checkpoint, durable, outputs, paths, utils
    lock = durable.claim_save_dir(sys.argv[2])
    print("holding", flush=True)
    time.sleep(300)
""")


def one_error_line(rc: int, stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
    return lines[0]


def listing(folder: str) -> Dict[str, Tuple[int, int, bytes]]:
    """Name -> (size, mtime in ns, content) of every file in ``folder``."""
    out = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        with open(path, "rb") as handle:
            out[name] = (os.stat(path).st_size, os.stat(path).st_mtime_ns, handle.read())
    return out


def test_second_run_on_a_locked_save_dir_is_one_line_naming_the_holder(small_data: Dict[str, str],
                                                                        fork_server: ForkServer,
                                                                        tmp_path: Any) -> None:
    folder = str(tmp_path / "run")
    os.makedirs(folder)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, REPO, folder], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        before = listing(folder)
        for script, extra in (("main_imp.py", ["--epochs", "1", "--pruning_times", "1"]),
                              ("main_PrAC_imp.py", ["--split_file", small_data["split"], "--epochs", "1",
                                                    "--pruning_times", "1"])):
            for resume in ([], ["--resume"]):
                line = one_error_line(*fork_server.run(script, tiny_args(small_data["data"], folder, *extra,
                                                                          *resume))[::2])
                assert f"--save_dir {folder} is in use by process {holder.pid} (" in line, line
            assert listing(folder) == before, f"{script} touched a locked save_dir"
    finally:
        holder.kill()
        holder.wait(timeout=30)


# ============================================================================ refused resumes
@pytest.fixture(scope="module")
def prac_run(small_data: Dict[str, str], fork_server: ForkServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A finished one-round PrAC run."""
    save_dir = str(tmp_path_factory.mktemp("refused_resume") / "prac")
    argv = tiny_args(small_data["data"], save_dir, "--split_file", small_data["split"], "--epochs", "1",
                      "--pruning_times", "1")
    rc, _, err = fork_server.run("main_PrAC_imp.py", argv)
    assert rc == 0, err[-3000:]
    return save_dir


REFUSED = {
    # name -> (script, extra flags, what the line names)
    "other_split_file": ("main_PrAC_imp.py", ["--split_file", "{other_split}"], "--split_file"),
    "other_dataset": ("main_PrAC_imp.py", ["--split_file", "{split}", "--dataset", "cifar100"], "--dataset"),
    "other_arch": ("main_PrAC_imp.py", ["--split_file", "{split}", "--arch", "res56s"], "--arch"),
    "other_select": ("main_PrAC_imp.py", ["--split_file", "{split}", "--select", "random"], "--select"),
    "prac_checkpoint_with_main_imp": ("main_imp.py", [], "main_PrAC_imp.py"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_resume_with_other_settings_is_one_line_and_writes_nothing(name: str, small_data: Dict[str, str],
                                                                   prac_run: str, fork_server: ForkServer) -> None:
    """Every file of the run keeps its bytes and mtime; log.txt may only grow (its lock-file
    neighbour .lock names each process that takes the lock)."""
    script, extra, keyword = REFUSED[name]
    extra = [flag.format(**small_data) for flag in extra]
    argv = tiny_args(small_data["data"], prac_run, "--epochs", "1", "--pruning_times", "1", *extra, "--resume")
    for flag in ("--arch", "--dataset"):
        if flag in extra:  # the later one wins in argparse; keep one
            del argv[argv.index(flag):argv.index(flag) + 2]
    before = listing(prac_run)
    line = one_error_line(*fork_server.run(script, argv)[::2])
    assert "belongs to another run" in line and keyword in line and "nothing was written" in line, line
    after = listing(prac_run)
    assert sorted(after) == sorted(before), f"files added or removed: {sorted(set(after) ^ set(before))}"
    changed = [n for n in before if n not in ("log.txt", ".lock") and after[n] != before[n]]
    assert not changed, f"changed: {changed}"
    assert after["log.txt"][2].startswith(before["log.txt"][2]), "log.txt was rewritten"


def test_a_cut_off_last_row_is_not_a_row_and_a_resume_rewrite_drops_it(tmp_path: Any) -> None:
    """Found by the test above: a resume rewrote a row cut off by an interrupted append as a
    whole (wrong) row, so epochs.csv held a row twice."""
    table = outputs.ResultTable(str(tmp_path / "epochs.csv"), ["round", "epoch", "val_acc"])
    for epoch in (1, 2):
        table.append({"round": 0, "epoch": epoch, "val_acc": 50.0 + epoch})
    with open(table.path, "a") as handle:
        handle.write("0,3,5")
    assert [row["epoch"] for row in table.rows()] == ["1", "2"]
    table.keep_only(lambda row: int(row["epoch"]) <= 1)
    with open(table.path, newline="") as handle:
        assert handle.read() == "round,epoch,val_acc\r\n0,1,51\r\n"
