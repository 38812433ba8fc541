"""A group's numbers: one row per run and round, mean ± std per method and round, the verdict
against IMP and the controls of each ticket; their markdown and CSV forms."""
import csv
from dataclasses import asdict, dataclass, fields
from statistics import mean
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from reporting.grouping import DENSITY_TOLERANCE, Group, by_round
from reporting.runs import IMP_METHOD, RANDOM_MASK, REINIT, TICKET, Run
from reporting.stats import Difference, SeedKey, Stat, cost_ratio, describe, difference, signed

PRAC_METHOD, RANDOM_METHOD = "prac", "random"
METRIC_TITLES = {"retrained": "retrained-ticket test accuracy", "search": "search test accuracy"}
Cell = Optional[float]


@dataclass(frozen=True)
class Replicate:
    """One run's values at one round (one sparsity); its fields are runs.csv's columns, in order."""

    method: str
    seed: SeedKey
    run: str                        # the run folder
    round: int
    remaining_weights: float
    train_examples: Cell
    forgetting_part: Cell
    pruning_aware_part: Cell
    cumulative_steps: Cell          # through this round (the final ticket: through the last round)
    search_acc: Cell
    retrained_acc: Cell             # main_train.py on this round's ticket
    reinit_acc: Cell                # ... on its mask from a fresh initialisation
    random_mask_acc: Cell           # ... on a random mask of its per-layer counts
    search_train_acc: Cell          # the round's final training accuracy (its last epoch)
    retrained_train_acc: Cell       # ... the retrained ticket's
    reinit_train_acc: Cell          # ... the reinit control's
    random_mask_train_acc: Cell     # ... the random-mask control's
    epochs_run: Cell
    epochs_planned: Cell
    steps: Cell
    best_val_acc: Cell

    def metric(self, name: str) -> Cell:
        return self.retrained_acc if name == "retrained" else self.search_acc


def _mean_of_last_rounds(runs: Sequence[Run], name: str) -> Cell:
    values = [getattr(run.rounds[-1], name) for run in runs if getattr(run.rounds[-1], name) is not None]
    return mean(values) if values else None


# What a Replicate copies from its search round; None for a round known only from a retraining
# (getattr(None, name, None) is None).
FROM_SEARCH_ROUND = ("train_examples", "forgetting_part", "pruning_aware_part", "epochs_run", "epochs_planned",
                     "steps", "best_val_acc")


def replicates_of(group: Group, notes: List[str]) -> List[Replicate]:
    """Every search run's rounds (plus rounds known only from a retraining, e.g. the final
    ticket), with the retrained ticket and its controls; dense main_train.py runs as round 0."""
    found = []
    for run in [*group.runs, *group.dense]:
        trains = by_round(group.retrains, run)
        key: SeedKey = run.seed if run.seed is not None else run.path
        for number in sorted({r.round for r in run.rounds} | {number for number, _ in trains}):
            trained = run.round_result(number)
            retrained_accs: Dict[str, Cell] = {}
            for role, column in ((TICKET, "retrained"), (REINIT, "reinit"), (RANDOM_MASK, "random_mask")):
                same = trains.get((number, role), [])
                if len(same) > 1:
                    notes.append(f"round {number} of {run.path} has {len(same)} {role} retraining runs "
                                 f"({', '.join(r.path for r in same)}); their test accuracies are averaged")
                retrained_accs[f"{column}_acc"] = _mean_of_last_rounds(same, "test_acc_at_best_val")
                retrained_accs[f"{column}_train_acc"] = _mean_of_last_rounds(same, "final_train_acc")
            retrained = [train for (n, _), runs in trains.items() if n == number for train in runs]
            density = trained.remaining_weights if trained else retrained[0].rounds[-1].remaining_weights
            through = [r for r in run.rounds if r.round <= number]
            found.append(Replicate(
                method=run.method, seed=key, run=run.path, round=number, remaining_weights=density,
                cumulative_steps=float(through[-1].cumulative_steps) if through else None,
                search_acc=getattr(trained, "test_acc_at_best_val", None),
                search_train_acc=getattr(trained, "final_train_acc", None),
                **{name: getattr(trained, name, None) for name in FROM_SEARCH_ROUND}, **retrained_accs))
    return found


