"""Run folders as they recorded themselves: args.json (script, arguments, ticket) and rounds.csv.

Nothing is inferred from folder names or layouts: a run is any folder with an args.json.
"""
import csv
import functools
import json
import os
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, List, Optional, Tuple

import cli
from paths import RunPaths
from outputs import EPOCH_FIELDS, ROUND_FIELDS, ResultTable
from utils import UserError

IMP_SCRIPT, SEARCH_SCRIPT, RETRAIN_SCRIPT = cli.IMP, cli.SEARCH, cli.RETRAIN
IMP_METHOD = "imp"
# The method axis: a main_PrAC_imp.py run's --select rule (and --match_sizes, which names the PrAC
# run of the same seed whose set sizes random copies) is its method, not part of its setting; the
# control axis: a main_train.py run's --random_mask says which control of a ticket it is.
AXES = ("select", "match_sizes", "random_mask")
SIZE_MATCHED = " (size-matched)"
# What a main_train.py run is, read from its ticket record.
TICKET, REINIT, RANDOM_MASK, DENSE = "ticket", "reinit", "random mask", "dense"
RANDOM_MASK_REINIT = "random mask, reinit"  # not one of the controls the report shows
# What a run recorded before a setting existed ran with (cli's flags marked new); any other
# missing setting matches any value.
OLD_DEFAULTS: Dict[str, Any] = cli.RESUME_DEFAULTS

# A search run's method, from what it recorded: imp, or main_PrAC_imp.py's --select rule.
SEARCH_METHOD = {
    IMP_SCRIPT: lambda arguments: IMP_METHOD,
    SEARCH_SCRIPT: lambda arguments: str(arguments.get("select")) + (SIZE_MATCHED if arguments.get("match_sizes")
                                                                     else ""),
}

Setting = Tuple[Tuple[str, Any], ...]  # (name, value) pairs, sorted by name; hashable


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
    steps: int
    cumulative_steps: int
    best_val_acc: float
    test_acc_at_best_val: float
    final_train_acc: Optional[float] = None  # the round's last epoch in epochs.csv (augmented batches)


@functools.lru_cache(maxsize=None)
def setting_names(script: str) -> Tuple[str, ...]:
    """The meaning-changing settings (cli.FLAGS) that ``script`` has, less the method and control axes."""
    return tuple(flag.name for flag in cli.FLAGS if flag.meaning and script in flag.scripts and flag.name not in AXES)


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@dataclass
class Run:
    """A finished run folder: its args.json and its rounds."""

    path: str                       # absolute
    info: Dict[str, Any]
    rounds: List[RoundResult]
    label: str = ""                 # --name, when given

    @property
    def script(self) -> str:
        return os.path.basename(str(self.info.get("script") or ""))

    @property
    def arguments(self) -> Dict[str, Any]:
        arguments = self.info.get("arguments")
        return arguments if isinstance(arguments, dict) else {}

    @property
    def ticket(self) -> Dict[str, Any]:
        ticket = self.info.get("ticket")
        return ticket if isinstance(ticket, dict) else {}

    @property
    def seed(self) -> Optional[int]:
        seed = self.arguments.get("seed")
        return int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else None

    @property
    def is_search(self) -> bool:
        return self.script in SEARCH_METHOD

    @property
    def role(self) -> str:
        """A search run's "search"; a main_train.py run's: ticket, reinit, random mask or dense."""
        if self.is_search:
            return "search"
        if self.ticket.get("random_mask"):
            return RANDOM_MASK_REINIT if self.ticket.get("reinit") else RANDOM_MASK
        if self.ticket.get("reinit"):
            return REINIT
        return TICKET if self.ticket.get("mask_dir") or self.arguments.get("mask_dir") else DENSE

    @property
    def method(self) -> str:
        """imp, the --select rule of main_PrAC_imp.py, or what a main_train.py run trained."""
        if self.is_search:
            return SEARCH_METHOD[self.script](self.arguments)
        if self.role == DENSE:
            return f"{DENSE} (given weights)" if self.arguments.get("init_dir") else DENSE
        return self.role

    @property
    def setting(self) -> Setting:
        """The run's meaning-changing settings that its args.json records (or cli says it ran with)."""
        recorded = {**OLD_DEFAULTS, **self.arguments}
        return tuple(sorted((name, _hashable(recorded[name])) for name in setting_names(self.script)
                            if name in recorded))

    @property
    def recorded_path(self) -> str:
        """Where the run was when it ran (its --save_dir from its working folder)."""
        save_dir = str(self.arguments.get("save_dir") or "")
        return os.path.normpath(os.path.join(str(self.info.get("cwd") or ""), save_dir))

    def round_result(self, number: int) -> Optional[RoundResult]:
        return next((r for r in self.rounds if r.round == number), None)


