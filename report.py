"""Report on lottery-ticket runs: per-round tables, a steps comparison and plots; over
replicates, mean ± std per method and a verdict against IMP.

    python report.py SWEEP_DIR [--out OUT_DIR]
    python report.py RUN_DIR [RUN_DIR ...] [--retrain DIR ...] [--out OUT_DIR] [--name LABEL ...]
                     [--replicates | --per_run]

Each RUN_DIR is the --save_dir of a main_imp.py or main_PrAC_imp.py run (its rounds.csv and
args.json are read). Retraining runs (main_train.py) are matched to the round whose ticket
they retrained: the round number comes from the checkpoint named by their --mask_dir
(``{k}checkpoint.pth.tar``, ``{k}model_SA_best.pth.tar``; ``final_ticket.pth.tar`` is round
``pruning_times``, the sparsest ticket). They are given with --retrain (a run folder, or a
folder of them) or found next to the runs: the subfolders of ``<RUN>_retrain/`` and any
folder up to two levels below a run's parent whose args.json points into that run.

Semantics: a round-k row holds what round k trained, at the density round k trained at, and
``{k}checkpoint.pth.tar`` holds that round's mask, so its retraining belongs to the same row.

Two reports:
- per run (one seed per method, or --per_run): report.md, one CSV per run, summary.csv and
  three PNGs (accuracy vs weights, cumulative steps, training examples per round);
- replicates (a sweep folder: SWEEP/sweep.json, SWEEP/runs/*, SWEEP/retrain/*; or run folders
  where a method has several seeds; or --replicates): runs grouped by method and seed as their
  args.json says (main_imp.py is "imp", main_PrAC_imp.py its --select rule), never by folder
  name. report.md, aggregate.csv (per method and round: n, mean, std), verdict.csv (each
  method against IMP, random against PrAC: the accuracy difference with a paired 95%
  t-interval, and the cost in % of the reference's training steps), runs.csv (every run's
  values) and accuracy_vs_weights.png, accuracy_vs_steps.png, set_size.png.

--out (default SWEEP/report, or report/ beside the first run) is replaced whole by each call:
the files are written to a temporary folder that is then swapped in. The tables are printed
after the files are written; a reader that stops early (``| head``) ends the program quietly.
"""
import argparse
import csv
import json
import os
import math
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from statistics import mean, stdev
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from utils import ROUND_FIELDS, TEMP_PREFIX, RunPaths, UserError, current_umask, run_cli

# A retraining run and the round it matches must agree on the density to this many
# percentage points (rounds.csv keeps 6 significant digits).
DENSITY_TOLERANCE = 0.01
RETRAIN_SUFFIX = "_retrain"
ROUND_CHECKPOINT = re.compile(r"^(\d+)(?:checkpoint\.pth\.tar|model_SA_best\.pth\.tar)$")
FINAL_TICKET = os.path.basename(RunPaths("").final_ticket())
IMP_SCRIPT = "main_imp.py"
IMP_METHOD = "imp"
DEFAULT_SELECT = "prac"
PLOT_ACCURACY = "accuracy_vs_weights.png"
PLOT_STEPS = "cumulative_steps.png"
PLOT_EXAMPLES = "train_examples.png"

# The per-run table: (CSV column, markdown header).
TABLE_COLUMNS: List[Tuple[str, str]] = [
    ("round", "round"),
    ("remaining_weights", "remaining weights (%)"),
    ("train_examples", "training examples"),
    ("epochs_run", "epochs"),
    ("epochs_planned", "epochs planned"),
    ("steps", "steps"),
    ("cumulative_steps", "cumulative steps"),
    ("best_val_acc", "best val acc (%)"),
    ("test_acc_at_best_val", "test acc at best val (%)"),
    ("retrained_test_acc", "retrained-ticket test acc (%)"),
]
SUMMARY_COLUMNS: List[Tuple[str, str]] = [
    ("run", "run"),
    ("kind", "kind"),
    ("prune_type", "prune type"),
    ("rounds", "rounds"),
    ("sparsest_trained_weights", "sparsest trained (%)"),
    ("compared_through_round", "through round"),
    ("cumulative_steps", "cumulative steps"),
    ("steps_vs_first", "steps vs first (%)"),
]

Cell = Optional[float]


# ============================================================================ reading runs
@dataclass(frozen=True)
class RoundResult:
    """One row of a rounds.csv, typed."""

    round: int
    remaining_weights: float
    train_examples: int
    forgetting_part: Optional[int]
    pruning_aware_part: Optional[int]
    epochs_planned: int
    epochs_run: int
    eb_stop_epoch: Optional[int]
    steps: int
    cumulative_steps: int
    best_val_acc: float
    test_acc_at_best_val: float


@dataclass
class Run:
    """An IMP or PrAC run folder: its rounds and its saved arguments."""

    path: str                       # absolute
    label: str
    kind: str                       # "IMP" or "PrAC"
    arguments: Dict[str, Any]
    rounds: List[RoundResult]
    method: str = ""                # imp, prac, random, ... (from args.json's script and --select)
    seed: Optional[int] = None

    @property
    def final_round(self) -> int:
        """The round number of ``final_ticket.pth.tar``: pruning_times (the sparsest ticket)."""
        pruning_times = self.arguments.get("pruning_times")
        return int(pruning_times) if pruning_times is not None else self.rounds[-1].round + 1

    def round_result(self, number: int) -> Optional[RoundResult]:
        return next((r for r in self.rounds if r.round == number), None)


@dataclass(frozen=True)
class RetrainRun:
    """A main_train.py run folder: its single result row and saved arguments."""

    path: str                       # absolute
    arguments: Dict[str, Any]
    result: RoundResult
    ticket: Dict[str, Any] = field(default_factory=dict)  # args.json's "ticket" record (absolute paths)


@dataclass(frozen=True)
class RetrainMatch:
    """A retraining run assigned to the round of a run whose ticket it retrained."""

    retrain: RetrainRun
    run_index: int
    round: int


def _optional_int(text: str) -> Optional[int]:
    """An int cell that may be empty (rounds.csv writes None as '')."""
    return int(float(text)) if text.strip() else None


def read_rounds(run_dir: str) -> List[RoundResult]:
    """Parses ``run_dir/rounds.csv``; a missing, empty or malformed table is a UserError."""
    path = RunPaths(run_dir).rounds_csv
    if not os.path.isdir(run_dir):
        raise UserError(f"{run_dir} is not a folder")
    if not os.path.isfile(path):
        raise UserError(f"{run_dir} has no rounds.csv: it is not the --save_dir of a run, "
                        "or the run has not finished its first round")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in ROUND_FIELDS if name not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{path} is not a rounds table (missing columns: {', '.join(missing)})")
        rows = list(reader)
    if not rows:
        raise UserError(f"{path} has no finished round yet")
    by_round: Dict[int, RoundResult] = {}
    for line, row in enumerate(rows, start=2):
        try:
            result = RoundResult(
                round=int(row["round"]), remaining_weights=float(row["remaining_weights"]),
                train_examples=int(row["train_examples"]),
                forgetting_part=_optional_int(row["forgetting_part"]),
                pruning_aware_part=_optional_int(row["pruning_aware_part"]),
                epochs_planned=int(row["epochs_planned"]), epochs_run=int(row["epochs_run"]),
                eb_stop_epoch=_optional_int(row["eb_stop_epoch"]), steps=int(row["steps"]),
                cumulative_steps=int(row["cumulative_steps"]), best_val_acc=float(row["best_val_acc"]),
                test_acc_at_best_val=float(row["test_acc_at_best_val"]))
        except (TypeError, ValueError) as error:
            raise UserError(f"{path} line {line} has a bad value ({error})") from None
        by_round[result.round] = result  # a repeated round keeps its last row
    return [by_round[number] for number in sorted(by_round)]


def read_run_info(run_dir: str) -> Dict[str, Any]:
    """The whole ``run_dir/args.json`` (script, arguments, ticket, ...); {} when the file is absent."""
    path = RunPaths(run_dir).run_info
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as handle:
            info = json.load(handle)
    except (OSError, ValueError) as error:
        raise UserError(f"{path} is not readable JSON ({error})") from None
    return info if isinstance(info, dict) else {}