def method_order(method: str) -> Tuple[int, str]:
    """IMP first, then PrAC, then random, then the other rules by name, dense runs last."""
    rank = 0 if method == IMP_METHOD else 1 if method == PRAC_METHOD else 2 if method.startswith(RANDOM_METHOD) else (
        4 if method.startswith("dense") else 3)
    return rank, method


def _cells(replicates: Sequence[Replicate], keep: Callable[[Replicate], bool] = lambda r: True
           ) -> List[Tuple[str, int, List[Replicate]]]:
    """(method, round, its replicates) per method and round that a replicate passing ``keep`` has, in order."""
    keys = sorted({(r.method, r.round) for r in replicates if keep(r)}, key=lambda k: (method_order(k[0]), k[1]))
    return [(method, number, [r for r in replicates if r.method == method and r.round == number])
            for method, number in keys]


AGGREGATE_FIELDS = ("retrained_acc", "search_acc", "cumulative_steps", "train_examples",
                    "forgetting_part", "pruning_aware_part", "search_train_acc", "retrained_train_acc")


def aggregate(replicates: Sequence[Replicate]) -> List[Dict[str, Any]]:
    """One row per method and round: n runs, mean remaining weights, and n / mean / std of
    each of :data:`AGGREGATE_FIELDS` over the runs that have it."""
    rows = []
    for method, number, cell in _cells(replicates):
        row: Dict[str, Any] = {"method": method, "round": number, "runs": len(cell),
                               "remaining_weights": mean(r.remaining_weights for r in cell)}
        for name in AGGREGATE_FIELDS:
            stat = describe([getattr(r, name) for r in cell if getattr(r, name) is not None])
            row.update({f"{name}_n": stat.n, f"{name}_mean": stat.mean, f"{name}_std": stat.std})
        rows.append(row)
    return rows


def by_seed(replicates: Sequence[Replicate], value: Callable[[Replicate], Cell]) -> Dict[SeedKey, float]:
    """Seed → value (the mean where runs of one setting repeat a seed), for the replicates that have one."""
    grouped: Dict[SeedKey, List[float]] = {}
    for replicate in replicates:
        if value(replicate) is not None:
            grouped.setdefault(replicate.seed, []).append(float(value(replicate)))
    return {key: mean(values) for key, values in grouped.items()}


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
        if self.cost.mean is None:
            cost = f"for an unknown share of {self.reference}'s training steps (none recorded)"
        else:
            spread = f" ± {self.cost.std:.0f}%" if self.cost.std is not None else ""
            cost = f"for {self.cost.mean:.0f}%{spread} of {self.reference}'s training steps"
        return (f"{self.method} vs {self.reference} at {self.remaining_weights:.1f}% weights (round {self.round}): "
                f"{self.difference.sentence(METRIC_TITLES[self.metric])} {cost}")


def comparisons(methods: Sequence[str]) -> List[Tuple[str, str]]:
    """Every other search method against IMP, and random against PrAC (does it matter *which*
    examples a round trains on?)."""
    pairs = [(method, IMP_METHOD) for method in methods if method != IMP_METHOD]
    if PRAC_METHOD in methods:
        pairs += [(method, PRAC_METHOD) for method in methods if method.startswith(RANDOM_METHOD)]
    return pairs


def verdict(replicates: Sequence[Replicate], method: str, reference: str, notes: List[str]) -> List[VerdictRow]:
    """Per round both methods reached: the accuracy difference and the cost ratio. Retrained-
    ticket accuracy when both methods have some, else the search rounds' test accuracy."""
    mine = [r for r in replicates if r.method == method]
    theirs = [r for r in replicates if r.method == reference]
    metric = ("retrained" if {r.round for r in mine if r.retrained_acc is not None} &
              {r.round for r in theirs if r.retrained_acc is not None} else "search")
    rows = []
    for number in sorted({r.round for r in mine} & {r.round for r in theirs}):
        a, b = [r for r in mine if r.round == number], [r for r in theirs if r.round == number]
        acc_a, acc_b = by_seed(a, lambda r: r.metric(metric)), by_seed(b, lambda r: r.metric(metric))
        if not acc_a or not acc_b:
            continue
        density_a, density_b = mean(r.remaining_weights for r in a), mean(r.remaining_weights for r in b)
        if abs(density_a - density_b) > DENSITY_TOLERANCE:
            notes.append(f"round {number}: {method} trained at {density_a:.2f}% weights, {reference} at "
                         f"{density_b:.2f}%; not compared")
            continue
        rows.append(VerdictRow(method, reference, number, density_a, metric, difference(acc_a, acc_b),
                               cost_ratio(by_seed(a, lambda r: r.cumulative_steps),
                                          by_seed(b, lambda r: r.cumulative_steps))))
    return rows


