"""Runs grouped by their whole setting, and retraining runs matched to their ticket's round.

A group holds runs that differ only in the method and replicate axes (the selection rule and
the seed); every other meaning-changing setting a run records (cli.RESUME_CHECKED, as far as
its script has it) is the same across the group. A setting that a run lacks (IMP has no
--threshold; an older args.json has no --data_mode) matches any value, so an IMP run is the
reference of every PrAC setting it fits.
"""
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from reporting.runs import DENSE, RANDOM_MASK_REINIT, Run, Setting

# A retraining run and the round it matches agree on the density to this many percentage
# points (rounds.csv keeps 6 significant digits).
DENSITY_TOLERANCE = 0.01


@dataclass(frozen=True)
class Retrain:
    """A main_train.py run on the ticket of ``source`` at ``round`` (a ticket, reinit or random mask)."""

    run: Run
    source: Run
    round: int


@dataclass
class Group:
    """Runs of one whole setting: search runs, their retraining runs, dense main_train.py runs."""

    setting: Dict[str, Any]         # of the search runs
    runs: List[Run]
    retrains: List[Retrain] = field(default_factory=list)
    retrain_setting: Dict[str, Any] = field(default_factory=dict)
    dense: List[Run] = field(default_factory=list)
    label: str = ""                 # the settings that tell this group from the others ("" when alone)

    @property
    def whole(self) -> Dict[str, Any]:
        """The search setting and the retraining's, the latter as "retrain NAME"."""
        return {**self.setting, **{f"retrain {name}": value for name, value in self.retrain_setting.items()}}

    def setting_text(self) -> str:
        """The whole setting, the retraining's only where it differs from the search's."""
        shown = {**self.setting, **{f"retrain {name}": value for name, value in self.retrain_setting.items()
                                    if self.setting.get(name, value) != value or name not in self.setting}}
        return ", ".join(f"{name} {_shown(value)}" for name, value in sorted(shown.items()))


