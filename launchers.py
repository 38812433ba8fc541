"""Where a sweep's runs run: child processes of sweep.py (``local``) or SLURM jobs (``slurm``);
and every run's state (done, queued, running, failed, not started) for ``--status`` and for
relaunching.

A launcher gets the planned jobs (sweep.py's ``Job`` list, each setting of a grid its own
``Sweep``) and starts what is not finished; it knows nothing of methods, seeds or scripts.
Per setting folder it keeps:

    logs/<name>.log      the run's output, headed by its command (appended to by each attempt)
    done/<name>          written when the command exited 0 (by sweep.py, or by the SLURM job)
    jobs/<name>.json     the newest attempt: launcher, SLURM job id or local pid, exit code
    jobs/<name>.sbatch   (slurm) the batch script submitted
    jobs/<name>.exit     (slurm) "JOB_ID EXIT_CODE", written by the batch script as it ends

SLURM is driven through ``sbatch`` directly rather than submitit: each run is the script's own
command line in a batch script one can read and resubmit by hand, and the sweep needs no
Python package on the cluster beyond the project's own (submitit would pickle a Python call).
"""
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from durable import atomic_write
from paths import CHECKPOINT_NAME, RunPaths
from utils import UserError

DONE, QUEUED, RUNNING, FAILED, NOT_STARTED = "done", "queued", "running", "failed", "not started"
ACTIVE = (QUEUED, RUNNING)
# squeue's job states (slurm 22.05) as a sweep sees them; any other state of a job that left
# the queue (CANCELLED, TIMEOUT, PREEMPTED, NODE_FAIL, OUT_OF_MEMORY, ...) is a failure.
SLURM_QUEUED = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD",
                "SUSPENDED", "STOPPED"}
SLURM_RUNNING = {"RUNNING", "COMPLETING", "RESIZING", "SIGNALING", "STAGE_OUT"}
POLL_S = 2.0  # how often --wait asks squeue
REPO = os.path.dirname(os.path.abspath(__file__))  # the runs' working folder
Command = Callable[[Any, str, bool, int], List[str]]  # (job, python, resume, processes) -> argv


@dataclass
class Task:
    """One planned job in its setting: ``sweep`` gives the folder, ``job`` the command."""
    sweep: Any  # sweep.Sweep
    job: Any  # sweep.Job
    label: str  # the job's name, prefixed with its setting's folder in a grid

    @property
    def key(self) -> Tuple[str, str]:
        return self.sweep.out, self.job.name

    def path(self, folder: str, suffix: str = "") -> str:
        return self.sweep.path(folder, self.job.name + suffix)

    @property
    def log(self) -> str:
        return self.path("logs", ".log")


@dataclass
class RunState:
    state: str
    detail: str = ""
    job_id: Optional[str] = None  # the SLURM job of a queued or running run


def tasks_of(sweeps: Sequence[Any], grid: bool) -> List[Task]:
    return [Task(sweep, job, f"{os.path.basename(sweep.out)}/{job.name}" if grid else job.name)
            for sweep in sweeps for job in sweep.jobs]


def dependency_tasks(task: Task, tasks: Sequence[Task]) -> List[Task]:
    """The tasks ``task`` runs after (its job's ``after`` is one name, several, or None)."""
    after = task.job.after
    names = [] if after is None else [after] if isinstance(after, str) else list(after)
    by_key = {other.key: other for other in tasks}
    return [by_key[(task.sweep.out, name)] for name in names]


def in_dependency_order(tasks: Sequence[Task]) -> List[Task]:
    """The tasks with every one after the tasks it depends on (the plan's order where it already is)."""
    placed: Dict[Tuple[str, str], Task] = {}

    def place(task: Task, chain: Tuple[Tuple[str, str], ...]) -> None:
        if task.key in placed:
            return
        if task.key in chain:
            raise UserError(f"the sweep's jobs depend on each other in a circle through {task.label}")
        for dependency in dependency_tasks(task, tasks):
            place(dependency, (*chain, task.key))
        placed[task.key] = task

    for task in tasks:
        place(task, ())
    return list(placed.values())


def missing_input(task: Task, tasks: Sequence[Task]) -> Optional[str]:
    """Why ``task`` cannot run although its dependencies finished (a ticket they did not write)."""
    needs = task.job.needs_file
    source = dependency_tasks(task, tasks)[0] if needs else None
    if source and os.path.exists(source.path("done")) and not os.path.exists(needs):
        return f"{source.job.name} finished without writing {needs}"
    return None


