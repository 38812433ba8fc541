"""Pruning-Aware Critical (PrAC) example selection (Zhang et al., ICML 2021), the per-example
statistics it is computed from, and the baselines that test it.

Statistics are recorded during training through a batch hook: ``(dataset indices, logits,
targets)`` per step, one vectorised write each, no host sync. After a round, a selection
rule turns them into the dataset indices the next round trains on. A new rule is one class
with a ``select`` method plus one line in :data:`SELECTION_RULES`.

All functions work on whole arrays; none loops over examples in Python.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Type

import numpy as np
import torch
import torch.nn.functional as F

import distributed
from training import BatchHook

# The published scripts count an example that was never learned as this many forgetting
# events, so that it is always kept; any count larger than a real one would do.
NEVER_LEARNED = 200000
UNTRAINED = -1


# ============================================================================ forgetting events
def forgetting_events(records: np.ndarray) -> np.ndarray:
    """Forgetting events per example from an examples x epochs record matrix.

    Args:
        records: values -1 (not trained that round), 0 (predicted wrong) or 1 (right), one
            row per dataset example, one column per epoch.

    Returns:
        int64 per example: -1 if its row is untrained, ``NEVER_LEARNED`` if it was never
        predicted right, else the number of right -> wrong transitions between consecutive
        epochs (an example is learned the first time it is right; each later right -> wrong
        step is one forgetting event, as in the published ``forget_times``).
    """
    records = np.asarray(records)
    if records.ndim != 2:
        raise ValueError(f"records must be examples x epochs, got shape {records.shape}")
    if records.shape[1] == 0:
        return np.full(records.shape[0], UNTRAINED, dtype=np.int64)
    events = ((records[:, :-1] == 1) & (records[:, 1:] == 0)).sum(axis=1).astype(np.int64)
    events[~(records == 1).any(axis=1)] = NEVER_LEARNED
    events[records[:, 0] < 0] = UNTRAINED
    return events


def select_by_forgetting(events: np.ndarray, data_prune: str, data_rate: float, state: int,
                         threshold: int, train_number: int) -> np.ndarray:
    """Dataset indices of the forgetting part of the PrAC set built after round ``state``.

    Args:
        events: output of :func:`forgetting_events`, one entry per dataset example.
        data_prune: ``zero_out`` keeps examples with more than ``threshold`` events;
            ``constent`` keeps the ``int(train_number * (1 - data_rate) ** (state + 1))``
            examples with the most events.
        state: the round that has just been trained (0 for the dense round).

    Only trained examples (events >= 0) are ever selected, so validation examples never
    enter training. Unlike the published code, an empty selection stays empty (the
    published ``argsort(...)[-0:]`` returns every row). Ties at the ``constent`` cut fall
    exactly as in the published ``np.argsort(events)[-k:]`` over all rows (numpy's default
    sort): on a class-ordered data set a stable sort would keep whole tie groups of the last
    classes.
    """
    events = np.asarray(events)
    trained = np.flatnonzero(events >= 0)
    if data_prune == "zero_out":
        return np.sort(trained[events[trained] > threshold])
    if data_prune == "constent":
        keep = min(int(train_number * (1 - data_rate) ** (state + 1)), trained.size)
        if keep <= 0:
            return np.empty(0, dtype=np.int64)
        # Untrained rows hold -1, below every trained count, so the last ``keep`` of the
        # published order are trained rows whenever keep <= trained.size.
        return np.sort(np.argsort(events)[-keep:]).astype(np.int64)
    raise ValueError(f"unknown data_prune {data_prune!r} (zero_out | constent)")


def pruning_aware_examples(dense_predictions: np.ndarray, pruned_predictions: np.ndarray) -> np.ndarray:
    """Positions at which the dense and the pruned model predict different labels."""
    dense, pruned = np.asarray(dense_predictions), np.asarray(pruned_predictions)
    if dense.shape != pruned.shape:
        raise ValueError(f"prediction shapes differ: {dense.shape} vs {pruned.shape}")
    return np.flatnonzero(dense != pruned)


def el2n_scores(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """EL2N (Paul et al. 2021): the L2 norm of softmax(logits) minus the one-hot target."""
    probabilities = F.softmax(logits.float(), dim=1)
    return (probabilities - F.one_hot(targets, probabilities.shape[1]).float()).norm(dim=1)


# ============================================================================ recorders
class CorrectnessRecorder:
    """Per example and epoch: 1 if that step's own forward pass predicted it right, 0 if
    wrong, -1 if not trained (epochs x examples, int8, on the training device)."""

    def __init__(self, epochs: int, examples: int, device: torch.device):
        self.values = torch.full((epochs, examples), UNTRAINED, dtype=torch.int8, device=device)

    def record(self, epoch: int, indices: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        self.values[epoch, indices] = (logits.argmax(dim=1) == targets).to(torch.int8)

    def events(self, epochs_run: int) -> np.ndarray:
        return forgetting_events(self.values[:epochs_run].t().cpu().numpy())


class EL2NRecorder:
    """Sum of each example's EL2N score over the round's first ``score_epochs`` epochs."""

    def __init__(self, score_epochs: int, examples: int, device: torch.device):
        self.score_epochs = score_epochs
        self.sums = torch.zeros(examples, dtype=torch.float32, device=device)

    def record(self, epoch: int, indices: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        if epoch < self.score_epochs:
            self.sums[indices] += el2n_scores(logits.detach(), targets)

    def scores(self, epochs_run: int) -> np.ndarray:
        """Mean EL2N over the epochs scored so far (0 for examples never trained)."""
        return (self.sums / max(1, min(epochs_run, self.score_epochs))).cpu().numpy()


@dataclass
class RoundStatistics:
    """The per-example statistics of one round; what a selection rule reads."""

    correctness: CorrectnessRecorder
    el2n: Optional[EL2NRecorder] = None
    _el2n_before: Optional[torch.Tensor] = field(default=None, repr=False)  # distributed: see gather()

    @classmethod
    def empty(cls, epochs: int, examples: int, device: torch.device,
              score_epochs: Optional[int] = None) -> "RoundStatistics":
        """``score_epochs`` given: EL2N is recorded too (over ``min(score_epochs, epochs)``)."""
        el2n = None if score_epochs is None else EL2NRecorder(min(score_epochs, epochs), examples, device)
        return cls(CorrectnessRecorder(epochs, examples, device), el2n)

    def batch_hook(self, epoch: int) -> BatchHook:
        recorders = [r for r in (self.correctness, self.el2n) if r is not None]
        if self.el2n is not None and distributed.world() > 1:
            self._el2n_before = self.el2n.sums.clone()  # what gather() adds the ranks' parts to

        def hook(indices: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
            for recorder in recorders:
                recorder.record(epoch, indices, logits, targets)
        return hook

    def gather(self, epoch: int) -> None:
        """Under torchrun, after ``epoch``: each rank recorded only the examples it trained;
        afterwards every rank holds all of them (the same bits on every rank)."""
        row = self.correctness.values[epoch].to(torch.int32)
        # Each example was trained by exactly one rank; the others hold UNTRAINED (-1),
        # below 0 and 1, so the maximum is the one rank's record.
        self.correctness.values[epoch] = distributed.all_reduce(row, "max").to(torch.int8)
        if self.el2n is not None and epoch < self.el2n.score_epochs:
            before = self._el2n_before
            self.el2n.sums.copy_(before + distributed.all_reduce(self.el2n.sums - before))


# ============================================================================ selection rules
@dataclass(frozen=True)
class SelectionSettings:
    """The flags a rule may read (--data_prune, --threshold, --data_rate, --score_epochs)."""

    data_prune: str = "zero_out"
    threshold: int = 0
    data_rate: float = 0.2
    score_epochs: int = 10


@dataclass
class SelectionInput:
    """What a rule sees after round ``round``.

    ``pruning_aware`` computes the pruning-aware part on demand (two prediction passes
    over the training split), as dataset indices; it is empty after the dense round.
    """

    round: int
    epochs_run: int
    statistics: RoundStatistics
    train_indices: np.ndarray          # the training split, in split-file order
    pruning_aware: Callable[[], np.ndarray]
    generator: np.random.Generator      # seeded per (run, round), for random rules
    target_size: Optional[int] = None   # random: draw exactly this many (--match_sizes), else the PrAC size


@dataclass
class Selection:
    indices: np.ndarray                         # sorted dataset indices, no duplicates
    parts: Dict[str, int] = field(default_factory=dict)


class SelectionRule:
    """Base of the rules: statistics in, dataset indices and their parts out.

    Every rule can build the PrAC set the paper's rule would have built this round, so the
    baselines can match its size.
    """

    uses_el2n = False  # True: the round must record EL2N scores

    def __init__(self, settings: SelectionSettings):
        self.settings = settings

    def forgetting_part(self, inputs: SelectionInput) -> np.ndarray:
        s = self.settings
        events = inputs.statistics.correctness.events(inputs.epochs_run)
        return select_by_forgetting(events, s.data_prune, s.data_rate, inputs.round, s.threshold,
                                    len(inputs.train_indices))

    def prac_set(self, inputs: SelectionInput) -> Selection:
        forgetting = self.forgetting_part(inputs)
        aware = np.asarray(inputs.pruning_aware(), dtype=np.int64)
        return Selection(np.union1d(forgetting, aware).astype(np.int64),
                         {"forgetting_part": int(forgetting.size), "pruning_aware_part": int(aware.size)})

    def select(self, inputs: SelectionInput) -> Selection:
        raise NotImplementedError


class PracSet(SelectionRule):
    """The paper's PrAC set: the forgetting part united with the pruning-aware part."""

    def select(self, inputs: SelectionInput) -> Selection:
        return self.prac_set(inputs)