def read_arguments(run_dir: str) -> Dict[str, Any]:
    """The ``arguments`` of ``run_dir/args.json``; {} when the file is absent."""
    arguments = read_run_info(run_dir).get("arguments")
    return dict(arguments) if isinstance(arguments, dict) else {}


def run_method(info: Dict[str, Any], kind: str) -> str:
    """A run's method, from what args.json says produced it (never from its folder name):
    main_imp.py is "imp"; main_PrAC_imp.py is its --select rule (prac, random, ...). An
    args.json without a script (hand-made) falls back to the run's kind. Every script's
    arguments hold ``select``, so it alone does not tell IMP from PrAC."""
    script = os.path.basename(str(info.get("script") or ""))
    arguments = info.get("arguments") if isinstance(info.get("arguments"), dict) else {}
    if script == IMP_SCRIPT or (not script and kind == "IMP"):
        return IMP_METHOD
    return str(arguments.get("select") or DEFAULT_SELECT)


def run_seed(arguments: Dict[str, Any]) -> Optional[int]:
    """The run's --seed, or None when it ran unseeded (it then pairs with no other run)."""
    seed = arguments.get("seed")
    try:
        return int(seed) if seed is not None else None
    except (TypeError, ValueError):
        return None


def is_retrain_arguments(arguments: Dict[str, Any]) -> bool:
    """main_train.py runs are the ones with a ticket source (--init_dir / --mask_dir)."""
    return bool(arguments.get("init_dir") or arguments.get("mask_dir"))


def run_kind(run_dir: str) -> str:
    """"PrAC" when the run saved PrAC sets (main_PrAC_imp.py always saves round 0's), else "IMP"."""
    return "PrAC" if os.path.isfile(RunPaths(run_dir).prac_set(0)) else "IMP"


def load_run(run_dir: str, label: str) -> Run:
    """Reads an IMP / PrAC run folder; a retraining run given here is a UserError."""
    path = os.path.abspath(run_dir)
    rounds = read_rounds(run_dir)
    info = read_run_info(run_dir)
    arguments = read_arguments(run_dir)
    if is_retrain_arguments(arguments):
        raise UserError(f"{run_dir} is a main_train.py (retraining) run; pass it with --retrain {run_dir}")
    kind = run_kind(run_dir)
    return Run(path=path, label=label, kind=kind, arguments=arguments, rounds=rounds,
               method=run_method(info, kind), seed=run_seed(arguments))


def load_retrain(run_dir: str) -> RetrainRun:
    """Reads a main_train.py run folder (its rounds.csv holds one row, round 0); a folder whose
    args.json names no ticket (an IMP / PrAC run) is a UserError."""
    rounds = read_rounds(run_dir)
    arguments = read_arguments(run_dir)
    if arguments and not is_retrain_arguments(arguments):
        raise UserError(f"--retrain {run_dir} is not a main_train.py run (its args.json has no "
                        "--init_dir / --mask_dir); pass IMP / PrAC runs as RUN_DIR")
    ticket = read_run_info(run_dir).get("ticket")
    return RetrainRun(path=os.path.abspath(run_dir), arguments=arguments, result=rounds[-1],
                      ticket=dict(ticket) if isinstance(ticket, dict) else {})


def default_labels(run_dirs: Sequence[str]) -> List[str]:
    """Folder names, or parent/folder where two runs share a folder name."""
    names = [os.path.basename(os.path.abspath(d)) for d in run_dirs]
    return [name if names.count(name) == 1 else
            os.path.join(os.path.basename(os.path.dirname(os.path.abspath(d))), name)
            for name, d in zip(names, run_dirs)]


# ============================================================================ retraining runs
def checkpoint_round(filename: str, final_round: int) -> Optional[int]:
    """The round whose ticket a checkpoint file holds: k for ``{k}checkpoint.pth.tar`` and
    ``{k}model_SA_best.pth.tar``, ``final_round`` for ``final_ticket.pth.tar``, else None."""
    name = os.path.basename(filename)
    if name == FINAL_TICKET:
        return final_round
    found = ROUND_CHECKPOINT.match(name)
    return int(found.group(1)) if found else None


def recorded_path_bases(retrain: RetrainRun) -> List[str]:
    """Folders a relative path in a retraining run's args.json may be relative to.

    args.json does not record the working folder, so this tries, in order: the folder that
    the recorded --save_dir was relative to (when it is a suffix of the run's path), the
    current folder, and every folder above the run.
    """
    bases: List[str] = []
    save_dir = retrain.arguments.get("save_dir")
    if save_dir and not os.path.isabs(save_dir):
        parts = [p for p in os.path.normpath(save_dir).split(os.sep) if p not in ("", ".")]
        own = retrain.path.split(os.sep)
        if ".." not in parts and parts and own[-len(parts):] == parts:
            bases.append(os.sep.join(own[:-len(parts)]) or os.sep)
    bases.append(os.getcwd())
    folder = os.path.dirname(retrain.path)
    while True:
        bases.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            return bases
        folder = parent


def recorded_folders(retrain: RetrainRun, key: str) -> List[str]:
    """The folders (real paths) that the file the retraining run recorded under ``key``
    ("mask_dir" or "init_dir") may lie in, most likely first; [] when none was recorded."""
    recorded = retrain.arguments.get(key)
    if not recorded:
        return []
    folders = [os.path.realpath(os.path.dirname(os.path.join(base, recorded)))
               for base in recorded_path_bases(retrain)]
    absolute = retrain.ticket.get(key)  # main_train.py also records the absolute path
    if absolute and os.path.isabs(str(absolute)):
        folders.insert(0, os.path.realpath(os.path.dirname(str(absolute))))
        moved = moved_path(retrain, str(absolute))
        if moved:
            folders.append(os.path.realpath(os.path.dirname(moved)))
    return list(dict.fromkeys(folders))


def moved_path(retrain: RetrainRun, recorded: str) -> Optional[str]:
    """Where ``recorded`` (an absolute path written when the run started) lies now, if the
    folder holding both it and the retraining run was moved or copied (e.g. a sweep's tables
    committed under results/): the recorded --save_dir and the run's real path share their
    last components, and what precedes them is the old and the new root."""
    save_dir = retrain.arguments.get("save_dir")
    if not save_dir or not os.path.isabs(str(save_dir)):
        return None
    then = os.path.normpath(str(save_dir)).split(os.sep)
    now = os.path.normpath(retrain.path).split(os.sep)
    shared = 0
    while shared < min(len(then), len(now)) - 1 and then[-1 - shared] == now[-1 - shared]:
        shared += 1
    if shared == 0:
        return None
    old_root, new_root = os.sep.join(then[:-shared]), os.sep.join(now[:-shared])
    if old_root == new_root or not recorded.startswith(old_root + os.sep):
        return None
    return new_root + recorded[len(old_root):]


def ticket_source(retrain: RetrainRun, runs: Sequence[Run]) -> Optional[Tuple[int, str]]:
    """(index of the run, file name) that the retraining run's --mask_dir (else --init_dir)
    points into, or None when it points into none of ``runs``."""
    run_index = {os.path.realpath(run.path): index for index, run in enumerate(runs)}
    for key in ("mask_dir", "init_dir"):
        for folder in recorded_folders(retrain, key):
            if folder in run_index:
                return run_index[folder], os.path.basename(str(retrain.arguments[key]))
    return None


def points_to_other_run(retrain: RetrainRun) -> bool:
    """Whether the retraining run's --mask_dir / --init_dir lies in an existing run folder
    (one that is not among the runs reported, when :func:`ticket_source` found none)."""
    return any(os.path.isfile(RunPaths(folder).rounds_csv)
               for key in ("mask_dir", "init_dir") for folder in recorded_folders(retrain, key))


def round_by_density(run: Run, density: float) -> Optional[int]:
    """The round of ``run`` that trained at ``density`` (% of weights), if exactly one did."""
    rounds = [r.round for r in run.rounds if abs(r.remaining_weights - density) <= DENSITY_TOLERANCE]
    return rounds[0] if len(rounds) == 1 else None