# How a rounds.csv cell is read, by the type of its RoundResult field (an empty optional cell is None).
_READ: Dict[Any, Callable[[str], Any]] = {int: int, float: float,
                                          Optional[int]: lambda text: int(float(text)) if text.strip() else None}


def final_train_accuracies(run_dir: str) -> Dict[int, float]:
    """Round → training accuracy of its last epoch in ``run_dir/epochs.csv`` (the running accuracy
    over that epoch's augmented batches); empty when the run has no epochs table."""
    table = ResultTable(RunPaths(run_dir).epochs_csv, EPOCH_FIELDS)
    try:
        # rows are in epoch order, each once (ResultTable): a round's last row is its final epoch
        return {int(row["round"]): float(row["train_acc"]) for row in table.rows() if row.get("train_acc")}
    except (TypeError, ValueError) as error:
        raise UserError(f"{table.path} has a bad value ({error})") from None


def read_rounds(run_dir: str) -> List[RoundResult]:
    """Parses ``run_dir/rounds.csv`` (with each round's final training accuracy from epochs.csv);
    a malformed table is a UserError; a repeated round keeps its last row."""
    path = RunPaths(run_dir).rounds_csv
    train_acc = final_train_accuracies(run_dir)
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in ROUND_FIELDS if name not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{path} is not a rounds table (missing columns: {', '.join(missing)})")
        rows = list(reader)
    by_round: Dict[int, RoundResult] = {}
    for line, row in enumerate(rows, start=2):
        try:
            cells = {field.name: _READ[field.type](row[field.name]) for field in fields(RoundResult)
                     if field.name in ROUND_FIELDS}
        except (TypeError, ValueError) as error:
            raise UserError(f"{path} line {line} has a bad value ({error})") from None
        by_round[cells["round"]] = RoundResult(**cells, final_train_acc=train_acc.get(cells["round"]))
    return [by_round[number] for number in sorted(by_round)]


def run_folders(folder: str) -> List[str]:
    """Every folder with an args.json at any depth under ``folder`` (itself included)."""
    if not os.path.isdir(folder):
        raise UserError(f"{folder} is not a folder")
    found = [path for path, _, files in os.walk(folder) if os.path.basename(RunPaths(path).run_info) in files]
    if not found:
        raise UserError(f"{folder} holds no run: no args.json in it or in any folder below it")
    return sorted(os.path.abspath(path) for path in found)


def load_run(folder: str, notes: List[str]) -> Optional[Run]:
    """The run in ``folder``, or None (with a note) when it has no finished round or names no script."""
    info_path = RunPaths(folder).run_info
    try:
        with open(info_path) as handle:
            info = json.load(handle)
    except (OSError, ValueError) as error:
        raise UserError(f"{info_path} is not readable JSON ({error})") from None
    run = Run(path=os.path.abspath(folder), info=info if isinstance(info, dict) else {}, rounds=[])
    if run.script not in cli.ALL_SCRIPTS:
        notes.append(f"{folder}: its args.json names no script of this project; left out")
        return None
    run.rounds = read_rounds(folder) if os.path.isfile(RunPaths(folder).rounds_csv) else []
    if not run.rounds:
        notes.append(f"{folder} has no finished round yet; left out")
        return None
    return run
