"""The report: runs found, grouped by whole setting, and per group the aggregate, the verdict
against IMP and the controls; one pipeline, a single run being its n = 1 case."""
import glob
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from reporting import tables
from reporting.grouping import Group, group_runs, source_run
from reporting.plots import write_plots
from reporting.runs import IMP_METHOD, RETRAIN_SCRIPT, Run, load_run, run_folders
from reporting.tables import ControlRow, Replicate, VerdictRow
from utils import UserError

REPORT_MARKDOWN = "report.md"
AGGREGATE_CSV, VERDICT_CSV, RUNS_CSV, CONTROLS_CSV = "aggregate.csv", "verdict.csv", "runs.csv", "controls.csv"


@dataclass
class GroupReport:
    """One group's numbers and sentences."""

    group: Group
    replicates: List[Replicate]
    aggregate: List[Dict[str, Any]]
    verdicts: List[List[VerdictRow]]
    summaries: List[str]            # one line per comparison: accuracy and cost together
    controls: List[ControlRow]
    control_lines: List[str]        # one line per method: ticket − reinit, ticket − random mask
    set_sizes: List[str]


@dataclass
class Report:
    """The whole report: a part per group, notes, the printed markdown and the files written."""

    groups: List[GroupReport]
    notes: List[str]
    markdown: str = ""
    files: List[str] = field(default_factory=list)

    @property
    def runs(self) -> List[Run]:
        return list({id(run): run for part in self.groups for run in [*part.group.runs, *part.group.dense]}.values())

    @property
    def aggregate(self) -> List[Dict[str, Any]]:
        return self.labelled(lambda part: part.aggregate)

    @property
    def verdicts(self) -> List[List[VerdictRow]]:
        return [rows for part in self.groups for rows in part.verdicts]

    @property
    def summaries(self) -> List[str]:
        return [line for part in self.groups for line in part.summaries]

    @property
    def controls(self) -> List[ControlRow]:
        return [row for part in self.groups for row in part.controls]

    @property
    def control_lines(self) -> List[str]:
        return [line for part in self.groups for line in part.control_lines]

    def labelled(self, records: Callable[[GroupReport], Iterable[Dict[str, Any]]]) -> List[Dict[str, Any]]:
        """Each group's ``records``, with its label as their "setting" column."""
        return [{**record, "setting": part.group.label} for part in self.groups for record in records(part)]


def find_runs(folders: Sequence[str], retrain_folders: Sequence[str], names: Optional[Sequence[str]],
              notes: List[str]) -> List[Run]:
    """Every run under the folders; --retrain folders must hold only main_train.py runs."""
    if names and len(names) != len(folders):
        raise UserError(f"--name got {len(names)} labels for {len(folders)} folders; give one per run folder")
    runs: Dict[str, Run] = {}
    for index, folder in enumerate([*folders, *retrain_folders]):
        found = [run for run in (load_run(path, notes) for path in run_folders(folder)) if run is not None]
        if index >= len(folders) and any(run.script != RETRAIN_SCRIPT for run in found):
            raise UserError(f"--retrain {folder} is not a main_train.py run (nor a folder of them); "
                            "pass search runs as DIR")
        if names and index < len(folders):
            if len(found) != 1:
                raise UserError(f"--name labels one run per folder; {folder} holds {len(found)}")
            found[0].label = names[index]
        if index < len(folders) and len(found) == 1 and found[0].is_search:
            found += nearby_retrains(found[0])
        runs.update((os.path.realpath(run.path), run) for run in found)
    if not runs:
        raise UserError(f"no finished run in {', '.join([*folders, *retrain_folders])}")
    return list(runs.values())


