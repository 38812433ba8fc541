"""launchers.py without a scheduler: run states from the records, the order of dependent jobs,
and the SLURM batch script run by bash as SLURM would run it. (tests/test_slurm.py submits to a
real scheduler.)"""
import os
import shlex
import socket
import subprocess
import sys
from typing import Any, List

import pytest

import launchers
from sweep import Job, Sweep
from utils import UserError


def make_sweep(out: str, *jobs: Job) -> Sweep:
    sweep = Sweep(out, ["prac"], [0], [], "final")
    sweep.jobs = list(jobs)
    return sweep


def job(out: str, name: str, after: Any = None) -> Job:
    return Job(name, "main_train.py", ["--seed", "0"], os.path.join(out, "runs", name), after=after)


def one_task(tmp_path: Any, name: str = "a") -> launchers.Task:
    out = str(tmp_path / "sweep")
    return launchers.tasks_of([make_sweep(out, job(out, name))], grid=False)[0]


def test_a_live_pid_of_another_command_is_not_the_run(tmp_path: Any) -> None:
    task = one_task(tmp_path)
    launchers.write_record(task, {"launcher": "local", "host": socket.gethostname(), "pid": os.getpid()})
    assert launchers.states_of([task])[task.key].state == launchers.FAILED


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.parametrize("record, state, detail", [
    (None, launchers.NOT_STARTED, ""),
    ({"exit_code": 3}, launchers.FAILED, "exit code 3; log {log}"),
    ({"exit_code": -15}, launchers.FAILED, "stopped by signal 15 with its sweep; log {log}"),
    ({"pid": "self"}, launchers.RUNNING, "pid {pid} on {host}"),
    ({"pid": "dead", "sweep_pid": 1}, launchers.FAILED, "its sweep (pid 1) stopped; log {log}"),
])
def test_a_local_runs_state_comes_from_its_record(tmp_path: Any, record: Any, state: str, detail: str) -> None:
    task = one_task(tmp_path)
    # a process whose command line holds the run's folder, as the run's script does
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", task.job.save_dir])
    pid = {"self": alive.pid, "dead": dead_pid()}.get((record or {}).get("pid"), 0)
    if record is not None:
        launchers.write_record(task, {"launcher": "local", "host": socket.gethostname(), **record,
                                      **({"pid": pid} if "pid" in record else {})})
    try:
        seen = launchers.states_of([task])[task.key]
    finally:
        alive.kill()
        alive.wait()
    assert (seen.state, seen.detail) == (state, detail.format(log=task.log, pid=pid, host=socket.gethostname()))
    launchers.mark_done(task)
    assert launchers.states_of([task])[task.key].state == launchers.DONE  # the marker wins


@pytest.mark.parametrize("queue, exit_file, state, detail", [
    ({"12": ("PENDING", "Dependency")}, None, launchers.QUEUED, "slurm job 12 (Dependency)"),
    ({"12": ("PENDING", "None")}, None, launchers.QUEUED, "slurm job 12"),
    ({"12": ("RUNNING", "None")}, None, launchers.RUNNING, "slurm job 12"),
    ({"12": ("TIMEOUT", "None")}, None, launchers.FAILED, "slurm job 12: TIMEOUT; log {log}"),
    ({"12": ("FAILED", "NonZeroExitCode")}, "12 1", launchers.FAILED, "slurm job 12: exit code 1; log {log}"),
    ({}, "12 1", launchers.FAILED, "slurm job 12: exit code 1; log {log}"),
    ({}, "11 1", launchers.FAILED,  # an earlier attempt's exit code says nothing of job 12
     "slurm job 12: ended unfinished (cancelled, timed out or its node lost); log {log}"),
    ({"12": ("COMPLETED", "None")}, None, launchers.FAILED,
     "slurm job 12: ended unfinished (cancelled, timed out or its node lost); log {log}"),
])
def test_a_slurm_runs_state_comes_from_squeue_and_its_exit_file(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                                                queue: Any, exit_file: Any, state: str,
                                                                detail: str) -> None:
    task = one_task(tmp_path)
    launchers.write_record(task, {"launcher": "slurm", "job_id": "12"})
    if exit_file:
        with open(task.path("jobs", ".exit"), "w") as handle:
            handle.write(exit_file + "\n")
    monkeypatch.setattr(launchers, "scheduler_states", lambda ids: {i: queue[i] for i in ids if i in queue})
    seen = launchers.states_of([task])[task.key]
    assert (seen.state, seen.detail) == (state, detail.format(log=task.log))
    assert seen.job_id == ("12" if state in launchers.ACTIVE else None)