def read_record(task: Task) -> Optional[Dict[str, Any]]:
    try:
        with open(task.path("jobs", ".json")) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def write_record(task: Task, record: Dict[str, Any]) -> None:
    os.makedirs(task.sweep.path("jobs"), exist_ok=True)
    atomic_write(task.path("jobs", ".json"), lambda handle: json.dump(record, handle), mode="w")


def mark_done(task: Task) -> None:
    os.makedirs(task.sweep.path("done"), exist_ok=True)
    atomic_write(task.path("done"), lambda handle: handle.write(b"ok\n"))


# ============================================================================ states
def scheduler_states(job_ids: Iterable[str]) -> Dict[str, Tuple[str, str]]:
    """job id -> (squeue state, reason) for the given jobs that SLURM still knows."""
    wanted = set(job_ids)
    if not wanted:
        return {}
    try:
        result = subprocess.run(["squeue", "-h", "-t", "all", "-j", ",".join(sorted(wanted)), "-o", "%i|%T|%r"],
                                capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise UserError("squeue is not installed: this sweep has SLURM jobs, ask on a machine of the cluster") from None
    except subprocess.TimeoutExpired:
        raise UserError("squeue did not answer in 60 s; is the SLURM controller up?") from None
    if result.returncode != 0:
        if "Invalid job id" in result.stderr:
            # None of them is known any more (squeue forgets finished jobs after MinJobAge).
            return {}
        raise UserError(f"squeue failed: {first_line(result.stderr)}; is the SLURM controller up "
                        "(.ci/slurm.sh start starts a local one)?")
    rows = [line.strip().split("|") for line in result.stdout.splitlines()]
    return {row[0]: (row[1], row[2]) for row in rows if len(row) == 3 and row[0] in wanted}


def first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"


def runs_job(pid: int, save_dir: str) -> bool:
    """Whether process ``pid`` is alive and (where /proc tells) still the run of ``save_dir``,
    not a later process that got the same pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return os.fsencode(save_dir) in handle.read().split(b"\0")
    except OSError:
        return True  # no /proc here: alive is all we know


def read_exit(task: Task) -> Optional[Tuple[str, int]]:
    try:
        with open(task.path("jobs", ".exit")) as handle:
            job_id, code = handle.read().split()
        return job_id, int(code)
    except (OSError, ValueError):
        return None


def states_of(tasks: Sequence[Task]) -> Dict[Tuple[str, str], RunState]:
    """Every task's state. SLURM is asked first and the done markers read after, so a job that
    ends in between is seen as done (the batch script writes the marker before it exits)."""
    records = {task.key: read_record(task) for task in tasks}
    scheduler = scheduler_states(str(record["job_id"]) for record in records.values()
                                 if record and record.get("launcher") == "slurm")
    return {task.key: state_of(task, records[task.key], scheduler) for task in tasks}


def state_of(task: Task, record: Optional[Dict[str, Any]], scheduler: Dict[str, Tuple[str, str]]) -> RunState:
    if os.path.exists(task.path("done")):
        return RunState(DONE)
    if record is None:
        return RunState(NOT_STARTED)
    if record.get("launcher") == "slurm":
        return slurm_state(task, str(record["job_id"]), scheduler)
    # a child process of a local sweep
    if "exit_code" in record:
        code = record["exit_code"]
        why = f"stopped by signal {-code} with its sweep" if code < 0 else f"exit code {code}"
        return RunState(FAILED, f"{why}; log {task.log}")
    if record.get("host") == socket.gethostname() and not runs_job(int(record.get("pid", 0)), task.job.save_dir):
        return RunState(FAILED, f"its sweep (pid {record.get('sweep_pid')}) stopped; log {task.log}")
    return RunState(RUNNING, f"pid {record.get('pid')} on {record.get('host')}")


def slurm_state(task: Task, job_id: str, scheduler: Dict[str, Tuple[str, str]]) -> RunState:
    state, reason = scheduler.get(job_id, ("", ""))
    reason = f" ({reason})" if reason and reason != "None" else ""
    if state in SLURM_QUEUED:
        return RunState(QUEUED, f"slurm job {job_id}{reason}", job_id)
    if state in SLURM_RUNNING:
        return RunState(RUNNING, f"slurm job {job_id}", job_id)
    ended = read_exit(task)
    if ended and ended[0] == job_id and ended[1] != 0:
        why = f"exit code {ended[1]}"
    elif state and state != "COMPLETED":
        why = state + reason
    else:
        why = "ended unfinished (cancelled, timed out or its node lost)"
    return RunState(FAILED, f"slurm job {job_id}: {why}; log {task.log}")


def status_table(tasks: Sequence[Task], states: Dict[Tuple[str, str], RunState]) -> str:
    width = max([len("run"), *(len(task.label) for task in tasks)])
    lines = [f"{'run':<{width}}  {'state':<11}  detail"]
    lines += [f"{task.label:<{width}}  {states[task.key].state:<11}  {states[task.key].detail}".rstrip()
              for task in tasks]
    counts = [f"{sum(s.state == name for s in states.values())} {name}"
              for name in (DONE, RUNNING, QUEUED, FAILED, NOT_STARTED)]
    lines.append(f"{len(tasks)} runs: " + ", ".join(counts))
    return "\n".join(lines)


def refuse_active(tasks: Sequence[Task], states: Dict[Tuple[str, str], RunState]) -> None:
    active = [task.label for task in tasks if states[task.key].state in ACTIVE]
    if active:
        raise UserError(f"{len(active)} runs are queued or running elsewhere ({', '.join(active[:3])}"
                        f"{', ...' if len(active) > 3 else ''}; see sweep.py --status): wait for them or cancel them, "
                        "then relaunch")


def say(text: str) -> None:
    """One line of the sweep's progress, stamped with the time."""
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


# ============================================================================ local
class LocalLauncher:
    """Runs the jobs ``parallel`` at a time as child processes, each after its dependencies."""

    def __init__(self, tasks: Sequence[Task], parallel: int, gpus: int, python: str, command: Command,
                 processes: int = 1):
        """``gpus``: the CUDA devices the runs share round robin (0: none, the runs use the CPU)."""
        self.tasks, self.parallel, self.gpus, self.python, self.command = list(tasks), parallel, gpus, python, command
        self.processes = processes  # per run, through torchrun
        # Split the cores: two 2-thread processes on 2 cores run ~17x slower than one.
        self.threads = max(1, (os.cpu_count() or 1) // (parallel * processes))
        self.failed: Dict[str, str] = {}

    def environment(self, slot: int) -> Dict[str, str]:
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads))
        if self.gpus:
            # one GPU per process, round robin (a torchrun job gets --nproc_per_node of them)
            first = slot * self.processes
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str((first + k) % self.gpus) for k in range(self.processes))
        return env

    def start(self, task: Task, slot: int) -> subprocess.Popen:
        resume = RunPaths(task.job.save_dir).newest_checkpoint() is not None
        command = self.command(task.job, self.python, resume, self.processes)
        os.makedirs(os.path.dirname(task.log), exist_ok=True)
        with open(task.log, "a") as log:
            log.write(f"$ {shlex.join(command)}\n")
            log.flush()
            say(f"start {task.label}{' (resuming)' if resume else ''}")
            process = subprocess.Popen(command, cwd=REPO, env=self.environment(slot), stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        write_record(task, {"launcher": "local", "host": socket.gethostname(), "pid": process.pid,
                            "sweep_pid": os.getpid(), "started": time.time()})
        return process

    def finish(self, task: Task, code: int) -> None:
        write_record(task, dict(read_record(task) or {}, exit_code=code))
        if code == 0:
            mark_done(task)
            say(f"done  {task.label}")
        else:
            self.failed[task.label] = f"exit code {code}; see {task.log}"
            say(f"FAILED {task.label}: {self.failed[task.label]}")

    def blocked_reason(self, task: Task) -> Optional[str]:
        failed = [dep.job.name for dep in dependency_tasks(task, self.tasks) if dep.label in self.failed]
        return f"{failed[0]} failed" if failed else missing_input(task, self.tasks)

    def run(self) -> None:
        states = states_of(self.tasks)
        refuse_active(self.tasks, states)
        pending = [task for task in self.tasks if states[task.key].state != DONE]
        if len(pending) < len(self.tasks):
            print(f"{len(self.tasks) - len(pending)} of {len(self.tasks)} runs already finished; skipping them")
        running: Dict[int, Tuple[Task, subprocess.Popen]] = {}  # slot -> (task, process)
        try:
            while pending or running:
                for slot, (task, process) in list(running.items()):
                    if process.poll() is not None:
                        del running[slot]
                        self.finish(task, process.returncode)
                for task in list(pending):
                    reason = self.blocked_reason(task)
                    if reason:
                        pending.remove(task)
                        self.failed[task.label] = f"not run: {reason}"
                        continue
                    free = [slot for slot in range(self.parallel) if slot not in running]
                    if not free:
                        break
                    if not all(os.path.exists(dep.path("done")) for dep in dependency_tasks(task, self.tasks)):
                        continue
                    pending.remove(task)
                    running[free[0]] = (task, self.start(task, free[0]))
                time.sleep(0.5)
        except KeyboardInterrupt:
            print("interrupted: relaunch the same command to resume the unfinished runs", file=sys.stderr)
            sys.exit(130)
        finally:
            # No run outlives the sweep: an orphan would hold its save_dir's lock on relaunch.
            for task, process in running.values():
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
                    write_record(task, dict(read_record(task) or {}, exit_code=process.wait()))


# ============================================================================ slurm
@dataclass
class SlurmOptions:
    """What a cluster asks of each job; None leaves SLURM's (or the partition's) default."""
    partition: Optional[str] = None
    time: Optional[str] = None  # sbatch --time, e.g. 4:00:00
    cpus_per_run: Optional[int] = None  # default: one per torchrun process
    gpus_per_run: int = 0
    mem: Optional[str] = None  # sbatch --mem, e.g. 16G
    sbatch_lines: Sequence[str] = ()  # more #SBATCH lines, e.g. --account=abc, --qos=high
    wait: bool = False


def sbatch_line(text: str) -> str:
    """``--account=abc`` or ``account=abc`` -> ``--account=abc``; ``-A abc`` stays as given."""
    text = text.strip()
    if text.startswith("#SBATCH"):
        text = text[len("#SBATCH"):].strip()
    return text if text.startswith("-") else "--" + text


def resume_test(save_dir: str) -> str:
    """A shell condition true when ``save_dir`` holds a checkpoint to resume (the name pattern is
    paths.CHECKPOINT_NAME's; Python without imports starts in milliseconds)."""
    code = ("import os, re, sys; d = sys.argv[2]; "
            "sys.exit(0 if os.path.isdir(d) and any(re.match(sys.argv[1], n) for n in os.listdir(d)) else 1)")
    return shlex.join([sys.executable, "-c", code, CHECKPOINT_NAME.pattern, save_dir])


class SlurmLauncher:
    """Submits every unfinished run as one SLURM job (``sbatch``), after the jobs it depends on
    (``--dependency=afterok``), never twice while one is queued or running."""

    def __init__(self, tasks: Sequence[Task], options: SlurmOptions, python: str, command: Command, processes: int = 1):
        self.tasks, self.options, self.python, self.command = list(tasks), options, python, command
        self.processes = processes
        self.failed: Dict[str, str] = {}
        self.submitted: List[str] = []

    def batch_script(self, task: Task) -> str:
        options = self.options
        cpus = self.processes if options.cpus_per_run is None else options.cpus_per_run
        threads = max(1, cpus // self.processes)
        lines = ["#!/bin/bash", f"#SBATCH --job-name={task.label}", f"#SBATCH --output={task.log}",
                 "#SBATCH --open-mode=append", "#SBATCH --nodes=1", "#SBATCH --ntasks=1",
                 f"#SBATCH --cpus-per-task={cpus}"]
        asked = {"partition": options.partition, "time": options.time, "mem": options.mem,
                 "gres": f"gpu:{options.gpus_per_run}" if options.gpus_per_run else None}
        lines += [f"#SBATCH --{name}={value}" for name, value in asked.items() if value]
        lines += [f"#SBATCH {sbatch_line(line)}" for line in options.sbatch_lines]
        command = shlex.join(self.command(task.job, self.python, False, self.processes))
        done, exit_file = shlex.quote(task.path("done")), shlex.quote(task.path("jobs", ".exit"))
        lines += [
            f"# {task.label}: written by sweep.py --launcher slurm; relaunching the sweep resubmits it when it fails.",
            f"cd {shlex.quote(REPO)}",
            f"export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}",
            "# A run with a checkpoint resumes from its newest one (after a scancel, time limit or requeue).",
            "resume=",
            f"if {resume_test(task.job.save_dir)}; then resume=' --resume'; fi",
            f"printf '$ %s%s\\n' {shlex.quote(command)} \"$resume\"",
            'echo "# slurm job $SLURM_JOB_ID on $(hostname), $(date -u +%FT%TZ)"',
            f"{command} $resume",
            "code=$?",
            f"if [ $code -eq 0 ]; then mkdir -p {shlex.quote(os.path.dirname(task.path('done')))} && "
            f"echo ok > {done}.$SLURM_JOB_ID && mv -f {done}.$SLURM_JOB_ID {done}; fi",
            f'echo "$SLURM_JOB_ID $code" > {exit_file}.$SLURM_JOB_ID && mv -f {exit_file}.$SLURM_JOB_ID {exit_file}',
            "exit $code",
        ]
        return "\n".join(lines) + "\n"

    def submit(self, task: Task, after: Sequence[str]) -> str:
        script_path = task.path("jobs", ".sbatch")
        os.makedirs(os.path.dirname(script_path), exist_ok=True)
        os.makedirs(os.path.dirname(task.log), exist_ok=True)
        atomic_write(script_path, lambda handle: handle.write(self.batch_script(task)), mode="w")
        argv = ["sbatch", "--parsable"]
        if after:
            # kill-on-invalid-dep: if a dependency fails, this job leaves the queue at once.
            argv += [f"--dependency=afterok:{':'.join(after)}", "--kill-on-invalid-dep=yes"]
        try:
            result = subprocess.run([*argv, script_path], capture_output=True, text=True, timeout=120)
        except FileNotFoundError:
            raise UserError("sbatch is not installed: --launcher slurm runs on a machine of a SLURM cluster") from None
        except subprocess.TimeoutExpired:
            raise UserError("sbatch did not answer in 120 s; is the SLURM controller up?") from None
        if result.returncode != 0:
            raise UserError(f"sbatch refused {task.label}: {first_line(result.stderr)} (batch script: {script_path})")
        job_id = result.stdout.strip().split(";")[0]
        write_record(task, {"launcher": "slurm", "job_id": job_id, "submitted": time.time(),
                            "dependencies": list(after)})
        return job_id

    def run(self) -> Dict[Tuple[str, str], RunState]:
        """Submits what is missing; with ``wait``, follows the jobs until none is queued or
        running. Returns the states seen last."""
        states = states_of(self.tasks)
        job_ids: Dict[Tuple[str, str], str] = {}  # queued, running or submitted now
        finished = kept = 0
        for task in in_dependency_order(self.tasks):
            state = states[task.key]
            if state.state == DONE:
                finished += 1
                continue
            if state.state in ACTIVE:
                if state.job_id is None:  # a child of a local sweep that still runs
                    refuse_active([task], states)
                kept += 1
                job_ids[task.key] = state.job_id
                continue
            dependencies = dependency_tasks(task, self.tasks)
            after = [job_ids[dep.key] for dep in dependencies if dep.key in job_ids]
            unsubmitted = [dep.job.name for dep in dependencies
                           if dep.key not in job_ids and states[dep.key].state != DONE]
            blocked = f"{unsubmitted[-1]} was not submitted" if unsubmitted else missing_input(task, self.tasks)
            if blocked:
                self.failed[task.label] = f"not submitted: {blocked}"
                continue
            if state.state == FAILED:
                say(f"resubmit {task.label} (it failed: {state.detail})")
            job_id = job_ids[task.key] = self.submit(task, after)
            self.submitted.append(task.label)
            states[task.key] = RunState(QUEUED, f"slurm job {job_id}", job_id)
            say(f"submitted {task.label}: slurm job {job_id}" + (f" after {','.join(after)}" if after else ""))
        print(f"{len(self.submitted)} runs submitted, {kept} already queued or running, {finished} finished",
              flush=True)
        return self.follow(states) if self.options.wait else states

    def follow(self, states: Dict[Tuple[str, str], RunState]) -> Dict[Tuple[str, str], RunState]:
        """Waits until no run is queued or running, printing each change of state."""
        while any(state.state in ACTIVE for state in states.values()):
            try:
                time.sleep(POLL_S)
            except KeyboardInterrupt:
                print("stopped waiting; the jobs go on (sweep.py --status shows them, relaunching resumes)",
                      file=sys.stderr)
                sys.exit(130)
            now = states_of(self.tasks)
            for task in self.tasks:
                seen = now[task.key]
                if seen.state != states[task.key].state:
                    say(f"FAILED {task.label}: {seen.detail}" if seen.state == FAILED
                        else f"{seen.state:<7} {task.label}")
            states = now
        return states
