"""Replicates: every method x seed (x grid setting) as the scripts' own commands, their tickets
retrained, one report per setting; on this machine or as SLURM jobs.

    python sweep.py --methods imp,prac,random --seeds 0,1,2 --out DIR [--jobs N] -- <script flags>
    python sweep.py ... --launcher slurm [--partition P --time 4:00:00 --cpus_per_run 4 --gpus_per_run 1
                        --mem 16G --sbatch=--account=abc --wait] -- <script flags>
    python sweep.py ... --grid threshold=0,1 --grid data_rate=0.2,0.3 -- <script flags>
    python sweep.py --status DIR

``imp`` runs main_imp.py; every other method runs main_PrAC_imp.py with ``--select METHOD``.
Each run's tickets are then retrained with main_train.py (``--retrain final|all|none``), and
report.py summarises the sweep with its verdict. Relaunching the same command skips finished
runs, leaves queued or running SLURM jobs alone, and restarts failed, cancelled or interrupted
runs, which resume from their newest checkpoint (launchers.py starts the runs). Layout of DIR:

    sweep.json                          methods, seeds, flags, grid (what a relaunch must match)
    runs/<method>-seed<seed>/           a search run's --save_dir
    retrain/<method>-seed<seed>-<k>/    main_train.py on that run's round-k ticket (k = final or 1, 2, ...)
    logs/<name>.log                     each run's output, headed by its command
    done/<name>                         written when a run's command exited 0
    jobs/<name>.json                    the run's newest attempt (local pid or SLURM job id; exit code)
    report/                             report.py's output

With ``--grid``, each setting (one value of every grid flag) has that layout in its own folder,
DIR/<flag>=<value>[,<flag>=<value>...]/, with setting.json (its values and full flags) there;
DIR/report/ groups the runs by setting: methods are compared within a setting, never across.
"""
import argparse
import functools
import itertools
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Dict, List, NoReturn, Optional, Sequence, Tuple

import cli
import launchers
from cli import SWEEP_OWNED
from durable import atomic_write
from prac import SELECTION_RULES
from utils import UserError, run_cli

REPO = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = {"imp": cli.IMP, "search": cli.SEARCH, "retrain": cli.RETRAIN}
# Controls retrained beside each ticket (open_lth's lottery branches), as main_train.py flags:
# reinit: the ticket's mask from a fresh seeded initialisation (--mask_dir alone);
# random_mask: the ticket's weights under a seeded random mask of its per-layer counts.
CONTROLS = {"reinit": ["--mask_dir"], "random_mask": ["--init_dir", "--mask_dir", "--random_mask"]}
# In a sweep, random draws each round as many examples as this method's run of the same seed.
SIZE_SOURCE = {"random": "prac"}
SETTING_INFO = "setting.json"  # in each grid setting's folder: its values and its full flags
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
    grid: List[Tuple[str, List[str]]] = field(default_factory=list)  # (--flag, values), in the order given
    jobs: List[Job] = field(default_factory=list)
    controls: List[str] = field(default_factory=list)  # of CONTROLS, beside every retrained ticket

    def path(self, *parts: str) -> str:
        return os.path.join(self.out, *parts)


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
    if method != "imp" and method not in SELECTION_RULES:
        raise UserError(f"unknown method {method!r}; choose imp or a selection rule: {', '.join(SELECTION_RULES)}")
    return SCRIPTS["imp" if method == "imp" else "search"]


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
    return frozenset(cli.build_parser(script)._option_string_actions)


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
        # parse_args reports a bad value on stderr and exits; turn that into one line here.
        def error(message: str, script: str = script) -> NoReturn:
            raise UserError(f"{script}: {message}")
        parser = cli.build_parser(script)
        parser.error = error  # type: ignore[assignment]
        parser.parse_args(flags_for(script, flags) + ["--save_dir", "x", "--seed", "0"])