def match_retrain(retrain: RetrainRun, runs: Sequence[Run],
                  default_run: Optional[int] = None) -> Optional[RetrainMatch]:
    """Assigns a retraining run to a run and round.

    The run is the one its --mask_dir / --init_dir points into, else ``default_run`` (e.g. the
    run whose ``<RUN>_retrain/`` folder holds it) unless they point into another existing run.
    The round comes from the mask checkpoint's file name, else from the density it trained at.
    """
    source = ticket_source(retrain, runs)
    if source is not None:
        run_index, filename = source
    elif default_run is not None and not points_to_other_run(retrain):
        run_index = default_run
        recorded = retrain.arguments.get("mask_dir") or retrain.arguments.get("init_dir") or ""
        filename = os.path.basename(str(recorded))
    else:
        return None
    run = runs[run_index]
    number = checkpoint_round(filename, run.final_round)
    if number is None:
        number = round_by_density(run, retrain.result.remaining_weights)
    return None if number is None else RetrainMatch(retrain=retrain, run_index=run_index, round=number)


def density_mismatch(match: RetrainMatch, run: Run) -> Optional[str]:
    """A note when the retrained ticket's density differs from the density its round trained at."""
    trained, retrained = run.round_result(match.round), match.retrain.result
    if trained is None or abs(trained.remaining_weights - retrained.remaining_weights) <= DENSITY_TOLERANCE:
        return None
    return (f"retraining run {match.retrain.path} has {retrained.remaining_weights:.2f}% weights but round "
            f"{match.round} of {run.label} trained at {trained.remaining_weights:.2f}%")


def is_retrain_dir(folder: str) -> bool:
    """A finished run folder that is not an IMP / PrAC run (args.json names a ticket, or is absent)."""
    if not os.path.isfile(RunPaths(folder).rounds_csv):
        return False
    arguments = read_arguments(folder)
    return not arguments or is_retrain_arguments(arguments)


def retrain_dirs_in(folder: str) -> List[str]:
    """``folder`` itself when it is a run folder, else its subfolders that are run folders."""
    if os.path.isfile(RunPaths(folder).rounds_csv):
        return [folder]
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                  if os.path.isfile(RunPaths(os.path.join(folder, name)).rounds_csv))


def _subfolders(folder: str) -> List[str]:
    """The folders directly inside ``folder`` (none when it cannot be listed)."""
    try:
        return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                      if os.path.isdir(os.path.join(folder, name)))
    except OSError:
        return []


def discover_retrain_dirs(runs: Sequence[Run]) -> List[Tuple[str, Optional[int]]]:
    """Retraining run folders next to the runs, each with the run its location implies
    (``<RUN>_retrain/*``) or None (any folder up to two levels below a run's parent whose
    args.json names a ticket; :func:`match_retrain` then decides by what it names)."""
    found: Dict[str, Optional[int]] = {}
    for index, run in enumerate(runs):
        for path in retrain_dirs_in(run.path + RETRAIN_SUFFIX):
            if is_retrain_dir(path):
                found[os.path.realpath(path)] = index
    for parent in sorted({os.path.dirname(run.path) for run in runs}):
        for child in _subfolders(parent):
            for folder in [child, *_subfolders(child)]:
                real = os.path.realpath(folder)
                if real not in found and is_retrain_dir(folder) and read_arguments(folder):
                    found[real] = None
    return sorted(found.items())


def collect_retrains(runs: Sequence[Run], explicit: Sequence[str],
                     notes: List[str]) -> List[RetrainMatch]:
    """Matches the --retrain folders and the discovered ones to rounds; what cannot be
    matched goes to ``notes``. A --retrain folder that does not exist or holds no run is a
    UserError."""
    default = 0 if len(runs) == 1 else None
    candidates: Dict[str, Optional[int]] = {}
    for folder in explicit:
        paths = retrain_dirs_in(folder)
        if not paths:
            raise UserError(f"--retrain {folder} " + ("does not exist" if not os.path.isdir(folder) else
                                                      "has no rounds.csv, nor subfolders with one"))
        for path in paths:
            candidates[os.path.realpath(path)] = default
    asked_for = set(candidates)
    for path, implied in discover_retrain_dirs(runs):
        if candidates.get(path) is None:
            candidates[path] = implied
    matches: List[RetrainMatch] = []
    for path, implied in sorted(candidates.items()):
        retrain = load_retrain(path)
        match = match_retrain(retrain, runs, implied)
        if match is None:
            if path in asked_for:
                notes.append(f"retraining run {path} matches no round of the given runs; left out")
            continue
        mismatch = density_mismatch(match, runs[match.run_index])
        if mismatch:
            notes.append(mismatch)
        matches.append(match)
    return matches


# ============================================================================ tables
@dataclass
class RunTable:
    """A run's report table: one row per round (plus retrained-only rounds, e.g. the final ticket)."""

    run: Run
    rows: List[Dict[str, Cell]]
    retrains: Dict[int, List[RetrainRun]] = field(default_factory=dict)


def build_table(run: Run, matches: Sequence[RetrainMatch]) -> RunTable:
    """Rows for every trained round and every retrained round; the retrained-ticket column is
    the mean test accuracy at the best validation epoch of the round's retraining runs."""
    retrains: Dict[int, List[RetrainRun]] = {}
    for match in matches:
        retrains.setdefault(match.round, []).append(match.retrain)
    rows: List[Dict[str, Cell]] = []
    for number in sorted({r.round for r in run.rounds} | set(retrains)):
        trained = run.round_result(number)
        retrained = retrains.get(number, [])
        row: Dict[str, Cell] = {name: None for name, _ in TABLE_COLUMNS}
        row["round"] = number
        if trained is not None:
            row.update({name: getattr(trained, name) for name, _ in TABLE_COLUMNS
                        if name not in ("round", "retrained_test_acc")})
        else:  # a ticket no round trained at (the final one): its density is the retraining's
            row["remaining_weights"] = retrained[0].result.remaining_weights
        if retrained:
            row["retrained_test_acc"] = mean(r.result.test_acc_at_best_val for r in retrained)
        rows.append(row)
    return RunTable(run=run, rows=rows, retrains=retrains)


@dataclass(frozen=True)
class StepsComparison:
    """A run's cumulative training steps against the first run's, over the rounds both finished."""

    label: str
    reference: str
    through_round: int
    steps: int
    reference_steps: int

    @property
    def percent(self) -> Optional[float]:
        return 100.0 * self.steps / self.reference_steps if self.reference_steps else None

    def sentence(self) -> str:
        if self.percent is None:
            return f"{self.label}: {self.steps} steps; {self.reference} ran no steps to compare with"
        return (f"{self.label} used {self.percent:.0f}% of {self.reference}'s training steps "
                f"({self.steps:,} vs {self.reference_steps:,} cumulative steps through round "
                f"{self.through_round}; {100 - self.percent:.0f}% saved)")


def cumulative_steps_through(run: Run, number: int) -> int:
    """Cumulative training steps at the end of the last finished round ≤ ``number``."""
    return max((r.cumulative_steps for r in run.rounds if r.round <= number), default=0)


def compare_steps(runs: Sequence[Run]) -> List[StepsComparison]:
    """Each run after the first against the first, through the last round both finished."""
    first = runs[0]
    comparisons = []
    for run in runs[1:]:
        through = min(first.rounds[-1].round, run.rounds[-1].round)
        comparisons.append(StepsComparison(label=run.label, reference=first.label, through_round=through,
                                           steps=cumulative_steps_through(run, through),
                                           reference_steps=cumulative_steps_through(first, through)))
    return comparisons


def summary_rows(runs: Sequence[Run], comparisons: Sequence[StepsComparison]) -> List[Dict[str, Any]]:
    """One row per run for the summary table."""
    by_label = {c.label: c for c in comparisons}
    rows = []
    for run in runs:
        comparison = by_label.get(run.label) if run is not runs[0] else None
        through = comparison.through_round if comparison else run.rounds[-1].round
        rows.append({"run": run.label, "kind": run.kind, "prune_type": run.arguments.get("prune_type"),
                     "rounds": len(run.rounds),
                     "sparsest_trained_weights": min(r.remaining_weights for r in run.rounds),
                     "compared_through_round": through,
                     "cumulative_steps": cumulative_steps_through(run, through),
                     "steps_vs_first": comparison.percent if comparison else (100.0 if len(runs) > 1 else None)})
    return rows


