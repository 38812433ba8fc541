"""Pruning-Aware Critical (PrAC) example selection (Zhang et al., ICML 2021).

All functions work on whole arrays; none loops over examples in Python.
"""
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np

# The published scripts count an example that was never learned as this many forgetting
# events, so that it is always kept; any count larger than a real one would do.
NEVER_LEARNED = 200000
UNTRAINED = -1


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
    published ``argsort(...)[-0:]`` returns every row). Ties at the ``constent`` cut are
    broken by the lower dataset index (a stable sort); the published code left it to an
    unstable sort.
    """
    events = np.asarray(events)
    trained = np.flatnonzero(events >= 0)
    if data_prune == "zero_out":
        return np.sort(trained[events[trained] > threshold])
    if data_prune == "constent":
        keep = min(int(train_number * (1 - data_rate) ** (state + 1)), trained.size)
        if keep <= 0:
            return np.empty(0, dtype=np.int64)
        order = trained[np.argsort(events[trained], kind="stable")]
        return np.sort(order[-keep:])
    raise ValueError(f"unknown data_prune {data_prune!r} (zero_out | constent)")


def pruning_aware_examples(dense_predictions: np.ndarray, pruned_predictions: np.ndarray) -> np.ndarray:
    """Positions at which the dense and the pruned model predict different labels."""
    dense = np.asarray(dense_predictions)
    pruned = np.asarray(pruned_predictions)
    if dense.shape != pruned.shape:
        raise ValueError(f"prediction shapes differ: {dense.shape} vs {pruned.shape}")
    return np.flatnonzero(dense != pruned)


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