def parse_controls(text: str) -> List[str]:
    """'reinit,random_mask' -> the controls; empty text means none."""
    controls = parse_list(text, "controls") if text.strip() else []
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
    retrain_flags = flags_for(SCRIPTS["retrain"], sweep.flags)
    # main_train.py's flags that take a ticket: its own (its weights under its mask), then each control's
    retrained = {"retrain": ["--init_dir", "--mask_dir"], **{control: CONTROLS[control] for control in sweep.controls}}
    jobs: List[Job] = []
    for seed in sweep.seeds:
        for method in sweep.methods:
            script = script_for(method)
            name = f"{method}-seed{seed}"
            save_dir = sweep.path("runs", name)
            argv = flags_for(script, sweep.flags) + ["--seed", str(seed), "--save_dir", save_dir]
            if method != "imp":  # every other method is main_PrAC_imp.py's rule of that name
                argv += ["--select", method]
            after = f"{SIZE_SOURCE[method]}-seed{seed}" if method in SIZE_SOURCE else None
            if after:
                argv += ["--match_sizes", sweep.path("runs", after)]
            jobs.append(Job(name, script, argv, save_dir, after=after))
            if sweep.retrain == "none":
                continue
            tickets = ["final"] if sweep.retrain == "final" else [*map(str, range(1, pruning_times)), "final"]
            for ticket in tickets:
                ticket_file = os.path.join(save_dir, "final_ticket.pth.tar" if ticket == "final"
                                           else f"{ticket}checkpoint.pth.tar")
                for kind, given in retrained.items():
                    retrain_dir = sweep.path("retrain", f"{name}-{ticket}" + ("" if kind == "retrain" else f"-{kind}"))
                    ticket_flags = [token for flag in given
                                    for token in ([flag] if flag == "--random_mask" else [flag, ticket_file])]
                    jobs.append(Job(f"{name}-{kind}-{ticket}", SCRIPTS["retrain"],
                                    [*retrain_flags, "--seed", str(seed), "--save_dir", retrain_dir, *ticket_flags],
                                    retrain_dir, after=name, needs_file=ticket_file))
    return jobs


def search_settings(flags: Sequence[str]) -> argparse.Namespace:
    """The flags as main_imp.py reads them (--pruning_times, --device), defaults filled in."""
    return cli.build_parser(cli.IMP).parse_args(flags_for(cli.IMP, flags) + ["--save_dir", "x"])


# ============================================================================ grids
def parse_grid(items: Sequence[str], flags: Sequence[str]) -> List[Tuple[str, List[str]]]:
    """``--grid threshold=0,1`` (or ``--grid=--threshold=0,1``) -> [("--threshold", ["0", "1"])];
    ``--grid "decreasing_lr=91,136;60,90"`` for values that hold a comma."""
    grid: List[Tuple[str, List[str]]] = []
    given = {flag_name(group) for group in split_flags(flags)}
    for item in items:
        name, equals, values = item.partition("=")
        name = "--" + name.strip().lstrip("-")
        if not equals or name == "--":
            raise UserError(f"--grid {item}: write FLAG=V1,V2 (e.g. --grid threshold=0,1)")
        if name in SWEEP_OWNED:
            raise UserError(f"--grid {item}: {name} is set by the sweep for every run")
        if name in given:
            raise UserError(f"--grid {item}: {name} is also given after --; give it in one place")
        if name in (other for other, _ in grid):
            raise UserError(f"--grid names {name} twice; give all its values in one --grid {name[2:]}=V1,V2")
        # values holding a comma (--decreasing_lr 91,136) are separated by ; instead
        parsed = [value.strip() for value in values.split(";" if ";" in values else ",") if value.strip()]
        if not parsed or len(set(parsed)) != len(parsed):
            raise UserError(f"--grid {item}: give distinct comma-separated values (e.g. {name[2:]}=0,1)")
        actions = [cli.build_parser(script)._option_string_actions.get(name) for script in cli.ALL_SCRIPTS]
        if any(action is not None and action.nargs == 0 for action in actions):
            raise UserError(f"--grid {item}: {name} is an on/off switch without a value; a grid varies values")
        grid.append((name, parsed))
    return grid


def grid_settings(grid: Sequence[Tuple[str, Sequence[str]]]) -> List[List[Tuple[str, str]]]:
    """Every combination of the grid's values: [(--flag, value), ...] per setting."""
    names = [name for name, _ in grid]
    return [list(zip(names, values)) for values in itertools.product(*(values for _, values in grid))]