def training_set_sentence(run: Run) -> Optional[str]:
    """For a PrAC run: the range of its later rounds' training-set sizes against round 0's."""
    later = [r.train_examples for r in run.rounds[1:]]
    full = run.rounds[0].train_examples
    if run.kind != "PrAC" or not later or not full:
        return None
    return (f"{run.label}: PrAC sets of {100 * min(later) / full:.1f}%–{100 * max(later) / full:.1f}% "
            f"of round 0's {full} training examples (rounds 1–{run.rounds[-1].round})")


def format_cell(value: Any, decimals: int = 2) -> str:
    """Markdown text of a cell: '' for None, fixed decimals for floats."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{decimals}f}"
    return str(value)


def markdown_table(columns: Sequence[Tuple[str, str]], rows: Sequence[Dict[str, Any]]) -> str:
    """A GitHub-flavoured markdown table; numbers right-aligned."""
    header = "| " + " | ".join(title for _, title in columns) + " |"
    rule = "|" + "|".join("---:" if name not in ("run", "kind", "prune_type") else "---"
                          for name, _ in columns) + "|"
    body = ["| " + " | ".join(format_cell(row.get(name)) for name, _ in columns) + " |" for row in rows]
    return "\n".join([header, rule, *body])


def write_csv(path: str, columns: Sequence[Tuple[str, str]], rows: Sequence[Dict[str, Any]]) -> None:
    """Writes ``rows`` under the CSV column names; None is an empty cell, floats keep full precision."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([name for name, _ in columns])
        writer.writerows([["" if row.get(name) is None else row[name] for name, _ in columns] for row in rows])


