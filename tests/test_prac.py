"""PrAC set construction: forgetting events, selection, pruning-aware examples, epoch scaling."""
import numpy as np
import pytest

import prac

NEVER = 200000


# ----------------------------------------------------------------------------- forgetting events
def reference_forgetting(row) -> int:
    """Written from the spec text: -1 if untrained; an example is learned the first epoch it is
    correct; each later correct -> incorrect transition is one forgetting event; never learned
    counts as a very large number."""
    if row[0] < 0:
        return -1
    learned = False
    previous_correct = False
    events = 0
    for value in row:
        correct = value == 1
        if learned and previous_correct and value == 0:
            events += 1
        if correct:
            learned = True
        previous_correct = correct
    return events if learned else NEVER


@pytest.mark.parametrize("row, expected", [
    ([0, 1, 0, 1, 1, 0], 2),           # learned at epoch 1, forgotten at 2 and 5
    ([1, 0, 1, 0, 1, 0], 3),
    ([0, 0, 0, 0], NEVER),            # never learned
    ([0], NEVER),
    ([1, 1, 1, 1], 0),                # never forgotten
    ([0, 0, 1, 1], 0),
    ([1], 0),
    ([1, 0, 0, 0, 1], 1),             # staying wrong is one event, not several
    ([-1, -1, -1, -1], -1),           # not trained this round
])
def test_forgetting_events_hand_made(row, expected) -> None:
    events = prac.forgetting_events(np.array([row]))
    assert events.tolist() == [expected]
    assert reference_forgetting(row) == expected  # the reference agrees with the hand count


def test_forgetting_events_matrix() -> None:
    records = np.array([
        [0, 1, 0, 1, 1, 0],
        [0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 1],
        [-1, -1, -1, -1, -1, -1],
        [1, 0, 1, 0, 1, 0],
    ])
    events = prac.forgetting_events(records)
    assert events.tolist() == [2, NEVER, 0, -1, 3]
    assert np.issubdtype(events.dtype, np.integer)
    assert prac.NEVER_LEARNED == NEVER