def setting_folder(setting: Sequence[Tuple[str, str]]) -> str:
    """A setting's folder name, e.g. ``threshold=0,data_rate=0.2`` (a path's / becomes _)."""
    return ",".join(f"{name[2:]}={value.replace(os.sep, '_')}" for name, value in setting)


def setting_flags(setting: Sequence[Tuple[str, str]]) -> List[str]:
    return [token for name, value in setting for token in (name, value)]


def sweeps_of(sweep: Sweep) -> List[Sweep]:
    """The sweep itself, or with a grid one Sweep per setting in its own folder; jobs planned."""
    parts = [sweep]
    if sweep.grid:
        settings = grid_settings(sweep.grid)
        folders = [setting_folder(setting) for setting in settings]
        if len(set(folders)) != len(folders):
            raise UserError(f"two grid settings would share a folder name ({', '.join(folders)}); change the values")
        parts = [Sweep(sweep.path(folder), sweep.methods, sweep.seeds, [*sweep.flags, *setting_flags(setting)],
                       sweep.retrain, controls=sweep.controls) for setting, folder in zip(settings, folders)]
    for part in parts:
        part.jobs = plan_jobs(part, search_settings(part.flags).pruning_times)
    return parts


def record_sweep(sweep: Sweep) -> None:
    """Writes sweep.json, or checks a relaunch against it:
    same flags, grid and retraining; methods, seeds and controls may grow (adding seeds to a
    finished sweep is how replicates accrue)."""
    path = sweep.path("sweep.json")
    grid = [[name, list(values)] for name, values in sweep.grid]
    if os.path.exists(path):
        saved = read_sweep_json(path)
        if saved.get("flags") != list(sweep.flags) or saved.get("retrain") != sweep.retrain \
                or saved.get("grid", []) != grid:
            raise UserError(f"{sweep.out} holds a sweep with other flags ({shlex.join(saved.get('flags', []))}, "
                            f"--retrain {saved.get('retrain')}{grid_text(saved.get('grid', []))}); use those, "
                            "or another --out")
        sweep.methods = list(dict.fromkeys([*saved.get("methods", []), *sweep.methods]))
        sweep.seeds = list(dict.fromkeys([*saved.get("seeds", []), *sweep.seeds]))
        sweep.controls = list(dict.fromkeys([*saved.get("controls", []), *sweep.controls]))
    os.makedirs(sweep.out, exist_ok=True)
    record = {"methods": sweep.methods, "seeds": sweep.seeds, "flags": list(sweep.flags), "retrain": sweep.retrain,
              "controls": sweep.controls}
    if grid:
        record["grid"] = grid
    atomic_write(path, lambda handle: json.dump(record, handle, indent=2), mode="w")


def record_settings(parts: Sequence[Sweep], base_flags: Sequence[str]) -> None:
    """Each grid setting's folder gets setting.json: its values and the full flags of its runs."""
    for part in parts:
        os.makedirs(part.out, exist_ok=True)
        values = part.flags[len(base_flags):]  # setting_flags: --flag value pairs
        setting = {"setting": dict(zip(values[::2], values[1::2])), "flags": part.flags, "methods": part.methods,
                   "seeds": part.seeds, "retrain": part.retrain}
        atomic_write(part.path(SETTING_INFO), lambda handle, setting=setting: json.dump(setting, handle, indent=2),
                     mode="w")


def grid_text(grid: Sequence[Sequence]) -> str:
    return "".join(f" --grid {name[2:]}={','.join(values)}" for name, values in grid)


def read_sweep_json(path: str) -> Dict:
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError) as error:
        raise UserError(f"{path} cannot be read ({error}); move it away to start a new sweep there") from None


