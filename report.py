"""Report on lottery-ticket runs: per-round tables, a steps comparison and plots.

    python report.py RUN_DIR [RUN_DIR ...] [--retrain DIR ...] [--out OUT_DIR] [--name LABEL ...]

Each RUN_DIR is the --save_dir of a main_imp.py or main_PrAC_imp.py run (its rounds.csv and
args.json are read). Retraining runs (main_train.py) are matched to the round whose ticket
they retrained: the round number comes from the checkpoint named by their --mask_dir
(``{k}checkpoint.pth.tar``, ``{k}model_SA_best.pth.tar``; ``final_ticket.pth.tar`` is round
``pruning_times``, the sparsest ticket). They are given with --retrain (a run folder, or a
folder of them) or found next to the runs: the subfolders of ``<RUN>_retrain/`` and any
folder up to two levels below a run's parent whose args.json points into that run.

Semantics: a round-k row holds what round k trained, at the density round k trained at, and
``{k}checkpoint.pth.tar`` holds that round's mask, so its retraining belongs to the same row.

Writes report.md, one CSV per run, summary.csv and three PNGs into --out (default: the first
run's parent folder / report) and prints the tables and the file paths.
"""
import argparse
import csv
import json
import os
import re
import sys
from dataclasses import dataclass, field
from statistics import mean
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from utils import ROUND_FIELDS, RunPaths, UserError, run_cli

# A retraining run and the round it matches must agree on the density to this many
# percentage points (rounds.csv keeps 6 significant digits).
DENSITY_TOLERANCE = 0.01
RETRAIN_SUFFIX = "_retrain"
ROUND_CHECKPOINT = re.compile(r"^(\d+)(?:checkpoint\.pth\.tar|model_SA_best\.pth\.tar)$")
FINAL_TICKET = os.path.basename(RunPaths("").final_ticket())
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


def read_arguments(run_dir: str) -> Dict[str, Any]:
    """The ``arguments`` of ``run_dir/args.json``; {} when the file is absent."""
    path = RunPaths(run_dir).run_info
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as handle:
            info = json.load(handle)
    except (OSError, ValueError) as error:
        raise UserError(f"{path} is not readable JSON ({error})") from None
    arguments = info.get("arguments") if isinstance(info, dict) else None
    return dict(arguments) if isinstance(arguments, dict) else {}


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
    arguments = read_arguments(run_dir)
    if is_retrain_arguments(arguments):
        raise UserError(f"{run_dir} is a main_train.py (retraining) run; pass it with --retrain {run_dir}")
    return Run(path=path, label=label, kind=run_kind(run_dir), arguments=arguments, rounds=rounds)


def load_retrain(run_dir: str) -> RetrainRun:
    """Reads a main_train.py run folder (its rounds.csv holds one row, round 0); a folder whose
    args.json names no ticket (an IMP / PrAC run) is a UserError."""
    rounds = read_rounds(run_dir)
    arguments = read_arguments(run_dir)
    if arguments and not is_retrain_arguments(arguments):
        raise UserError(f"--retrain {run_dir} is not a main_train.py run (its args.json has no "
                        "--init_dir / --mask_dir); pass IMP / PrAC runs as RUN_DIR")
    return RetrainRun(path=os.path.abspath(run_dir), arguments=arguments, result=rounds[-1])


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
    return list(dict.fromkeys(folders))


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


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """The command-line flags (argparse's own usage errors exit with code 2 too)."""
    parser = argparse.ArgumentParser(description="Tables and plots of IMP / PrAC lottery-ticket runs")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="--save_dir of main_imp.py / main_PrAC_imp.py runs")
    parser.add_argument("--retrain", nargs="+", default=[], metavar="DIR",
                        help="main_train.py run folders, or folders of them (others are found next to the runs)")
    parser.add_argument("--out", default=None, metavar="OUT_DIR",
                        help="output folder (default: the first run's parent folder / report)")
    parser.add_argument("--name", nargs="+", default=None, metavar="LABEL", help="one label per run")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Report:
    """The command line: builds the report, writes it, prints the tables and the file paths."""
    args = parse_args(argv)
    report = build_report(args.runs, args.retrain, args.name)
    out_dir = args.out or os.path.join(os.path.dirname(os.path.abspath(args.runs[0])), "report")
    files = write_report(report, out_dir)
    print(report.markdown)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    print()
    print(f"report: {files[0]}")
    for path in files[1:]:
        print(f"{'plot' if path.endswith('.png') else 'table'}: {path}")
    return report


if __name__ == "__main__":
    run_cli(main)
