"""Replicates: every method x seed as the scripts' own commands, their tickets retrained, one report.

    python sweep.py --methods imp,prac,random --seeds 0,1,2 --out DIR [--jobs N] -- <script flags>

``imp`` runs main_imp.py; every other method runs main_PrAC_imp.py with ``--select METHOD``.
Each run's tickets are then retrained with main_train.py (``--retrain final|all|none``), and
report.py summarises the sweep with its verdict. Relaunching the same command skips finished
runs and resumes interrupted ones from their newest checkpoint. Layout of DIR:

    sweep.json                          methods, seeds, flags (what a relaunch must match)
    runs/<method>-seed<seed>/           a search run's --save_dir
    retrain/<method>-seed<seed>-<k>/    main_train.py on that run's round-k ticket (k = final or 1, 2, ...)
    logs/<name>.log                     each run's output, headed by its command
    done/<name>                         written when a run's command exited 0
    report/                             report.py's output
"""
import argparse
import functools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import main_imp
import main_PrAC_imp
import main_train
from prac import SELECTION_RULES
from utils import RunPaths, UserError, atomic_write, run_cli

REPO = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = {"imp": "main_imp.py", "search": "main_PrAC_imp.py", "retrain": "main_train.py"}
PARSERS = {"main_imp.py": main_imp.build_parser, "main_PrAC_imp.py": main_PrAC_imp.build_parser,
           "main_train.py": main_train.build_parser}
# Flags the sweep sets itself for every run.
SWEEP_OWNED = ("--seed", "--save_dir", "--select", "--resume", "--checkpoint", "--init_dir", "--mask_dir",
               "--match_sizes", "--random_mask")
RETRAIN_CHOICES = ("final", "all", "none")
# Controls retrained beside each ticket (open_lth's lottery branches), as main_train.py flags:
# reinit: the ticket's mask from a fresh seeded initialisation (--mask_dir alone);
# random_mask: the ticket's weights under a seeded random mask of its per-layer counts.
CONTROLS = {"reinit": ["--mask_dir"], "random_mask": ["--init_dir", "--mask_dir", "--random_mask"]}
# In a sweep, random draws each round as many examples as this method's run of the same seed.
SIZE_SOURCE = {"random": "prac"}
# Several small runs share a GPU well (they are launch-bound); not yet measured on a GPU.
CUDA_JOBS_PER_GPU = 2


@dataclass
class Job:
    """One script invocation of the sweep; ``after`` names the job whose output it reads."""
    name: str
    script: str
    argv: List[str]
    save_dir: str
    after: Optional[str] = None
    needs_file: Optional[str] = None  # a file the finished ``after`` job must have written

    def command(self, python: str, resume: bool, processes: int = 1) -> List[str]:
        launcher = [python, "-u"]
        if processes > 1:  # torchrun; --standalone picks a free port, so jobs can run side by side
            launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
        return [*launcher, os.path.join(REPO, self.script), *self.argv, *(["--resume"] if resume else [])]


@dataclass
class Sweep:
    out: str
    methods: List[str]
    seeds: List[int]
    flags: List[str]
    retrain: str
    jobs: List[Job] = field(default_factory=list)
    controls: List[str] = field(default_factory=list)  # of CONTROLS, beside every retrained ticket

    def path(self, *parts: str) -> str:
        return os.path.join(self.out, *parts)

    def done_marker(self, job: Job) -> str:
        return self.path("done", job.name)

    def is_done(self, job: Job) -> bool:
        return os.path.exists(self.done_marker(job))