@dataclass(frozen=True)
class ControlRow:
    """A method's ticket at one round against its controls: the same mask from a fresh
    initialisation (reinit) and a random mask of its per-layer counts."""

    method: str
    round: int
    remaining_weights: float
    ticket: Stat
    reinit: Stat
    random_mask: Stat
    vs_reinit: Optional[Difference]         # ticket − reinit
    vs_random_mask: Optional[Difference]    # ticket − random mask

    def summary(self) -> str:
        def versus(name: str, d: Optional[Difference]) -> str:
            return f"ticket − {name} = " + (d.sentence("") if d else f"unknown (no {name} runs beside tickets)")
        return (f"{self.method}: a winning ticket at {self.remaining_weights:.1f}% weights (round {self.round})? "
                f"{versus('reinit', self.vs_reinit)}, {versus('random mask', self.vs_random_mask)}")


def controls(replicates: Sequence[Replicate]) -> List[ControlRow]:
    """Every method and round that has a control run."""
    rows = []
    for method, number, cell in _cells(replicates, lambda r: r.reinit_acc is not None or r.random_mask_acc is not None):
        ticket = by_seed(cell, lambda r: r.retrained_acc)
        reinit, random_mask = by_seed(cell, lambda r: r.reinit_acc), by_seed(cell, lambda r: r.random_mask_acc)
        rows.append(ControlRow(method, number, mean(r.remaining_weights for r in cell),
                               describe(list(ticket.values())), describe(list(reinit.values())),
                               describe(list(random_mask.values())),
                               difference(ticket, reinit) if ticket and reinit else None,
                               difference(ticket, random_mask) if ticket and random_mask else None))
    return rows


def set_size_line(replicates: Sequence[Replicate], method: str) -> Optional[str]:
    """The range of a method's later rounds' mean training-set sizes against round 0's."""
    sizes = {number: mean(values) for name, number, cell in _cells(replicates) if name == method
             if (values := [r.train_examples for r in cell if r.train_examples])}
    full, later = sizes.get(0), [size for number, size in sizes.items() if number > 0]
    if not full or not later or all(size == full for size in later):
        return None
    return (f"{method}: training sets of {100 * min(later) / full:.1f}%–{100 * max(later) / full:.1f}% of round 0's "
            f"{full:,.0f} examples (rounds 1–{max(sizes)}, mean over runs)")