def test_a_local_relaunch_refuses_while_slurm_jobs_are_queued(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    task = one_task(tmp_path)
    launchers.write_record(task, {"launcher": "slurm", "job_id": "12"})
    monkeypatch.setattr(launchers, "scheduler_states", lambda ids: {"12": ("PENDING", "Priority")})
    runner = launchers.LocalLauncher([task], 1, 0, sys.executable, lambda *a: ["true"])
    with pytest.raises(UserError, match="1 runs are queued or running elsewhere"):
        runner.run()


def test_local_runs_share_the_gpus_round_robin_and_split_the_cores(tmp_path: Any) -> None:
    """Each slot's processes get their own GPUs in turn; a CPU sweep sets no CUDA_VISIBLE_DEVICES."""
    task = one_task(tmp_path)
    one_each = launchers.LocalLauncher([task], 3, 2, sys.executable, lambda *a: ["true"])
    assert [one_each.environment(slot)["CUDA_VISIBLE_DEVICES"] for slot in range(3)] == ["0", "1", "0"]
    torchrun = launchers.LocalLauncher([task], 2, 4, sys.executable, lambda *a: ["true"], processes=2)
    assert [torchrun.environment(slot)["CUDA_VISIBLE_DEVICES"] for slot in range(2)] == ["0,1", "2,3"]
    cpu = launchers.LocalLauncher([task], 2, 0, sys.executable, lambda *a: ["true"]).environment(0)
    assert cpu.get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")
    assert cpu["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))


def test_jobs_are_submitted_after_what_they_depend_on(tmp_path: Any) -> None:
    out = str(tmp_path)
    sweep = make_sweep(out, job(out, "retrain", after="search"), job(out, "random", after=["prac", "search"]),
                       job(out, "search"), job(out, "prac"))
    order = [task.job.name for task in launchers.in_dependency_order(launchers.tasks_of([sweep], grid=False))]
    assert order == ["search", "retrain", "prac", "random"]
    circle = make_sweep(out, job(out, "a", after="b"), job(out, "b", after="a"))
    with pytest.raises(UserError, match="in a circle"):
        launchers.in_dependency_order(launchers.tasks_of([circle], grid=False))


def run_batch_script(task: launchers.Task, command: List[str], job_id: str = "7") -> subprocess.CompletedProcess:
    options = launchers.SlurmOptions(partition="gpu", time="1:00:00", cpus_per_run=4, gpus_per_run=2, mem="8G",
                                     sbatch_lines=["--account=abc", "qos=high"])
    launcher = launchers.SlurmLauncher([task], options, sys.executable, lambda *args: command, processes=2)
    script = launcher.batch_script(task)
    for line in ["--partition=gpu", "--time=1:00:00", "--cpus-per-task=4", "--gres=gpu:2", "--mem=8G",
                 "--account=abc", "--qos=high", f"--output={task.log}", "--open-mode=append"]:
        assert f"#SBATCH {line}\n" in script
    assert "export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2\n" in script  # 4 CPUs for 2 processes
    path = str(task.path("jobs", ".sbatch"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(script)
    return subprocess.run(["bash", path], capture_output=True, text=True, env=dict(os.environ, SLURM_JOB_ID=job_id))


def test_the_batch_script_marks_done_records_its_exit_and_resumes(tmp_path: Any) -> None:
    """Run by bash as SLURM runs it: exit 0 writes done/ and the exit file; a run folder with
    a checkpoint gets --resume."""
    task = one_task(tmp_path)
    command = [sys.executable, "-c", "import sys; print('args', sys.argv[1:])"]
    ran = run_batch_script(task, command)
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0] == f"$ {shlex.join(command)}"  # the log's first line, as the local launcher writes it
    assert lines[1].startswith("# slurm job 7 on ") and lines[2] == "args []"
    assert os.path.exists(task.path("done")) and open(task.path("jobs", ".exit")).read() == "7 0\n"

    again = one_task(tmp_path, "b")
    os.makedirs(again.job.save_dir)
    open(os.path.join(again.job.save_dir, "2checkpoint.pth.tar"), "w").close()
    failed = run_batch_script(again, [sys.executable, "-c", "import sys; print('args', sys.argv[1:]); sys.exit(3)"],
                              job_id="8")
    assert failed.returncode == 3
    assert failed.stdout.splitlines()[0].endswith(" --resume") and "args ['--resume']" in failed.stdout
    assert not os.path.exists(again.path("done")) and open(again.path("jobs", ".exit")).read() == "8 3\n"


@pytest.mark.parametrize("given, line", [("--account=abc", "--account=abc"), ("account=abc", "--account=abc"),
                                         ("#SBATCH --qos=high", "--qos=high"), ("-A abc", "-A abc")])
def test_extra_sbatch_lines_are_normalised(given: str, line: str) -> None:
    assert launchers.sbatch_line(given) == line