def compatible(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    """Whether two settings agree on every name both have."""
    return all(a[name] == b[name] for name in a.keys() & b.keys())


def source_run(train: Run, search: Sequence[Run], notes: List[str]) -> Optional[Run]:
    """The search run whose ticket ``train`` retrained: its recorded ticket.source_run, found
    where it is now, else by where each run was when it ran (a sweep folder moved or copied as a
    whole); of several copies, the one nearest the retraining run."""
    recorded = train.ticket.get("source_run")
    if not recorded:
        notes.append(f"{train.path}: its args.json records no ticket source run (made by an older "
                     "main_train.py?); left out")
        return None
    real = os.path.realpath(str(recorded))
    found = ([run for run in search if os.path.realpath(run.path) == real] or
             [run for run in search if run.recorded_path == os.path.normpath(str(recorded))])
    if not found:
        notes.append(f"{train.path}: its ticket comes from {recorded}, which is not among the runs found; left out")
        return None
    return max(found, key=lambda run: len(os.path.commonpath([run.path, train.path])))


def ticket_round(train: Run, source: Run, notes: List[str]) -> Optional[int]:
    """The recorded ticket.source_round; a ticket file that recorded none (a published checkpoint)
    is matched by the density it trained at."""
    density = train.rounds[-1].remaining_weights
    number = train.ticket.get("source_round")
    if number is None:
        rounds = [r.round for r in source.rounds if abs(r.remaining_weights - density) <= DENSITY_TOLERANCE]
        if len(rounds) != 1:
            notes.append(f"{train.path}: its ticket records no round and its {density:.2f}% weights match "
                         f"{len(rounds)} rounds of {source.path}; left out")
            return None
        number = rounds[0]
    trained = source.round_result(int(number))
    if trained is not None and abs(trained.remaining_weights - density) > DENSITY_TOLERANCE:
        notes.append(f"retraining run {train.path} has {density:.2f}% weights but round {number} of "
                     f"{source.path} trained at {trained.remaining_weights:.2f}%")
    return int(number)


def _cliques(settings: Sequence[Dict[str, Any]]) -> List[List[int]]:
    """The largest sets of settings that agree pairwise (Bron-Kerbosch), in order of appearance."""
    found: List[List[int]] = []

    def extend(chosen: List[int], candidates: List[int], excluded: List[int]) -> None:
        if not candidates and not excluded:
            found.append(chosen)
        for node in list(candidates):
            fits = [other for other in candidates if compatible(settings[node], settings[other])]
            extend([*chosen, node], [other for other in fits if other != node],
                   [other for other in excluded if compatible(settings[node], settings[other])])
            candidates.remove(node)
            excluded.append(node)

    extend([], list(range(len(settings))), [])
    return sorted(sorted(clique) for clique in found)


def _merged(settings: Iterable[Setting]) -> Dict[str, Any]:
    return {name: value for setting in settings for name, value in setting}


def group_runs(runs: Sequence[Run], notes: List[str]) -> List[Group]:
    """Groups of one whole setting each; a retraining setting that differs within a search
    setting (say a longer --epochs) splits it too."""
    search = [run for run in runs if run.is_search]
    retrains = []
    for train in (run for run in runs if not run.is_search and run.role != DENSE):
        if train.role == RANDOM_MASK_REINIT:
            notes.append(f"{train.path}: a random mask from a fresh initialisation is not one of the controls "
                         "shown (the ticket's mask from a fresh initialisation, a random mask on its weights); "
                         "left out")
            continue
        source = source_run(train, search, notes)
        number = ticket_round(train, source, notes) if source is not None else None
        if number is not None:
            retrains.append(Retrain(train, source, number))
    nodes = list(dict.fromkeys((run.script, run.setting) for run in search))
    groups: List[Group] = []
    for clique in _cliques([dict(setting) for _, setting in nodes]):
        members = [run for run in search if nodes.index((run.script, run.setting)) in clique]
        attached = [r for r in retrains if any(r.source is run for run in members)]
        retrain_settings = list(dict.fromkeys(r.run.setting for r in attached))
        for retrain_clique in _cliques([dict(setting) for setting in retrain_settings]) or [[]]:
            chosen = [retrain_settings[index] for index in retrain_clique]
            groups.append(Group(setting=_merged(nodes[index][1] for index in clique), runs=members,
                                retrain_setting=_merged(chosen),
                                retrains=[r for r in attached if r.run.setting in chosen]))
    for run in (run for run in runs if not run.is_search and run.role == DENSE):
        # a dense main_train.py run is trained like the group's retraining runs (like its search, without any)
        fits = [group for group in groups if compatible(group.retrain_setting or group.setting, dict(run.setting))]
        if not fits:
            fits = [Group(setting={}, runs=[], retrain_setting=dict(run.setting))]
            groups += fits
        for group in fits:
            group.dense.append(run)
    _label(groups)
    return groups


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _label(groups: Sequence[Group]) -> None:
    """Labels each group by the settings whose values differ between the groups."""
    wholes = [group.whole for group in groups]
    names = sorted({name for whole in wholes for name in whole})
    varying = [name for name in names if len({repr(whole[name]) for whole in wholes if name in whole}) > 1]
    for group, whole in zip(groups, wholes):
        group.label = ", ".join(f"{name} {_shown(whole[name])}" for name in varying if name in whole)
    labels = [group.label for group in groups]
    for number, group in enumerate(groups, start=1):
        if labels.count(group.label) > 1:  # told apart only by settings some runs lack: say which group
            group.label = f"{group.label + '; ' if group.label else ''}group {number}"


def by_round(retrains: Sequence[Retrain], source: Run) -> Dict[Tuple[int, str], List[Run]]:
    """(round, role) -> the retraining runs of ``source``'s tickets."""
    found: Dict[Tuple[int, str], List[Run]] = {}
    for retrain in retrains:
        if retrain.source is source:
            found.setdefault((retrain.round, retrain.run.role), []).append(retrain.run)
    return found