def local_gpus(device: str) -> int:
    """The GPUs the local runs share: none with --device cpu or without CUDA."""
    if device == "cpu":
        return 0
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Run methods x seeds (x grid settings) with the scripts, on this machine or as SLURM jobs, "
                    "retrain their tickets, report the verdict per setting.",
        usage="python sweep.py --methods imp,prac,random --seeds 0,1,2 --out DIR [--jobs N] "
              "[--launcher slurm ...] [--grid FLAG=V1,V2 ...] -- <script flags>\n"
              "       python sweep.py --status DIR")
    parser.add_argument("--methods", default="imp,prac,random",
                        help=f"comma-separated: imp and/or selection rules ({', '.join(SELECTION_RULES)}); "
                             "default imp,prac,random")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--out", metavar="DIR", help="the sweep's folder (required unless --status)")
    parser.add_argument("--status", metavar="DIR", help="print the state of every run of the sweep in DIR and exit")
    parser.add_argument("--grid", action="append", default=[], metavar="FLAG=V1,V2",
                        help="also sweep a script flag over these values (repeatable: the product of all); "
                             "each setting gets its own folder DIR/FLAG=V/ and its own groups in the report; "
                             "separate values by ; when they hold a comma (\"decreasing_lr=91,136;60,90\")")
    parser.add_argument("--nproc_per_node", type=int, default=1, metavar="N",
                        help="run each script under torchrun with N processes (default 1: plain python)")
    parser.add_argument("--retrain", choices=("final", "all", "none"), default="final",
                        help="which tickets main_train.py retrains: the final one (default), all, none")
    parser.add_argument("--controls", default="", metavar="C1,C2",
                        help=f"controls retrained beside each retrained ticket, comma-separated from "
                             f"{', '.join(CONTROLS)}: reinit (the ticket's mask from a fresh initialisation), "
                             "random_mask (the ticket's weights, a random mask of its per-layer counts); "
                             "see docs/controls.md (default: none)")
    parser.add_argument("--no_report", action="store_true", help="do not run report.py at the end")
    parser.add_argument("--dry_run", action="store_true", help="print the commands and exit")
    parser.add_argument("--launcher", choices=("local", "slurm"), default="local",
                        help="local: runs as child processes here (default); slurm: every run one SLURM job (sbatch)")
    local = parser.add_argument_group("--launcher local")
    local.add_argument("--jobs", type=int, default=None, metavar="N",
                       help="runs at once (default: 1 on a CPU, with all its cores; on CUDA "
                            f"{CUDA_JOBS_PER_GPU} per GPU, one GPU per process); the CPU cores are split among them")
    slurm = parser.add_argument_group("--launcher slurm (each option default: the cluster's)")
    slurm.add_argument("--partition", default=None, metavar="NAME", help="sbatch --partition")
    slurm.add_argument("--time", default=None, metavar="LIMIT",
                       help="sbatch --time per run, e.g. 4:00:00; a run stopped by it resumes when relaunched")
    slurm.add_argument("--cpus_per_run", type=int, default=None, metavar="N",
                       help="sbatch --cpus-per-task (default: --nproc_per_node); the threads per process follow it")
    slurm.add_argument("--gpus_per_run", type=int, default=0, metavar="N", help="sbatch --gres=gpu:N (default 0)")
    slurm.add_argument("--mem", default=None, metavar="SIZE", help="sbatch --mem per run, e.g. 16G")
    slurm.add_argument("--sbatch", action="append", default=[], metavar="LINE",
                       help="one more #SBATCH line, e.g. --sbatch=--account=abc or --sbatch qos=high (repeatable)")
    slurm.add_argument("--wait", action="store_true",
                       help="stay until every run has left the queue, then report (default: submit and exit)")
    return parser


SLURM_ONLY = ("partition", "time", "cpus_per_run", "gpus_per_run", "mem", "sbatch", "wait")


def check_launcher_args(args: argparse.Namespace) -> None:
    defaults = build_parser().parse_args([])
    given = [name for name in SLURM_ONLY if getattr(args, name) != getattr(defaults, name)]
    if args.launcher == "local" and given:
        raise UserError(f"--{given[0]} is an option of --launcher slurm")
    if args.launcher == "slurm" and args.jobs is not None:
        raise UserError("--jobs is an option of --launcher local: with slurm every run is its own job")
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs {args.jobs} must be at least 1")
    if args.nproc_per_node < 1:
        raise UserError(f"--nproc_per_node {args.nproc_per_node} must be at least 1")
    if args.cpus_per_run is not None and args.cpus_per_run < args.nproc_per_node:
        raise UserError(f"--cpus_per_run {args.cpus_per_run} must be at least --nproc_per_node {args.nproc_per_node}")
    if args.gpus_per_run < 0:
        raise UserError(f"--gpus_per_run {args.gpus_per_run} must be 0 or more")


