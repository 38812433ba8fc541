"""A run's state and the one codec between it and the checkpoint files.

This is the only module that knows the published checkpoint keys and layouts (``state``,
``best_sa``, ``ta``, ``init_weight``, ``sequence``, ``prediction`` as a list of N x 1 arrays,
...). Everything else works with :class:`RunState` and its plain names, and checkpoints
written here load in the published scripts, as theirs load here.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import torch

import pruner
from prac import RoundSchedule, RoundStatistics
from utils import require_keys

FORMAT = "prac-lth-open/2"
StateDict = Dict[str, torch.Tensor]
PUBLISHED_KEYS = ("state", "result", "epoch", "state_dict", "best_sa", "optimizer", "scheduler")
PRAC_KEYS = ("prediction", "distance_queue", "last_mask", "start_record")
# plain result names <-> the published ``result`` keys
RESULT_KEYS = {"train_acc": "train", "val_acc": "ta", "test_acc": "test_ta"}


def empty_results() -> Dict[str, List[float]]:
    return {name: [] for name in RESULT_KEYS}


@dataclass
class RunState:
    """Everything that changes during a run; saved in every checkpoint."""

    round: int
    schedule: RoundSchedule              # this round's epochs, LR milestones and warm-up
    train_indices: np.ndarray            # dataset indices this round trains on
    base_seed: int
    rewind_weights: Optional[StateDict]  # where rounds rewind to (init, or rewind-epoch weights)
    epoch: int = 0                       # epochs completed in this round
    results: Dict[str, List[float]] = field(default_factory=empty_results)
    best_val_acc: float = 0.0            # of this round
    round_finished: bool = False         # Early-Bird stopped this round
    eb_stop_epoch: Optional[int] = None
    cumulative_steps: int = 0
    round_steps: int = 0
    round_examples: int = 0
    round_seconds: float = 0.0
    set_parts: Dict[str, int] = field(default_factory=dict)  # how this round's set was built
    # PrAC runs only
    statistics: Optional[RoundStatistics] = None
    early_bird: Optional[pruner.EarlyBird] = None

    def next_round(self, schedule: RoundSchedule, train_indices: np.ndarray,
                   set_parts: Optional[Dict[str, int]] = None) -> "RunState":
        return RunState(round=self.round + 1, schedule=schedule, train_indices=train_indices,
                        base_seed=self.base_seed, rewind_weights=self.rewind_weights,
                        cumulative_steps=self.cumulative_steps, set_parts=dict(set_parts or {}))


def encode(run: RunState, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
           config: Dict[str, Any], script: str) -> Dict[str, Any]:
    """The checkpoint of ``run``: the published keys, plus ours for an exact resume."""
    checkpoint: Dict[str, Any] = {
        "state": run.round,
        # remain_weight as the published main_train.py records it
        "result": {**{published: list(run.results[name]) for name, published in RESULT_KEYS.items()},
                   "remain_weight": pruner.remaining_weights(model)},
        "epoch": run.epoch, "state_dict": model.state_dict(), "best_sa": run.best_val_acc,
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "init_weight": run.rewind_weights,
        # numpy, as the published scripts store it, so our checkpoints load there too
        "sequence": np.asarray(run.train_indices, dtype=np.int64),
        "format": FORMAT, "script": script, "config": dict(config), "base_seed": run.base_seed,
        "schedule": {"epochs": run.schedule.epochs, "milestones": list(run.schedule.milestones),
                     "warmup": run.schedule.warmup},
        "round_finished": run.round_finished, "eb_stop_epoch": run.eb_stop_epoch,
        "cumulative_steps": run.cumulative_steps, "round_steps": run.round_steps,
        "round_examples": run.round_examples, "round_seconds": run.round_seconds,
        "set_parts": dict(run.set_parts),
    }
    if run.statistics is not None and run.early_bird is not None:
        correctness = run.statistics.correctness.values[:run.epoch].cpu().numpy()
        checkpoint.update({
            # one (examples x 1) int8 array per epoch so far: the published layout
            "prediction": [column.reshape(-1, 1) for column in correctness],
            "remain_para": pruner.unpruned_count(model),
            "distance_queue": run.early_bird.queue, "last_mask": run.early_bird.last_mask,
            "start_record": run.early_bird.start_record,
        })
        if run.statistics.el2n is not None:
            checkpoint["el2n_sums"] = run.statistics.el2n.sums.cpu()
    return checkpoint


@dataclass
class Decoded:
    """A checkpoint's contents in plain names. ``run.statistics`` and ``run.early_bird``
    are left for the caller, which knows the data set and device."""

    run: RunState
    model_state: StateDict
    optimizer_state: Dict[str, Any]
    scheduler_state: Dict[str, Any]
    schedule_saved: bool                 # False: a published checkpoint; derive the schedule
    script: Optional[str]                # None for published checkpoints
    config: Optional[Dict[str, Any]]
    records: Optional[torch.Tensor]      # examples x epochs int8 (PrAC)
    el2n_sums: Optional[torch.Tensor]
    early_bird: Optional[Dict[str, Any]]  # queue, last_mask, start_record (PrAC)

    @property
    def is_prac(self) -> bool:
        return self.records is not None


def decode(checkpoint: Any, path: str, fallback_seed: int, full_schedule: RoundSchedule) -> Decoded:
    """Reads a checkpoint dictionary (ours or the published scripts') into plain names.

    ``full_schedule`` stands in for a published checkpoint's schedule, which it does not
    hold; the caller corrects it where the run's set determines it.
    """
    require_keys(checkpoint, PUBLISHED_KEYS, path, "checkpoint")
    saved = checkpoint.get("schedule")
    schedule = (RoundSchedule(int(saved["epochs"]), [int(m) for m in saved["milestones"]], int(saved["warmup"]))
                if saved else full_schedule)
    sequence = checkpoint.get("sequence")
    result = checkpoint["result"]
    run = RunState(
        round=int(checkpoint["state"]), schedule=schedule,
        train_indices=np.empty(0, dtype=np.int64) if sequence is None else np.asarray(sequence, dtype=np.int64),
        base_seed=int(checkpoint.get("base_seed", fallback_seed)),
        rewind_weights=checkpoint["init_weight"] if "init_weight" in checkpoint else None,
        epoch=int(checkpoint["epoch"]),
        results={name: [float(v) for v in result.get(published, [])] for name, published in RESULT_KEYS.items()},
        best_val_acc=float(checkpoint["best_sa"]),
        round_finished=bool(checkpoint.get("round_finished", False)),
        eb_stop_epoch=checkpoint.get("eb_stop_epoch"),
        cumulative_steps=int(checkpoint.get("cumulative_steps", 0)),
        round_steps=int(checkpoint.get("round_steps", 0)),
        round_examples=int(checkpoint.get("round_examples", 0)),
        round_seconds=float(checkpoint.get("round_seconds", 0.0)),
        set_parts={k: int(v) for k, v in dict(checkpoint.get("set_parts") or {}).items() if v is not None})
    is_prac = "prediction" in checkpoint
    if is_prac:
        require_keys(checkpoint, PRAC_KEYS, path, "PrAC checkpoint")
    return Decoded(
        run=run, model_state=checkpoint["state_dict"], optimizer_state=checkpoint["optimizer"],
        scheduler_state=checkpoint["scheduler"], schedule_saved=bool(saved),
        script=checkpoint.get("script"), config=checkpoint.get("config"),
        records=records_matrix(checkpoint["prediction"]) if is_prac else None,
        el2n_sums=checkpoint.get("el2n_sums"),
        early_bird=({"queue": torch.as_tensor(checkpoint["distance_queue"]), "last_mask": checkpoint["last_mask"],
                     "start_record": bool(checkpoint["start_record"]),
                     "stop_known": "round_finished" in checkpoint} if is_prac else None))


def records_matrix(prediction: Any) -> torch.Tensor:
    """The examples x epochs records of a checkpoint: a list of (examples x 1) arrays, one
    per epoch (ours and the published layout; empty at the start of a round), or a matrix."""
    if torch.is_tensor(prediction):
        return prediction.to(torch.int8).cpu()
    if isinstance(prediction, list):
        if not prediction:
            return torch.empty((0, 0), dtype=torch.int8)
        return torch.from_numpy(np.concatenate([np.asarray(p).reshape(-1, 1) for p in prediction], axis=1)
                                .astype(np.int8))
    return torch.from_numpy(np.asarray(prediction).astype(np.int8))


def encode_final_ticket(run: RunState, model: torch.nn.Module) -> Dict[str, Any]:
    """The mask pruning after the last round gives, with its rewound weights: main_train.py
    retrains it with --init_dir / --mask_dir pointing at this file."""
    return {"state": run.round + 1, "state_dict": model.state_dict(), "init_weight": run.rewind_weights,
            "remaining_weights": pruner.remaining_weights(model), "format": FORMAT}