# ---------------------------------------------------------------------------- markdown and CSV
def aggregate_markdown(rows: Sequence[Dict[str, Any]]) -> str:
    lines = ["| method | round | remaining weights (%) | runs | retrained-ticket test acc (%) | "
             "search test acc (%) | cumulative steps | training examples | final train acc: search, retrained (%) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    def stat(row: Dict[str, Any], name: str, decimals: int = 2, show_n: bool = True) -> str:
        return Stat(row[f"{name}_n"], row[f"{name}_mean"], row[f"{name}_std"]).text(decimals, show_n)
    for row in rows:
        cells = [row["method"], str(row["round"]), f"{row['remaining_weights']:.2f}", str(row["runs"]),
                 stat(row, "retrained_acc"), stat(row, "search_acc"), stat(row, "cumulative_steps", 0, False),
                 stat(row, "train_examples", 0, False),
                 " / ".join(stat(row, name, 1, False) or "–" for name in ("search_train_acc", "retrained_train_acc"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _interval(d: Optional[Difference]) -> str:
    if d is None:
        return ""
    return signed(d.mean) + ("" if d.low is None or d.high is None else f" ({signed(d.low)} to {signed(d.high)})")


def verdict_markdown(rows: Sequence[VerdictRow]) -> str:
    first = rows[0]
    lines = [f"### {first.method} − {first.reference}: {METRIC_TITLES[first.metric]} (points), and "
             f"{first.method}'s training steps in % of {first.reference}'s", "",
             f"| round | remaining weights (%) | difference (points) | 95% CI | n | steps (% of {first.reference}) |",
             "|---:|---:|---:|---|---|---:|"]
    for row in rows:
        d = row.difference
        interval = "unknown" if d.low is None or d.high is None else f"{signed(d.low)} to {signed(d.high)}"
        lines.append(f"| {row.round} | {row.remaining_weights:.2f} | {signed(d.mean)} | {interval} | "
                     f"{d.n_text()} | {row.cost.text(0, show_n=False)} |")
    return "\n".join(lines)


def controls_markdown(rows: Sequence[ControlRow]) -> str:
    lines = ["| method | round | remaining weights (%) | ticket (%) | reinit (%) | random mask (%) | "
             "ticket − reinit (95% CI) | ticket − random mask (95% CI) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.method} | {r.round} | {r.remaining_weights:.2f} | {r.ticket.text()} | {r.reinit.text()} | "
              f"{r.random_mask.text()} | {_interval(r.vs_reinit)} | {_interval(r.vs_random_mask)} |" for r in rows]
    return "\n".join(lines)


AGGREGATE_COLUMNS = (["method", "round", "remaining_weights", "runs"]
                     + [f"{name}_{part}" for name in AGGREGATE_FIELDS for part in ("n", "mean", "std")] + ["setting"])
VERDICT_COLUMNS = ["method", "reference", "round", "remaining_weights", "metric", "paired", "n", "n_reference",
                   "difference_mean", "ci95_low", "ci95_high", "steps_percent_mean", "steps_percent_std",
                   "steps_percent_n", "setting"]
RUNS_COLUMNS = [field.name for field in fields(Replicate)] + ["setting"]
CONTROLS_COLUMNS = (["method", "round", "remaining_weights"]
                    + [f"{arm}_{part}" for arm in ("ticket", "reinit", "random_mask") for part in ("n", "mean", "std")]
                    + [f"{versus}_{part}" for versus in ("ticket_minus_reinit", "ticket_minus_random_mask")
                       for part in ("mean", "ci95_low", "ci95_high", "n", "paired")] + ["setting"])


def verdict_record(row: VerdictRow) -> Dict[str, Any]:
    d = row.difference
    return {"method": row.method, "reference": row.reference, "round": row.round,
            "remaining_weights": row.remaining_weights, "metric": row.metric, "paired": d.paired, "n": d.n,
            "n_reference": d.n_reference, "difference_mean": d.mean, "ci95_low": d.low, "ci95_high": d.high,
            "steps_percent_mean": row.cost.mean, "steps_percent_std": row.cost.std, "steps_percent_n": row.cost.n}


def control_record(row: ControlRow) -> Dict[str, Any]:
    record: Dict[str, Any] = {"method": row.method, "round": row.round, "remaining_weights": row.remaining_weights}
    for arm, stat in (("ticket", row.ticket), ("reinit", row.reinit), ("random_mask", row.random_mask)):
        record.update({f"{arm}_n": stat.n, f"{arm}_mean": stat.mean, f"{arm}_std": stat.std})
    for versus, d in (("ticket_minus_reinit", row.vs_reinit), ("ticket_minus_random_mask", row.vs_random_mask)):
        if d is not None:
            record.update({f"{versus}_mean": d.mean, f"{versus}_ci95_low": d.low, f"{versus}_ci95_high": d.high,
                           f"{versus}_n": d.n, f"{versus}_paired": d.paired})
    return record


def replicate_record(replicate: Replicate) -> Dict[str, Any]:
    return {**asdict(replicate), "seed": None if isinstance(replicate.seed, str) else replicate.seed}


def write_csv(path: str, columns: Sequence[str], rows: Sequence[Dict[str, Any]]) -> None:
    """Writes ``rows`` under the column names; None is an empty cell, floats keep full precision."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([["" if row.get(name) is None else row[name] for name in columns] for row in rows])