def show_status(folder: str) -> None:
    """One table of every planned run's state, whichever launcher started it."""
    path = os.path.join(folder, "sweep.json")
    if not os.path.isfile(path):
        raise UserError(f"--status {folder}: no sweep there (no sweep.json)")
    saved = read_sweep_json(path)
    sweep = Sweep(os.path.abspath(folder), saved.get("methods", []), saved.get("seeds", []), saved.get("flags", []),
                  saved.get("retrain", "final"), [(name, values) for name, values in saved.get("grid", [])])
    tasks = launchers.tasks_of(sweeps_of(sweep), bool(sweep.grid))
    print(launchers.status_table(tasks, launchers.states_of(tasks)))


def write_report(sweep: Sweep) -> None:
    """report.py on the sweep's folder: it finds the runs at any depth and groups them by their
    whole setting, so a grid's settings are reported apart and never averaged together."""
    report = [sys.executable, os.path.join(REPO, "report.py"), sweep.out]
    print(f"\n$ {shlex.join(report)}", flush=True)
    subprocess.run(report, cwd=REPO)


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    argv, flags = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    if args.status is not None:
        show_status(args.status)
        return
    if args.out is None:
        raise UserError("give --out DIR, the sweep's folder (or --status DIR to see a sweep's runs)")
    methods = parse_list(args.methods, "methods")
    for method in methods:
        script_for(method)
    seeds = parse_seeds(args.seeds)
    check_launcher_args(args)
    grid = parse_grid(args.grid, flags)
    for setting in grid_settings(grid) if grid else [[]]:
        check_flags(methods, [*flags, *setting_flags(setting)])
    sweep = Sweep(os.path.abspath(args.out), methods, seeds, flags, args.retrain, grid,
                  controls=parse_controls(args.controls))
    if not args.dry_run:
        record_sweep(sweep)
    parts = sweeps_of(sweep)
    if grid and not args.dry_run:
        record_settings(parts, flags)
    tasks = launchers.tasks_of(parts, bool(grid))
    if args.dry_run:
        for task in tasks:
            print(shlex.join(task.job.command("python", False, args.nproc_per_node)))
        return
    where = f"in {sweep.out}" + (f", {len(parts)} grid settings" if grid else "")
    runs = f"{len(sweep.methods)} methods x {len(sweep.seeds)} seeds, {len(tasks)} runs"
    if args.launcher == "local":
        gpus = local_gpus(search_settings(flags).device)
        parallel = args.jobs or (max(1, CUDA_JOBS_PER_GPU * gpus // args.nproc_per_node) if gpus else 1)
        print(f"sweep: {runs}, {parallel} at a time, {where}", flush=True)
        runner = launchers.LocalLauncher(tasks, parallel, gpus, sys.executable, Job.command, args.nproc_per_node)
        runner.run()
        failed = dict(runner.failed)
        if not args.no_report:
            write_report(sweep)
    else:
        options = launchers.SlurmOptions(args.partition, args.time, args.cpus_per_run, args.gpus_per_run, args.mem,
                                         args.sbatch, args.wait)
        print(f"sweep: {runs} as SLURM jobs, {where}", flush=True)
        runner = launchers.SlurmLauncher(tasks, options, sys.executable, Job.command, args.nproc_per_node)
        states = runner.run()
        failed = dict(runner.failed)
        failed.update({task.label: states[task.key].detail for task in tasks
                       if states[task.key].state == launchers.FAILED and task.label not in failed})
        finished = all(states[task.key].state == launchers.DONE for task in tasks)
        if finished and not args.no_report:
            write_report(sweep)
        elif not failed:
            print(f"follow them with: python sweep.py --status {sweep.out}\n"
                  "relaunch the same command once they are done: it resubmits what failed and writes the report",
                  flush=True)
    if failed:
        lines = "\n".join(f"  {name}: {why}" for name, why in failed.items())
        raise UserError(f"{len(failed)} runs did not finish:\n{lines}\n"
                        "fix the cause and relaunch the same command: finished runs are skipped"
                        + (", queued and running ones left alone" if args.launcher == "slurm" else ""))


if __name__ == "__main__":
    run_cli(main)