def nearby_retrains(run: Run) -> List[Run]:
    """main_train.py runs on ``run``'s tickets up to two levels below its parent folder (such as
    RUN_retrain/1 or tickets/final), found when ``run`` is given alone as a DIR."""
    parent = os.path.dirname(run.path)
    found = []
    for info in sorted(glob.glob(os.path.join(glob.escape(parent), "*", "args.json"))
                       + glob.glob(os.path.join(glob.escape(parent), "*", "*", "args.json"))):
        try:
            train = load_run(os.path.dirname(info), [])
        except UserError:  # not this report's business: it was not asked for
            continue
        if train is not None and not train.is_search and source_run(train, [run], []) is run:
            found.append(train)
    return found


def report_group(group: Group, notes: List[str]) -> GroupReport:
    replicates = tables.replicates_of(group, notes)
    methods = sorted({run.method for run in group.runs}, key=tables.method_order)
    for method in methods:
        seeds = [run.seed for run in group.runs if run.method == method]
        repeated = sorted({seed for seed in seeds if seed is not None and seeds.count(seed) > 1})
        if repeated:
            notes.append(f"{method} has several runs of one setting with seed {', '.join(map(str, repeated))}"
                         f"{f' ({group.label})' if group.label else ''}; their values are averaged per seed")
    verdicts, summaries = [], []
    if group.runs and IMP_METHOD not in methods:
        summaries.append(f"no {IMP_METHOD} runs among the runs ({', '.join(methods)}): no verdict, "
                         f"which compares each method with {IMP_METHOD}")
    elif methods == [IMP_METHOD]:
        summaries.append(f"only {IMP_METHOD} runs: no other method to compare with {IMP_METHOD}")
    elif group.runs:
        for method, reference in tables.comparisons(methods):
            rows = tables.verdict(replicates, method, reference, notes)
            if rows:
                verdicts.append(rows)
                summaries.append(rows[-1].summary())
            else:
                summaries.append(f"{method} vs {reference}: no round both finished with an accuracy to compare")
    control_rows = tables.controls(replicates)
    sparsest = {row.method: row for row in control_rows}  # rows are by round: the last is the sparsest
    set_sizes = [line for line in (tables.set_size_line(replicates, method) for method in methods) if line]
    return GroupReport(group, replicates, tables.aggregate(replicates), verdicts, summaries, control_rows,
                       [row.summary() for row in sparsest.values()], set_sizes)


def build_report(folders: Sequence[str], retrain_folders: Sequence[str] = (),
                 names: Optional[Sequence[str]] = None, notes: Optional[List[str]] = None) -> Report:
    notes = list(notes or [])
    runs = find_runs(folders, retrain_folders, names, notes)
    groups = group_runs(runs, notes)
    if not groups:
        raise UserError("none of the runs found could be reported (see the notes above)" if notes else
                        "no search run (main_imp.py, main_PrAC_imp.py) and no dense main_train.py run found")
    report = Report([report_group(group, notes) for group in groups], notes)
    report.markdown = tables_markdown(report)
    return report


def _run_listing(part: GroupReport) -> List[str]:
    lines = []
    everyone = [*part.group.runs, *part.group.dense]
    for method in sorted({run.method for run in everyone}, key=tables.method_order):
        runs = [run for run in everyone if run.method == method]
        seeds = ", ".join("unseeded" if run.seed is None else str(run.seed) for run in runs)
        labels = ", ".join(run.label for run in runs if run.label)
        plural = "s" if len(runs) != 1 else ""
        lines.append(f"- {method}: {len(runs)} run{plural}, seed{plural} {seeds}" + (f" ({labels})" if labels else ""))
    retrained = Counter(retrain.run.role for retrain in part.group.retrains)
    if retrained:
        lines.append("- main_train.py runs on these tickets: "
                     + ", ".join(f"{role} {n}" for role, n in retrained.items()))
    return lines