def test_forgetting_events_never_learned_exceeds_any_real_count() -> None:
    epochs = 40
    alternating = np.tile([1, 0], epochs // 2)
    events = prac.forgetting_events(np.array([alternating, np.zeros(epochs, dtype=int)]))
    assert events[0] == epochs // 2
    assert events[1] > events[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forgetting_events_match_reference_on_random_records(seed: int) -> None:
    rng = np.random.default_rng(seed)
    examples, epochs = 500, 1 + seed * 7
    records = (rng.random((examples, epochs)) < rng.random((examples, 1))).astype(np.int64)
    untrained = rng.random(examples) < 0.2
    records[untrained] = -1
    records[:5] = 0           # some never learned
    records[5:10] = 1         # some never forgotten
    expected = np.array([reference_forgetting(row) for row in records])
    assert np.array_equal(prac.forgetting_events(records), expected)


def test_forgetting_events_trailing_untrained_epochs_are_not_forgetting() -> None:
    # -1 means "not trained", never "wrong": a correct example followed by epochs without a
    # record has not been forgotten (as in the published forget_times)
    records = np.array([[0, 1, 0, 1, -1, -1], [1, 1, -1, -1, -1, -1], [0, 0, -1, -1, -1, -1]])
    assert prac.forgetting_events(records).tolist() == [1, 0, NEVER]


def test_forgetting_events_accepts_float_and_tensor_like_records() -> None:
    records = np.array([[0.0, 1.0, 0.0], [-1.0, -1.0, -1.0]])
    assert prac.forgetting_events(records).tolist() == [1, -1]


# ----------------------------------------------------------------------------- selection
def test_zero_out_keeps_examples_above_threshold() -> None:
    events = np.array([0, 3, 1, -1, NEVER, 2, 0, -1, 5])
    assert prac.select_by_forgetting(events, "zero_out", 0.2, 0, 0, 9).tolist() == [1, 2, 4, 5, 8]
    assert prac.select_by_forgetting(events, "zero_out", 0.2, 0, 2, 9).tolist() == [1, 4, 8]
    # data_rate and state do not matter for zero_out
    assert prac.select_by_forgetting(events, "zero_out", 0.7, 5, 2, 9).tolist() == [1, 4, 8]


def test_zero_out_never_learned_examples_are_always_kept() -> None:
    events = np.array([NEVER, 10, 0])
    assert prac.select_by_forgetting(events, "zero_out", 0.2, 0, 50, 3).tolist() == [0]


def test_zero_out_with_nothing_above_threshold_is_empty() -> None:
    # the published code then selects every row (validation rows included); here it is empty
    events = np.array([0, 0, 1, -1, -1, 1])
    selected = prac.select_by_forgetting(events, "zero_out", 0.2, 0, 1, 4)
    assert selected.size == 0
    assert selected.dtype.kind in "iu"


def test_zero_out_never_returns_untrained_rows() -> None:
    events = np.array([-1, -1, 2, -1, 0])
    selected = prac.select_by_forgetting(events, "zero_out", 0.2, 0, -5, 2)
    assert selected.tolist() == [2, 4]


@pytest.mark.parametrize("state", [0, 1, 2])
def test_constent_keeps_the_most_forgotten(state: int) -> None:
    rng = np.random.default_rng(state)
    train_number = 90
    events = rng.permutation(np.arange(100))      # distinct counts
    events[rng.choice(100, 10, replace=False)] = -1  # validation / untrained rows
    keep = int(train_number * (1 - 0.2) ** (state + 1))
    selected = prac.select_by_forgetting(events, "constent", 0.2, state, 0, train_number)
    assert len(selected) == keep
    assert len(set(selected.tolist())) == keep
    assert (events[selected] >= 0).all()
    trained = np.flatnonzero(events >= 0)
    threshold = np.sort(events[trained])[-keep]
    assert set(selected.tolist()) == set(trained[events[trained] >= threshold].tolist())


def test_constent_counts() -> None:
    events = np.arange(45000)
    for state, expected in [(0, 36000), (1, 28800), (2, 23040), (3, 18432)]:
        assert expected == int(45000 * 0.8 ** (state + 1))
        assert len(prac.select_by_forgetting(events, "constent", 0.2, state, 0, 45000)) == expected
    assert len(prac.select_by_forgetting(events, "constent", 0.5, 1, 0, 45000)) == int(45000 * 0.5 ** 2)


def test_constent_never_returns_untrained_rows() -> None:
    events = np.array([-1, -1, -1, 5, 0])
    # asks for int(10 * 0.9) = 9 but only two rows were trained
    selected = prac.select_by_forgetting(events, "constent", 0.1, 0, 0, 10)
    assert sorted(selected.tolist()) == [3, 4]


def test_constent_with_zero_count_is_empty() -> None:
    events = np.array([3, 2, 1])
    selected = prac.select_by_forgetting(events, "constent", 0.9, 3, 0, 3)  # int(3 * 0.1^4) = 0
    assert selected.size == 0


def test_unknown_data_prune_raises() -> None:
    with pytest.raises(ValueError):
        prac.select_by_forgetting(np.array([1, 2]), "drop_half", 0.2, 0, 0, 2)


# ----------------------------------------------------------------------------- pruning-aware
def test_pruning_aware_examples_positions() -> None:
    dense = np.array([3, 1, 4, 1, 5, 9, 2, 6])
    pruned = np.array([3, 2, 4, 1, 5, 8, 2, 0])
    assert prac.pruning_aware_examples(dense, pruned).tolist() == [1, 5, 7]
    assert prac.pruning_aware_examples(dense, dense).size == 0


def test_pruning_aware_examples_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        prac.pruning_aware_examples(np.zeros(3), np.zeros(4))


def test_pruning_aware_positions_map_through_the_split() -> None:
    split = np.array([7, 2, 9, 0, 4, 1, 3, 8, 6, 5])
    train_indices = split[:9]
    dense = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8])
    pruned = np.array([0, 0, 2, 3, 0, 5, 6, 7, 1])
    positions = prac.pruning_aware_examples(dense, pruned)
    assert train_indices[positions].tolist() == [2, 4, 6]


# ----------------------------------------------------------------------------- dynamic iterations
def test_scaled_schedule_truncates() -> None:
    schedule = prac.scaled_schedule(182, [91, 136], 5, 10000, 45000)
    assert schedule.epochs == 182 * 10000 // 45000 == 40
    assert schedule.milestones == [91 * 10000 // 45000, 136 * 10000 // 45000] == [20, 30]
    assert schedule.warmup == 5 * 10000 // 45000 == 1


def test_scaled_schedule_truncates_not_rounds() -> None:
    schedule = prac.scaled_schedule(182, [91, 136], 0, 44990, 45000)
    assert schedule.epochs == 181  # 181.96 truncated
    assert schedule.milestones == [90, 135]  # 90.98, 135.97 truncated


def test_scaled_schedule_full_set_is_unchanged() -> None:
    schedule = prac.scaled_schedule(182, [91, 136], 3, 45000, 45000)
    assert (schedule.epochs, schedule.milestones, schedule.warmup) == (182, [91, 136], 3)


def test_scaled_schedule_never_has_zero_epochs() -> None:
    schedule = prac.scaled_schedule(182, [91, 136], 0, 100, 45000)  # 0.40 epochs
    assert schedule.epochs == 1
    assert schedule.milestones == [0, 0]
    assert prac.scaled_schedule(10, [5], 0, 1, 45000).epochs == 1


def test_scaled_schedule_milestones_may_coincide() -> None:
    schedule = prac.scaled_schedule(182, [91, 92], 0, 4500, 45000)
    assert schedule.milestones == [9, 9]  # 9.1 and 9.2: kept as two drops at the same epoch
    assert schedule.epochs == 18