# ============================================================================ plots
def _new_axes(title: str, xlabel: str, ylabel: str) -> Tuple[Figure, Axes]:
    """A figure (no pyplot, so no global backend state) with one labelled, gridded axis."""
    figure = Figure(figsize=(8, 5), layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    return figure, axes


def _save(figure: Figure, axes: Axes, path: str) -> None:
    """Adds the legend and writes the PNG."""
    axes.legend(loc="best", fontsize="small")
    figure.savefig(path, dpi=110)


def _color(index: int) -> str:
    """The colour of the ``index``-th run, the same in every plot."""
    return f"C{index % 10}"


def _density_ticks(tables: Sequence[RunTable], most: int = 12) -> List[float]:
    """The densities that occur in the tables, densest first, thinned to at most ``most``."""
    densities = sorted({round(float(row["remaining_weights"]), 2) for table in tables for row in table.rows
                        if row["remaining_weights"] is not None}, reverse=True)
    step = max(1, -(-len(densities) // most))
    return densities[::step]


def plot_accuracy(tables: Sequence[RunTable], path: str) -> None:
    """Test accuracy against remaining weights (log scale, sparser to the right): the found
    ticket (test accuracy at the best validation epoch of its round) and, where there is one,
    the retrained ticket, for every run."""
    figure, axes = _new_axes("Test accuracy vs remaining weights", "remaining weights (%, log scale; sparser →)",
                             "test accuracy (%)")
    for index, table in enumerate(tables):
        series = [("test_acc_at_best_val", "search round (trained on its set)", "o", "-"),
                  ("retrained_test_acc", "retrained ticket", "s", "--")]
        for column, what, marker, line in series:
            points = [(row["remaining_weights"], row[column]) for row in table.rows if row[column] is not None]
            if points:
                axes.plot([x for x, _ in points], [y for _, y in points], marker=marker, linestyle=line,
                          color=_color(index), markersize=7, label=f"{table.run.label}: {what}")
    axes.set_xscale("log")
    ticks = _density_ticks(tables)
    axes.xaxis.set_major_locator(FixedLocator(ticks))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.3g}"))
    if len(ticks) > 1:
        axes.set_xlim(max(ticks) * 1.05, min(ticks) / 1.05)  # reversed: denser left, sparser right
    else:
        axes.invert_xaxis()
    _save(figure, axes, path)


def plot_per_round(runs: Sequence[Run], value: Callable[[RoundResult], float], title: str, ylabel: str,
                   path: str, secondary: Optional[Tuple[str, float]] = None) -> None:
    """One line per run of ``value(round)`` against the round number; ``secondary`` =
    (label, reference) adds a right axis in % of ``reference``."""
    figure, axes = _new_axes(title, "pruning round", ylabel)
    for index, run in enumerate(runs):
        axes.plot([r.round for r in run.rounds], [value(r) for r in run.rounds], marker="o",
                  color=_color(index), label=run.label)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylim(bottom=0)
    if secondary is not None and secondary[1] > 0:
        label, reference = secondary
        right = axes.secondary_yaxis("right", functions=(lambda y: 100.0 * y / reference,
                                                         lambda p: p * reference / 100.0))
        right.set_ylabel(label)
    _save(figure, axes, path)


def write_plots(tables: Sequence[RunTable], out_dir: str) -> List[str]:
    """The three report plots; returns their paths."""
    runs = [table.run for table in tables]
    paths = [os.path.join(out_dir, name) for name in (PLOT_ACCURACY, PLOT_STEPS, PLOT_EXAMPLES)]
    plot_accuracy(tables, paths[0])
    plot_per_round(runs, lambda r: r.cumulative_steps, "Cumulative training steps per round",
                   "cumulative training steps (SGD iterations)", paths[1])
    full = max(run.rounds[0].train_examples for run in runs)
    plot_per_round(runs, lambda r: r.train_examples, "Training-set size per round (PrAC set size)",
                   "training examples", paths[2], secondary=("% of the largest round-0 set", float(full)))
    return paths


# ============================================================================ the report
@dataclass
class Report:
    """Everything the report shows, and the files it was written to."""

    tables: List[RunTable]
    summary: List[Dict[str, Any]]
    sentences: List[str]
    notes: List[str]
    markdown: str = ""
    files: List[str] = field(default_factory=list)


def _slug(label: str) -> str:
    """A file-name-safe form of a run label."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "run"


def csv_names(runs: Sequence[Run]) -> List[str]:
    """A distinct CSV file name per run, from its label."""
    names: List[str] = []
    for run in runs:
        name, number = _slug(run.label), 2
        candidate = f"{name}.csv"
        while candidate in names or candidate == "summary.csv":
            candidate, number = f"{name}_{number}.csv", number + 1
        names.append(candidate)
    return names


def run_heading(run: Run) -> str:
    """A run's section heading: label, kind, the arguments that identify it, its folder."""
    keys = ("arch", "dataset", "prune_type", "epochs", "rate")
    details = ", ".join(f"{key} {run.arguments[key]}" for key in keys if run.arguments.get(key) is not None)
    return f"## {run.label} — {run.kind}" + (f" ({details})" if details else "") + f"\n\n`{run.path}`"


def retrain_lines(table: RunTable) -> List[str]:
    """One markdown list item per retraining run used in the table."""
    return [f"- round {number}: `{retrain.path}` ({retrain.result.remaining_weights:.2f}% weights, "
            f"test acc {retrain.result.test_acc_at_best_val:.2f} at best val {retrain.result.best_val_acc:.2f})"
            for number, retrains in sorted(table.retrains.items()) for retrain in retrains]


def tables_markdown(report: Report) -> str:
    """The summary and per-run tables (what is printed)."""
    parts = ["## Summary", "", markdown_table(SUMMARY_COLUMNS, report.summary)]
    if report.sentences:
        parts += ["", *[f"- {s}" for s in report.sentences]]
    for table in report.tables:
        parts += ["", run_heading(table.run), "", markdown_table(TABLE_COLUMNS, table.rows)]
        lines = retrain_lines(table)
        if lines:
            parts += ["", "Retrained tickets (test accuracy at the retraining run's best validation epoch):",
                      *lines]
    return "\n".join(parts)


def report_markdown(report: Report, plot_paths: Sequence[str]) -> str:
    """The whole report.md."""
    parts = ["# Lottery-ticket report", "",
             "A round-k row is what round k trained, at the density it trained at; the retrained-ticket "
             "column is main_train.py run on that round's checkpoint (its mask), test accuracy at its "
             "best validation epoch. Accuracies in %.", "", tables_markdown(report), "", "## Plots", ""]
    parts += [f"![{os.path.splitext(os.path.basename(p))[0]}]({os.path.basename(p)})\n" for p in plot_paths]
    if report.notes:
        parts += ["## Notes", "", *[f"- {note}" for note in report.notes]]
    return "\n".join(parts).rstrip() + "\n"


def build_report(run_dirs: Sequence[str], retrain_dirs: Sequence[str] = (),
                 names: Optional[Sequence[str]] = None) -> Report:
    """Reads the runs and their retraining runs and computes tables and comparisons."""
    if not run_dirs:
        raise UserError("give at least one run folder")
    if names and len(names) != len(run_dirs):
        raise UserError(f"--name got {len(names)} labels for {len(run_dirs)} run folders; give one per run")
    labels = list(names) if names else default_labels(run_dirs)
    if len(set(labels)) != len(labels):
        raise UserError(f"run labels must differ, got {', '.join(labels)}")
    runs = [load_run(path, label) for path, label in zip(run_dirs, labels)]
    notes: List[str] = []
    matches = collect_retrains(runs, retrain_dirs, notes)
    tables = [build_table(run, [m for m in matches if m.run_index == index]) for index, run in enumerate(runs)]
    comparisons = compare_steps(runs)
    sentences = [c.sentence() for c in comparisons]
    sentences += [s for s in (training_set_sentence(run) for run in runs) if s]
    report = Report(tables=tables, summary=summary_rows(runs, comparisons), sentences=sentences, notes=notes)
    report.markdown = tables_markdown(report)
    return report


def write_report(report: Report, out_dir: str) -> List[str]:
    """Writes the per-run CSVs, summary.csv, the plots and report.md into ``out_dir``."""
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as error:
        raise UserError(f"--out {out_dir} cannot be created ({error})") from None
    files: List[str] = []
    for table, name in zip(report.tables, csv_names([t.run for t in report.tables])):
        files.append(os.path.join(out_dir, name))
        write_csv(files[-1], TABLE_COLUMNS, table.rows)
    files.append(os.path.join(out_dir, "summary.csv"))
    write_csv(files[-1], SUMMARY_COLUMNS, report.summary)
    plots = write_plots(report.tables, out_dir)
    markdown_path = os.path.join(out_dir, "report.md")
    with open(markdown_path, "w") as handle:
        handle.write(report_markdown(report, plots))
    report.files = [markdown_path, *files, *plots]
    return report.files


# ============================================================================ replicates
# A sweep folder (sweep.py): SWEEP/sweep.json, SWEEP/runs/<run>/ (search runs),
# SWEEP/retrain/<run>-<final|k>/ (main_train.py on their tickets). Folder names carry no
# meaning here: method and seed come from each run's args.json.
SWEEP_INFO = "sweep.json"
SWEEP_RUNS = "runs"
SWEEP_RETRAIN = "retrain"
REPORT_FOLDER = "report"
REPORT_MARKDOWN = "report.md"
RANDOM_METHOD = "random"
PLOT_ACCURACY_STEPS = "accuracy_vs_steps.png"
PLOT_SET_SIZE = "set_size.png"
AGGREGATE_CSV = "aggregate.csv"
VERDICT_CSV = "verdict.csv"
RUNS_CSV = "runs.csv"
METRIC_TITLES = {"retrained": "retrained-ticket test accuracy", "search": "search test accuracy"}

# Two-sided 95% Student-t quantiles t(0.975; df) for df = 1..30; above 30 the normal 1.96.
T_975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
NORMAL_975 = 1.96

SeedKey = Any  # a run's seed (int), or its path (str) when it ran unseeded: it pairs with nothing


def t_quantile_975(df: int) -> float:
    """t(0.975; df), the factor of a two-sided 95% interval; 1.96 for df > 30."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    return T_975[df - 1] if df <= len(T_975) else NORMAL_975


@dataclass(frozen=True)
class Stat:
    """n, mean and sample standard deviation (None below two values) of some numbers."""

    n: int
    mean: Optional[float]
    std: Optional[float]


def describe(values: Sequence[float]) -> Stat:
    values = [float(v) for v in values]
    return Stat(n=len(values), mean=mean(values) if values else None,
                std=stdev(values) if len(values) > 1 else None)


@dataclass(frozen=True)
class Replicate:
    """One run's values at one round (one sparsity)."""

    method: str
    seed: SeedKey
    run: str                        # the run folder
    round: int
    remaining_weights: float
    search_acc: Cell
    retrained_acc: Cell
    cumulative_steps: Cell          # through this round (the final ticket: through the last round)
    train_examples: Cell
    forgetting_part: Cell
    pruning_aware_part: Cell

    def metric(self, name: str) -> Cell:
        return self.retrained_acc if name == "retrained" else self.search_acc


def replicates_of(table: RunTable) -> List[Replicate]:
    """The rows of a run's table as replicates of its method, keyed by its seed."""
    run = table.run
    key: SeedKey = run.seed if run.seed is not None else run.path
    found = []
    for row in table.rows:
        number = int(row["round"])
        trained = run.round_result(number)
        found.append(Replicate(
            method=run.method, seed=key, run=run.path, round=number, remaining_weights=float(row["remaining_weights"]),
            search_acc=row["test_acc_at_best_val"], retrained_acc=row["retrained_test_acc"],
            cumulative_steps=float(cumulative_steps_through(run, number)),
            train_examples=row["train_examples"],
            forgetting_part=trained.forgetting_part if trained else None,
            pruning_aware_part=trained.pruning_aware_part if trained else None))
    return found


AGGREGATE_FIELDS = ("retrained_acc", "search_acc", "cumulative_steps", "train_examples",
                    "forgetting_part", "pruning_aware_part")


def aggregate(replicates: Sequence[Replicate]) -> List[Dict[str, Any]]:
    """One row per method and round: n runs, mean remaining weights, and n / mean / std of
    each of :data:`AGGREGATE_FIELDS` over the runs that have it."""
    groups: Dict[Tuple[str, int], List[Replicate]] = {}
    for replicate in replicates:
        groups.setdefault((replicate.method, replicate.round), []).append(replicate)
    rows = []
    for (method, number), group in sorted(groups.items(), key=lambda item: (method_order(item[0][0]), item[0][1])):
        row: Dict[str, Any] = {"method": method, "round": number, "runs": len(group),
                               "remaining_weights": mean(r.remaining_weights for r in group)}
        for name in AGGREGATE_FIELDS:
            stat = describe([getattr(r, name) for r in group if getattr(r, name) is not None])
            row.update({f"{name}_n": stat.n, f"{name}_mean": stat.mean, f"{name}_std": stat.std})
        rows.append(row)
    return rows


def method_order(method: str) -> Tuple[int, str]:
    """IMP first, then PrAC, then random, then the other rules by name."""
    return ({IMP_METHOD: 0, DEFAULT_SELECT: 1, RANDOM_METHOD: 2}.get(method, 3), method)


@dataclass(frozen=True)
class Difference:
    """mean(a − b) with its two-sided 95% t-interval (None when unknown)."""

    paired: bool
    n: int                          # pairs (paired), else runs of a
    n_reference: int                # pairs (paired), else runs of b
    mean: float
    low: Optional[float]
    high: Optional[float]

    def interval_text(self) -> str:
        if self.low is None or self.high is None:
            seeds = self.n if self.paired else min(self.n, self.n_reference)  # < 2 here
            return f"interval unknown ({seeds} seed)"
        return f"95% CI {signed(self.low)} to {signed(self.high)}"

    def n_text(self) -> str:
        return (f"n={self.n} seed{'s' if self.n != 1 else ''}, paired by seed" if self.paired else
                f"n={self.n} vs {self.n_reference} runs, unpaired")


def signed(value: float, decimals: int = 2) -> str:
    """'+0.60' / '−1.20' (a true minus sign, for text; CSVs keep plain numbers)."""
    text = f"{value:+.{decimals}f}"
    return text.replace("-", "−")


def difference(a: Dict[SeedKey, float], b: Dict[SeedKey, float]) -> Difference:
    """mean(a − b) over the seeds both have (paired), or, when fewer than two seeds are
    shared (and not one each of the same seed), the difference of means with Welch's
    interval (unpaired). The interval is mean ± t(0.975; df)·standard error."""
    common = [key for key in a if key in b and not isinstance(key, str)]
    if len(common) >= 2 or (len(common) == 1 and len(a) == len(b) == 1):
        diffs = [a[key] - b[key] for key in common]
        center = mean(diffs)
        if len(diffs) < 2:
            return Difference(True, len(diffs), len(diffs), center, None, None)
        half = t_quantile_975(len(diffs) - 1) * stdev(diffs) / math.sqrt(len(diffs))
        return Difference(True, len(diffs), len(diffs), center, center - half, center + half)
    center = mean(a.values()) - mean(b.values())
    if len(a) < 2 or len(b) < 2:
        return Difference(False, len(a), len(b), center, None, None)
    var_a, var_b = stdev(a.values()) ** 2 / len(a), stdev(b.values()) ** 2 / len(b)
    if var_a + var_b == 0:
        return Difference(False, len(a), len(b), center, center, center)
    df = (var_a + var_b) ** 2 / (var_a ** 2 / (len(a) - 1) + var_b ** 2 / (len(b) - 1))
    half = t_quantile_975(max(1, int(df))) * math.sqrt(var_a + var_b)  # df rounded down: wider
    return Difference(False, len(a), len(b), center, center - half, center + half)


def cost_ratio(a: Dict[SeedKey, float], b: Dict[SeedKey, float]) -> Stat:
    """a's cumulative steps in % of b's, per seed of a (against b's run of the same seed,
    else b's mean), then mean ± std over a's seeds."""
    if not b:
        return describe([])
    reference = mean(b.values())
    ratios = [100.0 * steps / (b.get(key, reference)) for key, steps in a.items() if b.get(key, reference) > 0]
    return describe(ratios)


@dataclass(frozen=True)
class VerdictRow:
    """Method against reference at one round (sparsity)."""

    method: str
    reference: str
    round: int
    remaining_weights: float
    metric: str                     # "retrained" or "search"
    difference: Difference
    cost: Stat                      # method's cumulative steps in % of reference's, through the round

    def summary(self) -> str:
        """Accuracy and cost in one line (never cost alone)."""
        what = METRIC_TITLES[self.metric]
        accuracy = (f"{signed(self.difference.mean)} points of {what} "
                    f"({self.difference.interval_text()}, {self.difference.n_text()})")
        if self.cost.mean is None:
            cost = f"for an unknown share of {self.reference}'s training steps (none recorded)"
        elif self.cost.std is None:
            cost = f"for {self.cost.mean:.0f}% of {self.reference}'s training steps"
        else:
            cost = f"for {self.cost.mean:.0f}% ± {self.cost.std:.0f}% of {self.reference}'s training steps"
        return (f"{self.method} vs {self.reference} at {self.remaining_weights:.1f}% weights "
                f"(round {self.round}): {accuracy} {cost}")


def comparisons(methods: Sequence[str]) -> List[Tuple[str, str]]:
    """(method, reference) pairs: every other method against IMP, and random against PrAC
    (does it matter *which* examples a round trains on?)."""
    pairs = [(method, IMP_METHOD) for method in methods if method != IMP_METHOD]
    if DEFAULT_SELECT in methods and RANDOM_METHOD in methods:
        pairs.append((RANDOM_METHOD, DEFAULT_SELECT))
    return pairs


def by_seed(replicates: Sequence[Replicate], value: Callable[[Replicate], Cell]) -> Dict[SeedKey, float]:
    """Seed → value (the mean where one seed has several runs), for the replicates that have one."""
    grouped: Dict[SeedKey, List[float]] = {}
    for replicate in replicates:
        found = value(replicate)
        if found is not None:
            grouped.setdefault(replicate.seed, []).append(float(found))
    return {key: mean(values) for key, values in grouped.items()}


def verdict(replicates: Sequence[Replicate], method: str, reference: str,
            notes: List[str]) -> List[VerdictRow]:
    """Per round both methods reached: the accuracy difference and the cost ratio. Retrained-
    ticket accuracy when both methods have some, else the search rounds' test accuracy."""
    mine = [r for r in replicates if r.method == method]
    theirs = [r for r in replicates if r.method == reference]
    retrained_rounds = ({r.round for r in mine if r.retrained_acc is not None} &
                        {r.round for r in theirs if r.retrained_acc is not None})
    metric = "retrained" if retrained_rounds else "search"
    rows = []
    for number in sorted({r.round for r in mine} & {r.round for r in theirs}):
        a = [r for r in mine if r.round == number]
        b = [r for r in theirs if r.round == number]
        acc_a, acc_b = by_seed(a, lambda r: r.metric(metric)), by_seed(b, lambda r: r.metric(metric))
        if not acc_a or not acc_b:
            continue
        density_a, density_b = mean(r.remaining_weights for r in a), mean(r.remaining_weights for r in b)
        if abs(density_a - density_b) > DENSITY_TOLERANCE:
            notes.append(f"round {number}: {method} trained at {density_a:.2f}% weights, {reference} at "
                         f"{density_b:.2f}%; not compared")
            continue
        rows.append(VerdictRow(method=method, reference=reference, round=number, remaining_weights=density_a,
                               metric=metric, difference=difference(acc_a, acc_b),
                               cost=cost_ratio(by_seed(a, lambda r: r.cumulative_steps),
                                               by_seed(b, lambda r: r.cumulative_steps))))
    return rows


# ---------------------------------------------------------------------------- replicate tables
def mean_std_text(mean_value: Optional[float], std_value: Optional[float], n: int, decimals: int = 2,
                  show_n: bool = True) -> str:
    """'81.20 ± 0.40 (3)'; '' when there is no value."""
    if mean_value is None:
        return ""
    text = f"{mean_value:,.{decimals}f}"
    if std_value is not None:
        text += f" ± {std_value:,.{decimals}f}"
    return text + (f" ({n})" if show_n else "")


def aggregate_markdown(rows: Sequence[Dict[str, Any]]) -> str:
    header = ("| method | round | remaining weights (%) | runs | retrained-ticket test acc (%) | "
              "search test acc (%) | cumulative steps | training examples |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        cells = [row["method"], str(row["round"]), f"{row['remaining_weights']:.2f}", str(row["runs"]),
                 mean_std_text(row["retrained_acc_mean"], row["retrained_acc_std"], row["retrained_acc_n"]),
                 mean_std_text(row["search_acc_mean"], row["search_acc_std"], row["search_acc_n"]),
                 mean_std_text(row["cumulative_steps_mean"], row["cumulative_steps_std"],
                               row["cumulative_steps_n"], 0, show_n=False),
                 mean_std_text(row["train_examples_mean"], row["train_examples_std"], row["train_examples_n"], 0,
                               show_n=False)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict_record(row: VerdictRow) -> Dict[str, Any]:
    d = row.difference
    return {"method": row.method, "reference": row.reference, "round": row.round,
            "remaining_weights": row.remaining_weights, "metric": row.metric,
            "paired": d.paired, "n": d.n, "n_reference": d.n_reference, "difference_mean": d.mean,
            "ci95_low": d.low, "ci95_high": d.high, "steps_percent_mean": row.cost.mean,
            "steps_percent_std": row.cost.std, "steps_percent_n": row.cost.n}


def verdict_markdown(rows: Sequence[VerdictRow]) -> str:
    first = rows[0]
    title = (f"### {first.method} − {first.reference}: {METRIC_TITLES[first.metric]} "
             f"(points), and {first.method}'s training steps in % of {first.reference}'s")
    lines = [title, "", "| round | remaining weights (%) | difference (points) | 95% CI | n | "
             f"steps (% of {first.reference}) |", "|---:|---:|---:|---|---|---:|"]
    for row in rows:
        d = row.difference
        interval = ("unknown" if d.low is None or d.high is None else f"{signed(d.low)} to {signed(d.high)}")
        cost = mean_std_text(row.cost.mean, row.cost.std, row.cost.n, 0, show_n=False)
        lines.append(f"| {row.round} | {row.remaining_weights:.2f} | {signed(d.mean)} | {interval} | "
                     f"{d.n_text()} | {cost} |")
    return "\n".join(lines)


@dataclass
class ReplicateReport:
    """The replicates report: runs grouped by method, aggregates and the verdict."""

    runs: List[Run]
    tables: List[RunTable]
    replicates: List[Replicate]
    aggregate: List[Dict[str, Any]]
    verdicts: List[List[VerdictRow]]
    summaries: List[str]
    notes: List[str]
    markdown: str = ""
    files: List[str] = field(default_factory=list)


def is_sweep_dir(folder: str) -> bool:
    """A sweep.py folder: it has sweep.json or a runs/ folder."""
    return os.path.isfile(os.path.join(folder, SWEEP_INFO)) or os.path.isdir(os.path.join(folder, SWEEP_RUNS))


def sweep_run_dirs(sweep: str, notes: List[str]) -> List[str]:
    """The finished search runs in SWEEP/runs; unfinished ones go to ``notes``."""
    found = []
    for folder in _subfolders(os.path.join(sweep, SWEEP_RUNS)):
        if not os.path.isfile(RunPaths(folder).rounds_csv):
            notes.append(f"{folder} has no finished round yet; left out")
        elif is_retrain_arguments(read_arguments(folder)):
            notes.append(f"{folder} is a retraining run inside {SWEEP_RUNS}/; left out")
        else:
            found.append(folder)
    if not found:
        raise UserError(f"{sweep} holds no finished run in {os.path.join(sweep, SWEEP_RUNS)}")
    return found


def build_replicate_report(run_dirs: Sequence[str], retrain_dirs: Sequence[str] = (),
                           notes: Optional[List[str]] = None) -> ReplicateReport:
    """Reads the runs (and their retraining runs), groups them by method and computes the
    aggregates, the verdicts and their summary lines."""
    notes = list(notes or [])
    runs = [load_run(path, "") for path in run_dirs]
    for run in runs:
        run.label = f"{run.method}-seed{run.seed}"
    matches = collect_retrains(runs, retrain_dirs, notes)
    tables = [build_table(run, [m for m in matches if m.run_index == index]) for index, run in enumerate(runs)]
    replicates = [replicate for table in tables for replicate in replicates_of(table)]
    methods = sorted({run.method for run in runs}, key=method_order)
    for method in methods:
        seeds = [run.seed for run in runs if run.method == method]
        repeated = sorted({s for s in seeds if s is not None and seeds.count(s) > 1})
        if repeated:
            notes.append(f"{method} has several runs with seed {', '.join(map(str, repeated))}; "
                         "their values are averaged per seed in the verdict")
    verdicts: List[List[VerdictRow]] = []
    summaries: List[str] = []
    if IMP_METHOD not in methods:
        summaries.append(f"no {IMP_METHOD} runs among the runs ({', '.join(methods)}): no verdict, "
                         f"which compares each method with {IMP_METHOD}")
    else:
        for method, reference in comparisons(methods):
            rows = verdict(replicates, method, reference, notes)
            if rows:
                verdicts.append(rows)
                summaries.append(rows[-1].summary())
            else:
                summaries.append(f"{method} vs {reference}: no round both finished with an accuracy to compare")
    return ReplicateReport(runs=runs, tables=tables, replicates=replicates, aggregate=aggregate(replicates),
                           verdicts=verdicts, summaries=summaries, notes=notes)


def replicate_tables_markdown(report: ReplicateReport) -> str:
    """What is printed: the runs per method, the aggregate table, the verdict and its summary."""
    methods = sorted({run.method for run in report.runs}, key=method_order)
    listing = []
    for method in methods:
        seeds = [run.seed for run in report.runs if run.method == method]
        listing.append(f"- {method}: {len(seeds)} run{'s' if len(seeds) != 1 else ''}, seeds "
                       + ", ".join("unseeded" if s is None else str(s) for s in seeds))
    parts = ["## Runs by method (from each run's args.json)", "", *listing, "",
             "## Per method and round: mean ± std (n runs)", "", aggregate_markdown(report.aggregate), "",
             "## Verdict", ""]
    parts += [f"- {line}" for line in report.summaries]
    for rows in report.verdicts:
        parts += ["", verdict_markdown(rows)]
    return "\n".join(parts)


def replicate_markdown(report: ReplicateReport, plot_paths: Sequence[str]) -> str:
    """The whole report.md of the replicates report."""
    parts = ["# Lottery-ticket report: replicates", "",
             "Runs are grouped by method (main_imp.py is imp; main_PrAC_imp.py is its --select rule) and "
             "by seed, both read from args.json. A round-k row holds what round k trained, at the density "
             "it trained at; the retrained-ticket accuracy is main_train.py on that round's ticket (the "
             "last round: the final ticket), test accuracy at its best validation epoch; the search "
             "accuracy is the round's own test accuracy at its best validation epoch. Cumulative steps "
             "count the search's SGD iterations through the round (the final ticket's row: through the "
             "last round; retraining is not counted). Accuracies in %; ± is one sample standard "
             "deviation over runs, (n) the number of runs with a value.", "",
             "The verdict: per round, mean(method − reference) of the accuracy, paired by seed when "
             "the two methods share seeds (else the difference of means with Welch's degrees of "
             "freedom), with a two-sided 95% Student-t interval; with one seed the interval is "
             "unknown. The cost is the method's cumulative training steps through the same round in "
             "% of the reference's (same seed), mean ± std over seeds.", "",
             replicate_tables_markdown(report), "", "## Plots", "",
             "Error bars and bands are ± one sample standard deviation over seeds (none where a "
             "method has one run), not confidence intervals.", ""]
    parts += [f"![{os.path.splitext(os.path.basename(p))[0]}]({os.path.basename(p)})\n" for p in plot_paths]
    if report.notes:
        parts += ["## Notes", "", *[f"- {note}" for note in report.notes]]
    return "\n".join(parts).rstrip() + "\n"


AGGREGATE_COLUMNS: List[Tuple[str, str]] = (
    [("method", ""), ("round", ""), ("remaining_weights", ""), ("runs", "")]
    + [(f"{name}_{part}", "") for name in AGGREGATE_FIELDS for part in ("n", "mean", "std")])
VERDICT_COLUMNS: List[Tuple[str, str]] = [(name, "") for name in (
    "method", "reference", "round", "remaining_weights", "metric", "paired", "n", "n_reference",
    "difference_mean", "ci95_low", "ci95_high", "steps_percent_mean", "steps_percent_std", "steps_percent_n")]
RUNS_COLUMNS: List[Tuple[str, str]] = [(name, "") for name in (
    "method", "seed", "run", "round", "remaining_weights", "train_examples", "forgetting_part",
    "pruning_aware_part", "cumulative_steps", "search_acc", "retrained_acc")]


def _band_plot(axes: Axes, xs: Sequence[float], means: Sequence[float], stds: Sequence[Optional[float]],
               index: int, label: str, marker: str = "o", line: str = "-") -> None:
    """A mean line with ± std error bars and, between two or more such points, a band."""
    axes.plot(xs, means, marker=marker, linestyle=line, color=_color(index), label=label)
    banded = [(x, m, s) for x, m, s in zip(xs, means, stds) if s is not None]
    if banded:
        axes.errorbar([x for x, _, _ in banded], [m for _, m, _ in banded], yerr=[s for _, _, s in banded],
                      fmt="none", ecolor=_color(index), capsize=3, alpha=0.6)
    if len(banded) > 1:
        axes.fill_between([x for x, _, _ in banded], [m - s for _, m, s in banded],
                          [m + s for _, m, s in banded], color=_color(index), alpha=0.2, linewidth=0)


def write_replicate_plots(report: ReplicateReport, out_dir: str) -> List[str]:
    """Accuracy vs remaining weights, accuracy vs cumulative steps (accuracy against cost) and
    the training-set size per round: one line per method, bands ± std over seeds."""
    methods = sorted({row["method"] for row in report.aggregate}, key=method_order)
    paths = [os.path.join(out_dir, name) for name in (PLOT_ACCURACY, PLOT_ACCURACY_STEPS, PLOT_SET_SIZE)]
    series = [(name, METRIC_TITLES[key], marker, line) for name, key, marker, line in
              (("retrained_acc", "retrained", "s", "-"), ("search_acc", "search", "o", "--"))
              if any(row[f"{name}_mean"] is not None for row in report.aggregate)]

    def rows_of(method: str, name: str) -> List[Dict[str, Any]]:
        return [row for row in report.aggregate if row["method"] == method and row[f"{name}_mean"] is not None]

    figure, axes = _new_axes("Test accuracy vs remaining weights (mean ± std over seeds)",
                             "remaining weights (%, log scale; sparser →)", "test accuracy (%)")
    for index, method in enumerate(methods):
        for name, what, marker, line in series:
            rows = rows_of(method, name)
            if rows:
                _band_plot(axes, [r["remaining_weights"] for r in rows], [r[f"{name}_mean"] for r in rows],
                           [r[f"{name}_std"] for r in rows], index, f"{method}: {what}", marker, line)
    axes.set_xscale("log")
    densities = sorted({round(r["remaining_weights"], 2) for r in report.aggregate}, reverse=True)
    ticks = densities[::max(1, -(-len(densities) // 12))]
    axes.xaxis.set_major_locator(FixedLocator(ticks))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.3g}"))
    if len(ticks) > 1:
        axes.set_xlim(max(ticks) * 1.05, min(ticks) / 1.05)
    else:
        axes.invert_xaxis()
    _save(figure, axes, paths[0])

    figure, axes = _new_axes("Test accuracy vs training cost (mean ± std over seeds)",
                             "cumulative training steps (SGD iterations)", "test accuracy (%)")
    for index, method in enumerate(methods):
        for name, what, marker, line in series:
            rows = [r for r in rows_of(method, name) if r["cumulative_steps_mean"] is not None]
            if rows:
                _band_plot(axes, [r["cumulative_steps_mean"] for r in rows], [r[f"{name}_mean"] for r in rows],
                           [r[f"{name}_std"] for r in rows], index, f"{method}: {what}", marker, line)
    _save(figure, axes, paths[1])

    figure, axes = _new_axes("Training-set size per round (mean ± std over seeds)", "pruning round",
                             "training examples")
    for index, method in enumerate(methods):
        rows = rows_of(method, "train_examples")
        if rows:
            _band_plot(axes, [r["round"] for r in rows], [r["train_examples_mean"] for r in rows],
                       [r["train_examples_std"] for r in rows], index, method)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylim(bottom=0)
    _save(figure, axes, paths[2])
    return paths


def write_replicate_report(report: ReplicateReport, out_dir: str) -> List[str]:
    """Writes report.md, aggregate.csv, verdict.csv, runs.csv and the three plots into ``out_dir``."""
    files = [os.path.join(out_dir, name) for name in (AGGREGATE_CSV, VERDICT_CSV, RUNS_CSV)]
    write_csv(files[0], AGGREGATE_COLUMNS, report.aggregate)
    write_csv(files[1], VERDICT_COLUMNS, [verdict_record(row) for rows in report.verdicts for row in rows])
    write_csv(files[2], RUNS_COLUMNS, [{**{name: getattr(r, name) for name, _ in RUNS_COLUMNS},
                                        "seed": None if isinstance(r.seed, str) else r.seed}
                                       for r in report.replicates])
    plots = write_replicate_plots(report, out_dir)
    markdown_path = os.path.join(out_dir, REPORT_MARKDOWN)
    with open(markdown_path, "w") as handle:
        handle.write(replicate_markdown(report, plots))
    return [markdown_path, *files, *plots]


# ============================================================================ the output folder
def replace_folder(out_dir: str, write: Callable[[str], List[str]]) -> List[str]:
    """Runs ``write`` on a fresh temporary folder beside ``out_dir`` and then swaps it in,
    so ``out_dir`` holds exactly this call's files (none of an earlier call's). A folder that
    holds files but no report.md is not a report and is refused, never deleted."""
    out = os.path.abspath(out_dir)
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise UserError(f"--out {out_dir} is a file, not a folder")
        if os.listdir(out) and not os.path.isfile(os.path.join(out, REPORT_MARKDOWN)):
            raise UserError(f"--out {out_dir} holds files but no {REPORT_MARKDOWN}: it is not a report "
                            "folder, and the report replaces its folder whole; pick another --out")
    parent = os.path.dirname(out)
    try:
        os.makedirs(parent, exist_ok=True)
        temp = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.path.basename(out)}-", dir=parent)
    except OSError as error:
        raise UserError(f"--out {out_dir} cannot be created ({error})") from None
    old = temp + ".old"
    try:
        written = write(temp)
        os.chmod(temp, 0o777 & ~current_umask())  # mkdtemp's 0700 would hide the report
        if os.path.exists(out):
            os.rename(out, old)
        os.rename(temp, out)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return [os.path.join(out, os.path.relpath(path, temp)) for path in written]


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """The command-line flags (argparse's own usage errors exit with code 2 too)."""
    parser = argparse.ArgumentParser(
        description="Tables and plots of IMP / PrAC lottery-ticket runs. Given a sweep folder (sweep.json, "
                    "runs/, retrain/) or run folders with several seeds of a method, it groups the runs by "
                    "method (from args.json) and reports mean ± std over seeds and a verdict against IMP.")
    parser.add_argument("runs", nargs="+", metavar="DIR",
                        help="a sweep folder, or --save_dirs of main_imp.py / main_PrAC_imp.py runs")
    parser.add_argument("--retrain", nargs="+", default=[], metavar="DIR",
                        help="main_train.py run folders, or folders of them (others are found next to the "
                             "runs, and in a sweep's retrain/)")
    parser.add_argument("--out", default=None, metavar="OUT_DIR",
                        help="output folder, replaced whole by each call (default: SWEEP/report, or "
                             "report/ beside the first run)")
    parser.add_argument("--name", nargs="+", default=None, metavar="LABEL",
                        help="one label per run (the per-run report)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--replicates", action="store_true",
                      help="group runs by method and seed even with one seed per method")
    mode.add_argument("--per_run", action="store_true",
                      help="one table per run even when a method has several seeds")
    return parser.parse_args(argv)


def several_seeds(run_dirs: Sequence[str]) -> bool:
    """Whether some method (read from args.json) has more than one of the runs."""
    methods = [run_method(read_run_info(d), run_kind(d)) for d in run_dirs if os.path.isdir(d)]
    return any(methods.count(method) > 1 for method in methods)


def main(argv: Optional[Sequence[str]] = None) -> Any:
    """The command line: builds the report, writes it (replacing --out whole), then prints
    the tables and the file paths. Returns the Report or ReplicateReport."""
    args = parse_args(argv)
    notes: List[str] = []
    run_dirs, retrain_dirs = list(args.runs), list(args.retrain)
    sweep = run_dirs[0] if len(run_dirs) == 1 and is_sweep_dir(run_dirs[0]) else None
    if sweep is not None:
        run_dirs = sweep_run_dirs(sweep, notes)
        retrain_folder = os.path.join(sweep, SWEEP_RETRAIN)
        if retrain_dirs_in(retrain_folder):
            retrain_dirs.append(retrain_folder)
    replicates = args.replicates or (not args.per_run and not args.name and
                                     (sweep is not None or several_seeds(run_dirs)))
    if replicates and args.name:
        raise UserError("--name labels the runs of the per-run report; the replicates report labels "
                        "runs by method and seed (add --per_run for one table per run)")
    default_out = (os.path.join(sweep, REPORT_FOLDER) if sweep is not None else
                   os.path.join(os.path.dirname(os.path.abspath(run_dirs[0])), REPORT_FOLDER))
    out_dir = args.out or default_out
    report: Any
    if replicates:
        report = build_replicate_report(run_dirs, retrain_dirs, notes)
        report.markdown = replicate_tables_markdown(report)
        report.files = replace_folder(out_dir, lambda folder: write_replicate_report(report, folder))
    else:
        report = build_report(run_dirs, retrain_dirs, args.name)
        report.notes[:0] = notes
        report.files = replace_folder(out_dir, lambda folder: write_report(report, folder))
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    print(report.markdown)
    print()
    print(f"report: {report.files[0]}")
    for path in report.files[1:]:
        print(f"{'plot' if path.endswith('.png') else 'table'}: {path}")
    sys.stdout.flush()  # a closed pipe (report.py | head) shows here, inside the caller's handler
    return report


def run_quietly_into_pipe() -> None:
    """The command line, where a reader that stops early (``| head``) ends it quietly: the
    files are written before anything is printed, so nothing is lost."""
    try:
        run_cli(main)
    except BrokenPipeError:
        # Python flushes stdout again at exit; point it at /dev/null so that flush is quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)


if __name__ == "__main__":
    run_quietly_into_pipe()