class ForgettingPart(SelectionRule):
    """Ablation: the forgetting part alone."""

    def select(self, inputs: SelectionInput) -> Selection:
        forgetting = self.forgetting_part(inputs)
        return Selection(forgetting, {"forgetting_part": int(forgetting.size)})


class PruningAwarePart(SelectionRule):
    """Ablation: the pruning-aware part alone (empty after the dense round)."""

    def select(self, inputs: SelectionInput) -> Selection:
        aware = np.unique(np.asarray(inputs.pruning_aware(), dtype=np.int64))
        return Selection(aware, {"pruning_aware_part": int(aware.size)})


class RandomSubset(SelectionRule):
    """Baseline: a uniformly random subset of the training split (never a validation
    example). Its size is ``inputs.target_size`` when given (--match_sizes: the set another
    PrAC run trained on in that round, so a comparison isolates *which* examples, not how
    many), else the size the PrAC set of this run's own statistics would have had."""

    def select(self, inputs: SelectionInput) -> Selection:
        if inputs.target_size is not None:
            if not 0 <= inputs.target_size <= inputs.train_indices.size:
                raise ValueError(f"cannot draw {inputs.target_size} of {inputs.train_indices.size} training examples")
            chosen = inputs.generator.choice(inputs.train_indices, size=inputs.target_size, replace=False)
            return Selection(np.sort(chosen).astype(np.int64))
        reference = self.prac_set(inputs)
        chosen = inputs.generator.choice(inputs.train_indices, size=reference.indices.size, replace=False)
        return Selection(np.sort(chosen).astype(np.int64), dict(reference.parts))