def parse_list(text: str, what: str) -> List[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UserError(f"--{what} is empty; give a comma-separated list")
    if len(set(items)) != len(items):
        raise UserError(f"--{what} {text} names something twice")
    return items


def parse_seeds(text: str) -> List[int]:
    try:
        return [int(seed) for seed in parse_list(text, "seeds")]
    except ValueError:
        raise UserError(f"--seeds {text} must be comma-separated integers, e.g. 0,1,2") from None


def script_for(method: str) -> str:
    if method == "imp":
        return SCRIPTS["imp"]
    if method in SELECTION_RULES:
        return SCRIPTS["search"]
    raise UserError(f"unknown method {method!r}; choose imp or a selection rule: {', '.join(SELECTION_RULES)}")


def split_flags(flags: Sequence[str]) -> List[List[str]]:
    """The flags as groups: an option with its value(s) (``--lr 0.1``, ``--save_model``)."""
    groups: List[List[str]] = []
    for token in flags:
        if token.startswith("--"):
            groups.append([token])
        elif groups:
            groups[-1].append(token)
        else:
            raise UserError(f"{token!r} after -- is not a flag; script flags start with --")
    return groups


def flag_name(group: Sequence[str]) -> str:
    return group[0].split("=")[0]


@functools.lru_cache(maxsize=None)
def option_names(script: str) -> frozenset:
    return frozenset(PARSERS[script]()._option_string_actions)


def flags_for(script: str, flags: Sequence[str]) -> List[str]:
    """The flags ``script`` has (a search flag such as --pruning_times is not main_train.py's)."""
    return [token for group in split_flags(flags) if flag_name(group) in option_names(script) for token in group]


def check_flags(methods: Sequence[str], flags: Sequence[str]) -> None:
    """Refuses flags the sweep owns or no script knows, and checks each script accepts its share."""
    scripts = {script_for(method) for method in methods} | {SCRIPTS["retrain"]}
    names = [flag_name(group) for group in split_flags(flags)]
    for name in names:
        if name in SWEEP_OWNED:
            raise UserError(f"{name} is set by the sweep for every run; leave it out of the flags after --")
        if not any(name in option_names(script) for script in scripts):
            raise UserError(f"{name} is not a flag of {', '.join(sorted(scripts))}")
    if "imp" in methods and len(methods) > 1 and "--lr" not in names:
        raise UserError("give --lr after --: main_imp.py defaults to 0.01 and main_PrAC_imp.py to 0.1 "
                        "(the published defaults), so the methods would not train alike")
    for script in sorted(scripts):
        parser = PARSERS[script]()
        argv = flags_for(script, flags) + ["--save_dir", "x", "--seed", "0"]
        # parse_args reports a bad value on stderr and exits; turn that into one line here.
        parser.error = lambda message, script=script: _raise(f"{script}: {message}")  # type: ignore[assignment]
        parser.parse_args(argv)


def _raise(message: str) -> None:
    raise UserError(message)


def parse_controls(text: str) -> List[str]:
    """'reinit,random_mask' -> the controls; empty text means none."""
    if not text.strip():
        return []
    controls = parse_list(text, "controls")
    unknown = [c for c in controls if c not in CONTROLS]
    if unknown:
        raise UserError(f"unknown control {unknown[0]!r} in --controls; choose from {', '.join(CONTROLS)}")
    return controls


def plan_jobs(sweep: Sweep, pruning_times: int) -> List[Job]:
    """Every search job, then the retraining jobs that read its tickets (and the controls
    beside each). A size-matched method (random) runs after the run it takes sizes from."""
    for method, source in SIZE_SOURCE.items():
        if method in sweep.methods and source not in sweep.methods:
            raise UserError(f"--methods {method} is size-matched to the {source} run of the same seed: add {source} "
                            "to --methods")
    if sweep.controls and sweep.retrain == "none":
        raise UserError("--controls are retrained beside each ticket: they need --retrain final or all")
    jobs: List[Job] = []
    for seed in sweep.seeds:
        for method in sweep.methods:
            script = script_for(method)
            name = f"{method}-seed{seed}"
            save_dir = sweep.path("runs", name)
            argv = flags_for(script, sweep.flags) + ["--seed", str(seed), "--save_dir", save_dir]
            after = None
            if script == SCRIPTS["search"]:
                argv += ["--select", method]
            if method in SIZE_SOURCE:
                after = f"{SIZE_SOURCE[method]}-seed{seed}"
                argv += ["--match_sizes", sweep.path("runs", after)]
            jobs.append(Job(name, script, argv, save_dir, after=after))
            if sweep.retrain == "none":
                continue
            tickets = ["final"] if sweep.retrain == "final" else [*map(str, range(1, pruning_times)), "final"]
            for ticket in tickets:
                ticket_file = os.path.join(save_dir, "final_ticket.pth.tar" if ticket == "final"
                                           else f"{ticket}checkpoint.pth.tar")
                retrain_dir = sweep.path("retrain", f"{name}-{ticket}")
                retrain_argv = flags_for(SCRIPTS["retrain"], sweep.flags) + [
                    "--seed", str(seed), "--save_dir", retrain_dir,
                    "--init_dir", ticket_file, "--mask_dir", ticket_file]
                jobs.append(Job(f"{name}-retrain-{ticket}", SCRIPTS["retrain"], retrain_argv, retrain_dir,
                                after=name, needs_file=ticket_file))
                for control in sweep.controls:
                    control_dir = sweep.path("retrain", f"{name}-{ticket}-{control}")
                    ticket_flags = [token for flag in CONTROLS[control]
                                    for token in ([flag] if flag == "--random_mask" else [flag, ticket_file])]
                    control_argv = flags_for(SCRIPTS["retrain"], sweep.flags) + [
                        "--seed", str(seed), "--save_dir", control_dir, *ticket_flags]
                    jobs.append(Job(f"{name}-{control}-{ticket}", SCRIPTS["retrain"], control_argv, control_dir,
                                    after=name, needs_file=ticket_file))
    return jobs


def search_settings(flags: Sequence[str]) -> argparse.Namespace:
    """The flags as main_imp.py reads them (--pruning_times, --device), defaults filled in."""
    return main_imp.build_parser().parse_args(flags_for("main_imp.py", flags) + ["--save_dir", "x"])


def record_sweep(sweep: Sweep) -> None:
    """Writes sweep.json, or checks a relaunch against it: same flags and retraining;
    methods and seeds may grow (adding seeds to a finished sweep is how replicates accrue)."""
    path = sweep.path("sweep.json")
    if os.path.exists(path):
        try:
            with open(path) as handle:
                saved = json.load(handle)
        except (OSError, ValueError) as error:
            raise UserError(f"{path} cannot be read ({error}); move it away to start a new sweep there") from None
        if saved.get("flags") != list(sweep.flags) or saved.get("retrain") != sweep.retrain:
            raise UserError(f"{sweep.out} holds a sweep with other flags ({shlex.join(saved.get('flags', []))}, "
                            f"--retrain {saved.get('retrain')}); use those, or another --out")
        sweep.methods = list(dict.fromkeys([*saved.get("methods", []), *sweep.methods]))
        sweep.seeds = list(dict.fromkeys([*saved.get("seeds", []), *sweep.seeds]))
    os.makedirs(sweep.out, exist_ok=True)
    record = {"methods": sweep.methods, "seeds": sweep.seeds, "flags": list(sweep.flags), "retrain": sweep.retrain}
    atomic_write(path, lambda handle: json.dump(record, handle, indent=2), mode="w")


def uses_cuda(device: str) -> bool:
    if device == "cpu":
        return False
    import torch
    return torch.cuda.is_available()


def default_jobs(cuda: bool) -> int:
    if cuda:
        import torch
        return CUDA_JOBS_PER_GPU * torch.cuda.device_count()
    return 1


class Runner:
    """Runs the jobs ``parallel`` at a time, each after the job it depends on."""

    def __init__(self, sweep: Sweep, parallel: int, cuda: bool, python: str, processes: int = 1):
        self.sweep, self.parallel, self.cuda, self.python = sweep, parallel, cuda, python
        self.processes = processes  # per run, through torchrun
        cores = os.cpu_count() or 1
        # Split the cores: two 2-thread processes on 2 cores run ~17x slower than one.
        self.threads = max(1, cores // (parallel * processes))
        self.gpus = 0
        if cuda:
            import torch
            self.gpus = torch.cuda.device_count()
        self.failed: Dict[str, str] = {}

    def environment(self, slot: int) -> Dict[str, str]:
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads))
        if self.cuda and self.gpus:
            # one GPU per process, round robin (a torchrun job gets --nproc_per_node of them)
            first = slot * self.processes
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str((first + k) % self.gpus) for k in range(self.processes))
        return env

    def start(self, job: Job, slot: int) -> subprocess.Popen:
        resume = RunPaths(job.save_dir).newest_checkpoint() is not None
        command = job.command(self.python, resume, self.processes)
        os.makedirs(self.sweep.path("logs"), exist_ok=True)
        log = open(self.sweep.path("logs", f"{job.name}.log"), "a")
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        print(f"{time.strftime('%H:%M:%S')} start {job.name}{' (resuming)' if resume else ''}", flush=True)
        process = subprocess.Popen(command, cwd=REPO, env=self.environment(slot), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return process

    def blocked_reason(self, job: Job) -> Optional[str]:
        if job.after in self.failed:
            return f"{job.after} failed"
        if job.needs_file and job.after and self.sweep.is_done(self.job(job.after)) \
                and not os.path.exists(job.needs_file):
            return f"{job.after} finished without writing {job.needs_file}"
        return None

    def job(self, name: str) -> Job:
        return next(job for job in self.sweep.jobs if job.name == name)

    def run(self) -> None:
        pending = [job for job in self.sweep.jobs if not self.sweep.is_done(job)]
        skipped = len(self.sweep.jobs) - len(pending)
        if skipped:
            print(f"{skipped} of {len(self.sweep.jobs)} runs already finished; skipping them")
        running: Dict[int, tuple] = {}  # slot -> (job, process)
        try:
            while pending or running:
                for slot, (job, process) in list(running.items()):
                    code = process.poll()
                    if code is None:
                        continue
                    del running[slot]
                    if code == 0:
                        os.makedirs(self.sweep.path("done"), exist_ok=True)
                        atomic_write(self.sweep.done_marker(job), lambda handle: handle.write(b"ok\n"))
                        print(f"{time.strftime('%H:%M:%S')} done  {job.name}", flush=True)
                    else:
                        self.failed[job.name] = f"exit code {code}; see {self.sweep.path('logs', job.name + '.log')}"
                        print(f"{time.strftime('%H:%M:%S')} FAILED {job.name}: {self.failed[job.name]}", flush=True)
                for job in list(pending):
                    reason = self.blocked_reason(job)
                    if reason:
                        pending.remove(job)
                        self.failed[job.name] = f"not run: {reason}"
                        continue
                    free = [slot for slot in range(self.parallel) if slot not in running]
                    if not free:
                        break
                    if job.after and not self.sweep.is_done(self.job(job.after)):
                        continue
                    pending.remove(job)
                    running[free[0]] = (job, self.start(job, free[0]))
                time.sleep(0.5)
        except KeyboardInterrupt:
            print("interrupted: relaunch the same command to resume the unfinished runs", file=sys.stderr)
            sys.exit(130)
        finally:
            # No run outlives the sweep: an orphan would hold its save_dir's lock on relaunch.
            for job, process in running.values():
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Run methods x seeds with the scripts, retrain their tickets, report the verdict.",
        usage="python sweep.py --methods imp,prac,random --seeds 0,1,2 --out DIR [--jobs N] -- <script flags>")
    parser.add_argument("--methods", default="imp,prac,random",
                        help=f"comma-separated: imp and/or selection rules ({', '.join(SELECTION_RULES)}); "
                             "default imp,prac,random")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the sweep's folder")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="runs at once (default: 1 on a CPU, with all its cores; on CUDA "
                             f"{CUDA_JOBS_PER_GPU} per GPU, one GPU per process); the CPU cores are split among them")
    parser.add_argument("--nproc_per_node", type=int, default=1, metavar="N",
                        help="run each script under torchrun with N processes (default 1: plain python)")
    parser.add_argument("--retrain", choices=RETRAIN_CHOICES, default="final",
                        help="which tickets main_train.py retrains: the final one (default), all, none")
    parser.add_argument("--controls", default="", metavar="C1,C2",
                        help=f"controls retrained beside each retrained ticket, comma-separated from "
                             f"{', '.join(CONTROLS)}: reinit (the ticket's mask from a fresh initialisation), "
                             "random_mask (the ticket's weights, a random mask of its per-layer counts); "
                             "see docs/controls.md (default: none)")
    parser.add_argument("--no_report", action="store_true", help="do not run report.py at the end")
    parser.add_argument("--dry_run", action="store_true", help="print the commands and exit")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    flags: List[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, flags = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    methods = parse_list(args.methods, "methods")
    for method in methods:
        script_for(method)
    seeds = parse_seeds(args.seeds)
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs {args.jobs} must be at least 1")
    if args.nproc_per_node < 1:
        raise UserError(f"--nproc_per_node {args.nproc_per_node} must be at least 1")
    check_flags(methods, flags)
    sweep = Sweep(os.path.abspath(args.out), methods, seeds, flags, args.retrain,
                  controls=parse_controls(args.controls))
    if not args.dry_run:
        record_sweep(sweep)
    settings = search_settings(flags)
    sweep.jobs = plan_jobs(sweep, settings.pruning_times)
    cuda = uses_cuda(settings.device)
    parallel = args.jobs or (max(1, default_jobs(cuda) // args.nproc_per_node) if cuda else 1)
    if args.dry_run:
        for job in sweep.jobs:
            print(shlex.join(job.command("python", False, args.nproc_per_node)))
        return
    print(f"sweep: {len(sweep.methods)} methods x {len(sweep.seeds)} seeds, {len(sweep.jobs)} runs, "
          f"{parallel} at a time, in {sweep.out}", flush=True)
    runner = Runner(sweep, parallel, cuda, sys.executable, args.nproc_per_node)
    runner.run()
    if not args.no_report:
        report = [sys.executable, os.path.join(REPO, "report.py"), sweep.out]
        print(f"\n$ {shlex.join(report)}", flush=True)
        subprocess.run(report, cwd=REPO)
    if runner.failed:
        lines = "\n".join(f"  {name}: {why}" for name, why in runner.failed.items())
        raise UserError(f"{len(runner.failed)} runs did not finish:\n{lines}\n"
                        "fix the cause and relaunch the same command: finished runs are skipped")


if __name__ == "__main__":
    run_cli(main)