def tables_markdown(report: Report) -> str:
    """What is printed: per group the runs by method, the aggregate, the verdict and the controls."""
    parts: List[str] = []
    for part in report.groups:
        tail = f" ({part.group.label})" if part.group.label else ""
        parts += [f"## Runs by method (from each run's args.json){tail}", "", *_run_listing(part), "",
                  f"## Per method and round: mean ± std (n runs){tail}", "",
                  tables.aggregate_markdown(part.aggregate), "",
                  f"## Verdict{tail}", ""]
        parts += [f"- {line}" for line in [*part.summaries, *part.set_sizes]]
        for rows in part.verdicts:
            parts += ["", tables.verdict_markdown(rows)]
        if part.controls:
            parts += ["", f"## Controls: ticket vs reinit vs random mask{tail}", "",
                      *[f"- {line}" for line in part.control_lines], "", tables.controls_markdown(part.controls)]
        parts.append("")
    return "\n".join(parts).rstrip()


INTRODUCTION = (
    "Runs are read from their args.json alone: main_imp.py is imp, main_PrAC_imp.py is its --select rule, "
    "main_train.py is a retrained ticket, its reinit or random-mask control (by its ticket record), or a dense "
    "run; the seed is --seed. Runs are grouped by their whole setting (every meaning-changing setting they "
    "record) and only runs of one setting are compared or averaged. A round-k row holds what round k trained, "
    "at the density it trained at; the retrained-ticket accuracy is main_train.py on that round's ticket (the "
    "last round: the final ticket), matched through the ticket's recorded source run and round, test accuracy "
    "at its best validation epoch; the search accuracy is the round's own test accuracy at its best validation "
    "epoch. Cumulative steps count the search's SGD iterations through the round (retraining is not counted). "
    "Accuracies in %; ± is one sample standard deviation over runs, (n) the number of runs with a value.\n\n"
    "The verdict: per round, mean(method − reference) of the accuracy, paired by seed when the two methods "
    "share seeds (else the difference of means with Welch's degrees of freedom), with a two-sided 95% "
    "Student-t interval; with one seed the interval is unknown. The cost is the method's cumulative training "
    "steps through the same round in % of the reference's (same seed), mean ± std over seeds. The controls "
    "compare a ticket with the same mask from a fresh initialisation (reinit) and with a random mask of the "
    "same per-layer counts, paired by seed in the same way.")


def write_report(report: Report, out_dir: str) -> List[str]:
    """Writes report.md, the four tables and each group's three plots into ``out_dir``."""
    files = [os.path.join(out_dir, name) for name in (AGGREGATE_CSV, VERDICT_CSV, RUNS_CSV, CONTROLS_CSV)]
    tables.write_csv(files[0], tables.AGGREGATE_COLUMNS, report.aggregate)
    tables.write_csv(files[1], tables.VERDICT_COLUMNS,
                     report.labelled(lambda p: [tables.verdict_record(r) for rs in p.verdicts for r in rs]))
    tables.write_csv(files[2], tables.RUNS_COLUMNS,
                     report.labelled(lambda p: [tables.replicate_record(r) for r in p.replicates]))
    tables.write_csv(files[3], tables.CONTROLS_COLUMNS,
                     report.labelled(lambda p: [tables.control_record(r) for r in p.controls]))
    several = len(report.groups) > 1
    plots: List[str] = []
    for index, part in enumerate(report.groups, start=1):
        plots += write_plots(part.aggregate, out_dir, f"-{index}" if several else "", part.group.label)
    settings = [f"- {part.group.label or 'setting'}: {part.group.setting_text()}" for part in report.groups]
    text = ["# Lottery-ticket report", "", INTRODUCTION, "", "## Settings", "", *settings, "",
            report.markdown, "", "## Plots", "",
            "Error bars and bands are ± one sample standard deviation over seeds (none where a method has "
            "one run), not confidence intervals.", ""]
    text += [f"![{os.path.splitext(os.path.basename(p))[0]}]({os.path.basename(p)})\n" for p in plots]
    if report.notes:
        text += ["## Notes", "", *[f"- {note}" for note in report.notes]]
    markdown_path = os.path.join(out_dir, REPORT_MARKDOWN)
    with open(markdown_path, "w") as handle:
        handle.write("\n".join(text).rstrip() + "\n")
    return [markdown_path, *files, *plots]