class HighestEL2N(SelectionRule):
    """Baseline: the examples with the highest EL2N score (mean over the round's first
    --score_epochs epochs), as many as the PrAC set would have had this round."""

    uses_el2n = True

    def select(self, inputs: SelectionInput) -> Selection:
        reference = self.prac_set(inputs)
        el2n = inputs.statistics.el2n
        if el2n is None:
            raise ValueError("the el2n rule needs EL2N statistics (RoundStatistics with score_epochs)")
        # Only examples trained this round have a score.
        trained = np.flatnonzero(inputs.statistics.correctness.events(inputs.epochs_run) >= 0)
        scores = el2n.scores(inputs.epochs_run)[trained]
        keep = min(reference.indices.size, trained.size)
        highest = trained[np.argsort(-scores, kind="stable")[:keep]]
        return Selection(np.sort(highest).astype(np.int64), dict(reference.parts))


SELECTION_RULES: Dict[str, Type[SelectionRule]] = {
    "prac": PracSet,
    "forgetting": ForgettingPart,
    "pruning_aware": PruningAwarePart,
    "random": RandomSubset,
    "el2n": HighestEL2N,
}


def build_rule(name: str, settings: SelectionSettings) -> SelectionRule:
    if name not in SELECTION_RULES:
        raise ValueError(f"unknown selection rule {name!r} ({' | '.join(SELECTION_RULES)})")
    return SELECTION_RULES[name](settings)


# ============================================================================ dynamic iterations
@dataclass(frozen=True)
class RoundSchedule:
    """Epochs, learning-rate milestones and warm-up of one round."""

    epochs: int
    milestones: List[int]
    warmup: int


def scaled_schedule(epochs: int, milestones: Sequence[int], warmup: int, set_size: int,
                    train_number: int) -> RoundSchedule:
    """Dynamic iterations: epochs, milestones and warm-up scaled by ``set_size / train_number``
    with the published truncation (milestones may coincide), but never fewer than 1 epoch."""
    return RoundSchedule(epochs=max(1, int(epochs * set_size / train_number)),
                         milestones=[int(m * set_size / train_number) for m in milestones],
                         warmup=int(warmup * set_size / train_number))


def next_training_set(selection: Selection, previous: np.ndarray) -> Tuple[np.ndarray, bool]:
    """The next round's dataset indices: the selection, or, when it is empty, the previous
    round's set (an empty round cannot train). Returns (indices, fell_back)."""
    if selection.indices.size == 0:
        return np.asarray(previous, dtype=np.int64), True
    return selection.indices, False
