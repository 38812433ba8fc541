"""The three runs — vanilla IMP, PrAC IMP, ticket retraining — on one shared epoch loop.

A run's whole state is one :class:`RunState`; it maps to the checkpoint keys of the
published scripts (plus a few of ours), so any checkpoint resumes exactly.
"""
import contextlib
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

import pruner
from cli import Config
from dataset import Data, load_data, load_index_file
from models import build_model
from prac import (RoundSchedule, forgetting_events, pruning_aware_examples, scaled_schedule,
                  select_by_forgetting)
from training import LoopSettings, evaluate, make_optimizer, make_scheduler, predict, train_epoch
from utils import (EPOCH_FIELDS, LOG, ROUND_FIELDS, STREAM_RANDOM_PRUNE, STREAM_TRAIN, ResultTable,
                   RunPaths, UserError, atomic_copy, atomic_write, describe_device, fresh_seed,
                   load_checkpoint, make_generator, plot_curves, require_keys, save_checkpoint,
                   save_run_info, select_device, setup_logging)

CHECKPOINT_FORMAT = "prac-lth-open/1"
PUBLISHED_KEYS = ("state", "result", "epoch", "state_dict", "best_sa", "optimizer", "scheduler")
StateDict = Dict[str, torch.Tensor]
# Measured on a 2-core CPU (2026-11-24): ResNet-20s evaluates ~8x faster in batches of 128
# than of 1000, whose activations fall out of cache; a GPU wants large batches.
CPU_EVAL_BATCH, CUDA_EVAL_BATCH = 128, 1000
SCRIPTS = {"imp": "main_imp.py", "prac": "main_PrAC_imp.py", "retrain": "main_train.py"}


def empty_result() -> Dict[str, List[float]]:
    return {"train": [], "ta": [], "test_ta": []}


def copy_state(model: nn.Module) -> StateDict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@dataclass
class RunState:
    """Everything that changes during a run; saved in every checkpoint."""

    state: int                      # pruning round
    schedule: RoundSchedule         # this round's epochs, LR milestones and warm-up
    sequence: np.ndarray            # dataset indices this round trains on
    base_seed: int
    init_weight: Optional[StateDict]  # where rounds rewind to (init, or rewind-epoch weights)
    epoch: int = 0                  # epochs completed in this round
    result: Dict[str, List[float]] = field(default_factory=empty_result)
    best_sa: float = 0.0            # best validation accuracy of this round
    round_finished: bool = False    # Early-Bird stopped this round
    eb_stop_epoch: Optional[int] = None
    cumulative_steps: int = 0
    round_steps: int = 0
    round_examples: int = 0
    round_seconds: float = 0.0
    set_parts: Dict[str, Optional[int]] = field(default_factory=dict)
    # PrAC only: per-example correctness (epochs x examples, int8, -1 = not trained)
    records: Optional[torch.Tensor] = None
    early_bird: Optional[pruner.EarlyBird] = None

    def next_round(self, schedule: RoundSchedule, sequence: np.ndarray) -> "RunState":
        return RunState(state=self.state + 1, schedule=schedule, sequence=sequence,
                        base_seed=self.base_seed, init_weight=self.init_weight,
                        cumulative_steps=self.cumulative_steps)


class Session:
    """What a run works with: config, device, data, file names and result tables."""

    def __init__(self, config: Config, kind: str):
        self.config = config
        self.kind = kind  # "imp", "prac" or "retrain"
        try:
            os.makedirs(config.save_dir, exist_ok=True)
        except OSError as error:
            raise UserError(f"--save_dir {config.save_dir} cannot be created ({error})") from None
        self.paths = RunPaths(config.save_dir)
        if not config.resume and os.path.exists(self.paths.epochs_csv):
            raise UserError(f"--save_dir {config.save_dir} already holds a run; resume it with --resume "
                            "--checkpoint FILE or choose a new --save_dir (nothing was overwritten)")
        setup_logging(config.save_dir)
        self.device = select_device(config.device, config.gpu)
        LOG.info(f"device: {describe_device(self.device)}")
        if self.device.type == "cuda":
            # Seeded runs stay reproducible (as the published setup_seed); unseeded ones
            # let cuDNN pick the fastest kernels for the fixed batch shapes.
            torch.backends.cudnn.deterministic = config.seed is not None
            torch.backends.cudnn.benchmark = config.seed is None
        if config.compile and self.device.type != "cuda":
            LOG.info("--compile is used on CUDA only; running eagerly on the CPU")
        self.data: Data = load_data(config.dataset, config.data, config.split_file).to(self.device)
        LOG.info(f"data: {config.dataset} from {config.data}: {self.data.train_number} train, "
                 f"{len(self.data.val_indices)} validation, {len(self.data.test)} test images")
        self.val_indices = torch.as_tensor(self.data.val_indices, device=self.device)
        eval_batch_size = config.eval_batch_size
        if eval_batch_size is None:
            eval_batch_size = CUDA_EVAL_BATCH if self.device.type == "cuda" else CPU_EVAL_BATCH
        self.settings = LoopSettings(batch_size=config.batch_size, eval_batch_size=eval_batch_size,
                                     precision=config.precision, channels_last=config.use_channels_last,
                                     print_freq=config.print_freq, progress=not config.no_progress)
        self.epoch_table = ResultTable(self.paths.epochs_csv, EPOCH_FIELDS)
        self.round_table = ResultTable(self.paths.rounds_csv, ROUND_FIELDS)
        if not config.resume:
            self.save_run_info()

    def save_run_info(self) -> None:
        """args.json for a fresh run; args_resume.json once a resume has been checked."""
        path = self.paths.run_info.replace(".json", "_resume.json") if self.config.resume else self.paths.run_info
        save_run_info(path, SCRIPTS[self.kind], self.config.to_dict(), describe_device(self.device))

    # -------------------------------------------------------------------- models
    def new_model(self, base_seed: Optional[int]) -> nn.Module:
        """The configured model on the device; seeded initialisation when ``base_seed`` is given.

        The initialisation consumes torch's global RNG as the published scripts do after
        setup_seed(seed). A model whose weights are loaded next passes None, so building
        it leaves the global RNG alone.
        """
        if base_seed is not None:
            torch.manual_seed(base_seed)
        info = self.data.info
        model = build_model(self.config.arch, info.num_classes, info.mean, info.std).to(self.device)
        if self.settings.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def forward_model(self, model: nn.Module) -> nn.Module:
        if self.config.compile and self.device.type == "cuda":
            return torch.compile(model)  # type: ignore[return-value]
        return model

    def full_schedule(self) -> RoundSchedule:
        return RoundSchedule(self.config.epochs, list(self.config.decreasing_lr), self.config.warmup)

    def first_round_data(self) -> Tuple[np.ndarray, RoundSchedule]:
        """Round 0 trains on the whole training split, or on --train_subset with epochs scaled."""
        config = self.config
        if config.train_subset:
            subset = load_index_file(config.train_subset, self.data)
            LOG.info(f"training on the {subset.size} examples of {config.train_subset}")
            return subset, scaled_schedule(config.epochs, config.decreasing_lr, config.warmup,
                                           subset.size, self.data.train_number)
        return self.data.train_indices.copy(), self.full_schedule()

    def tag(self, run: RunState) -> Optional[int]:
        return None if self.kind == "retrain" else run.state

    # -------------------------------------------------------------------- checkpoints
    def checkpoint_dict(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any, run: RunState) -> Dict[str, Any]:
        checkpoint: Dict[str, Any] = {
            "state": run.state, "result": run.result, "epoch": run.epoch,
            "state_dict": model.state_dict(), "best_sa": run.best_sa,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "init_weight": run.init_weight,
            "format": CHECKPOINT_FORMAT, "config": self.config.to_dict(), "base_seed": run.base_seed,
            "schedule": {"epochs": run.schedule.epochs, "milestones": list(run.schedule.milestones),
                         "warmup": run.schedule.warmup},
            # numpy, as the published scripts store it, so our checkpoints load there too
            "sequence": np.asarray(run.sequence, dtype=np.int64),
            "round_finished": run.round_finished, "eb_stop_epoch": run.eb_stop_epoch,
            "cumulative_steps": run.cumulative_steps, "round_steps": run.round_steps,
            "round_examples": run.round_examples, "round_seconds": run.round_seconds,
            "set_parts": dict(run.set_parts),
        }
        if run.records is not None and run.early_bird is not None:
            checkpoint.update({
                # one (examples x 1) int8 array per epoch so far, the published layout
                "prediction": [column.reshape(-1, 1) for column in run.records[:run.epoch].cpu().numpy()],
                "remain_para": pruner.unpruned_count(model),
                "distance_queue": run.early_bird.queue, "last_mask": run.early_bird.last_mask,
                "start_record": run.early_bird.start_record,
            })
        return checkpoint

    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, run: RunState,
             is_best: bool = False) -> None:
        path = self.paths.checkpoint(self.tag(run))
        save_checkpoint(self.checkpoint_dict(model, optimizer, scheduler, run), path)
        if is_best:
            atomic_copy(path, self.paths.best(self.tag(run)))

    def load(self, path: str, what: str) -> Any:
        return load_checkpoint(path, what, trust=self.config.trust_checkpoints)

    def resume(self, with_records: bool) -> Tuple[nn.Module, torch.optim.Optimizer, Any, RunState]:
        """Rebuilds model, optimiser, schedule and run state from --checkpoint (ours or published)."""
        config = self.config
        path = str(config.checkpoint)
        checkpoint = self.load(path, "checkpoint")
        require_keys(checkpoint, PUBLISHED_KEYS, path, "checkpoint")
        base_seed = int(checkpoint.get("base_seed", config.seed if config.seed is not None else fresh_seed()))
        model = self.new_model(base_seed)
        mask = pruner.extract_mask(checkpoint["state_dict"])
        if mask:
            pruner.check_mask(model, mask, source=f"checkpoint {path}")
            pruner.apply_mask(model, mask)
        with weights_error(f"checkpoint {path}", config):
            model.load_state_dict(checkpoint["state_dict"])
        sequence = checkpoint.get("sequence")
        sequence = self.data.train_indices.copy() if sequence is None else np.asarray(sequence, dtype=np.int64)
        saved = checkpoint.get("schedule")
        if saved:
            schedule = RoundSchedule(int(saved["epochs"]), [int(m) for m in saved["milestones"]], int(saved["warmup"]))
        elif with_records and int(checkpoint["state"]) > 0:
            # A published PrAC checkpoint does not hold its round's scaled schedule (the
            # published resume ran the unscaled one); its PrAC set determines it.
            schedule = scaled_schedule(config.epochs, config.decreasing_lr, config.warmup, len(sequence),
                                       self.data.train_number)
        else:
            schedule = self.full_schedule()
        optimizer = make_optimizer(model, config.lr, config.momentum, config.weight_decay)
        scheduler = make_scheduler(optimizer, schedule.milestones)
        try:
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
        except (ValueError, KeyError, RuntimeError) as error:
            raise UserError(f"checkpoint {path}: its optimiser state does not fit this model ({error})") from None
        run = RunState(state=int(checkpoint["state"]), schedule=schedule, sequence=sequence,
                       base_seed=base_seed, init_weight=checkpoint["init_weight"],
                       epoch=int(checkpoint["epoch"]), result={k: list(v) for k, v in checkpoint["result"].items()},
                       best_sa=float(checkpoint["best_sa"]),
                       round_finished=bool(checkpoint.get("round_finished", False)),
                       eb_stop_epoch=checkpoint.get("eb_stop_epoch"),
                       cumulative_steps=int(checkpoint.get("cumulative_steps", 0)),
                       round_steps=int(checkpoint.get("round_steps", 0)),
                       round_examples=int(checkpoint.get("round_examples", 0)),
                       round_seconds=float(checkpoint.get("round_seconds", 0.0)),
                       set_parts=dict(checkpoint.get("set_parts", {})))
        if with_records:
            require_keys(checkpoint, ("prediction", "distance_queue", "last_mask", "start_record"), path,
                         "PrAC checkpoint")
            run.records = self.new_records(run.schedule.epochs)
            done = _records_matrix(checkpoint["prediction"], len(self.data.train))
            if done.shape[1] != run.epoch or done.shape[0] != len(self.data.train):
                raise UserError(f"checkpoint {path}: its per-example records are {tuple(done.shape)}, "
                                f"expected ({len(self.data.train)}, {run.epoch}); is it from this data set?")
            run.records[:run.epoch] = done.t().to(self.device)
            # published runs set last_mask only after an epoch; masks go to this device
            last_mask = checkpoint["last_mask"]
            if last_mask is not None:
                last_mask = {k: v.to(self.device) for k, v in last_mask.items()}
            run.early_bird = pruner.EarlyBird(config.eb_eps, config.queue_length, run.schedule.warmup,
                                              queue=torch.as_tensor(checkpoint["distance_queue"]),
                                              last_mask=last_mask,
                                              start_record=bool(checkpoint["start_record"]))
            if "round_finished" not in checkpoint:
                # A published checkpoint does not say whether Early-Bird stopped the round;
                # its queue does (the published resume trained on after a stop).
                run.round_finished = bool(run.early_bird.queue.max() < config.eb_eps)
        # Result rows past the checkpoint are recomputed, so drop them now.
        self.epoch_table.keep_only(lambda row: int(row["round"]) < run.state or
                                   (int(row["round"]) == run.state and int(row["epoch"]) <= run.epoch))
        self.round_table.keep_only(lambda row: int(row["round"]) < run.state)
        self.save_run_info()
        LOG.info(f"resumed from {path}: round {run.state}, {run.epoch}/{run.schedule.epochs} epochs done")
        return model, optimizer, scheduler, run

    def new_records(self, epochs: int) -> torch.Tensor:
        return torch.full((epochs, len(self.data.train)), -1, dtype=torch.int8, device=self.device)

    # -------------------------------------------------------------------- the epoch loop
    def train_round(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    run: RunState,
                    after_epoch: Optional[Callable[[int], Tuple[Optional[float], bool]]] = None) -> None:
        """Runs the round's remaining epochs: train, evaluate, step the schedule, keep the
        best-validation checkpoint, write the result row and the checkpoint.

        ``after_epoch(epoch)`` may return (Early-Bird distance, stop).
        """
        config, data = self.config, self.data
        indices = torch.as_tensor(run.sequence, device=self.device)
        forward_model = self.forward_model(model)
        while not run.round_finished and run.epoch < run.schedule.epochs:
            epoch = run.epoch
            lr = optimizer.param_groups[0]["lr"]
            generator = make_generator(self.device, run.base_seed, STREAM_TRAIN, run.state, epoch)
            stats = train_epoch(forward_model, optimizer, data.train, indices, generator, self.settings,
                                epoch=epoch, crop_padding=data.info.crop_padding,
                                warmup_epochs=run.schedule.warmup, base_lr=config.lr,
                                records=None if run.records is None else run.records[epoch],
                                description=f"round {run.state} epoch {epoch + 1}/{run.schedule.epochs}")
            if self.kind != "retrain" and run.state == 0 and epoch == config.rewind_epoch:
                rewind_weights = copy_state(model)
                save_checkpoint(rewind_weights, self.paths.rewind_weight(epoch))
                if config.prune_type == "rewind_lt":
                    run.init_weight = rewind_weights
            val_acc = evaluate(forward_model, data.train, self.settings, self.val_indices)
            test_acc = evaluate(forward_model, data.test, self.settings)
            scheduler.step()
            run.result["train"].append(stats.accuracy)
            run.result["ta"].append(val_acc)
            run.result["test_ta"].append(test_acc)
            # The first epoch always counts, so a round whose validation accuracy never
            # rises above 0 still has a best checkpoint.
            is_best = val_acc > run.best_sa or epoch == 0
            run.best_sa = max(run.best_sa, val_acc)
            eb_start = time.time()
            distance, stop = after_epoch(epoch) if after_epoch is not None else (None, False)
            eb_seconds = time.time() - eb_start if after_epoch is not None else None
            run.epoch = epoch + 1
            run.round_steps += stats.steps
            run.round_examples += stats.examples
            run.cumulative_steps += stats.steps
            run.round_seconds += stats.seconds
            if stop:
                run.round_finished, run.eb_stop_epoch = True, epoch + 1
            remaining = pruner.remaining_weights(model)
            # The row goes first: if the run dies before the checkpoint, resuming drops it.
            self.epoch_table.append({
                "round": run.state, "epoch": epoch + 1, "lr": lr, "train_acc": stats.accuracy,
                "val_acc": val_acc, "test_acc": test_acc, "remaining_weights": remaining,
                "train_examples": stats.examples, "round_steps": run.round_steps,
                "round_examples_seen": run.round_examples,
                "cumulative_steps": run.cumulative_steps, "eb_distance": distance, "eb_seconds": eb_seconds,
                "seconds": stats.seconds})
            self.save(model, optimizer, scheduler, run, is_best=is_best)
            LOG.info(f"round {run.state} epoch {epoch + 1}/{run.schedule.epochs}: lr {lr:.4g} "
                     f"train {stats.accuracy:.2f} val {val_acc:.2f} test {test_acc:.2f} "
                     f"({stats.examples / stats.seconds:.0f} img/s)"
                     + (f" mask distance {distance:.4f}" if distance is not None else "")
                     + (" -> Early-Bird stop" if stop else ""))

    def finish_round(self, model: nn.Module, run: RunState) -> Tuple[float, float]:
        """Reports the round: plot, round row, test accuracy at the best validation epoch."""
        if not run.result["ta"]:
            raise UserError(f"round {run.state} has no finished epoch to report")
        best = int(np.argmax(run.result["ta"]))
        best_val, test_at_best = run.result["ta"][best], run.result["test_ta"][best]
        plot_curves(run.result, self.paths.curves(self.tag(run)),
                    title=f"{self.config.arch} {self.config.dataset} round {run.state}")
        self.round_table.append({
            "round": run.state, "remaining_weights": pruner.remaining_weights(model),
            "train_examples": len(run.sequence),
            "forgetting_part": run.set_parts.get("forgetting_part"),
            "pruning_aware_part": run.set_parts.get("pruning_aware_part"),
            "epochs_planned": run.schedule.epochs, "epochs_run": run.epoch,
            "eb_stop_epoch": run.eb_stop_epoch, "steps": run.round_steps,
            "examples_seen": run.round_examples, "cumulative_steps": run.cumulative_steps,
            "best_val_acc": best_val, "test_acc_at_best_val": test_at_best, "seconds": run.round_seconds})
        LOG.info(f"* round {run.state}: remaining weights {pruner.remaining_weights(model):.2f}%, "
                 f"best validation {best_val:.2f} at epoch {best + 1}, test accuracy there {test_at_best:.2f}")
        return best_val, test_at_best

    def save_final_ticket(self, model: nn.Module, run: RunState) -> None:
        """The mask that pruning after the last round gives, with its rewound weights, so
        main_train.py can retrain the sparsest ticket (--init_dir / --mask_dir this file)."""
        save_checkpoint({"state": run.state + 1, "state_dict": model.state_dict(), "init_weight": run.init_weight,
                         "remaining_weights": pruner.remaining_weights(model), "format": CHECKPOINT_FORMAT},
                        self.paths.final_ticket())
        LOG.info(f"final ticket ({pruner.remaining_weights(model):.2f}% weights) saved to {self.paths.final_ticket()}")


@contextlib.contextmanager
def weights_error(source: str, config: Config) -> Iterator[None]:
    """Turns load_state_dict's multi-line mismatch report into one line."""
    try:
        yield
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else "")
        raise UserError(f"{source} does not fit --arch {config.arch} on {config.dataset}: "
                        f"{detail[:200]}") from None


def _records_matrix(prediction: Any, examples: int) -> torch.Tensor:
    """The examples x epochs records of a checkpoint: a list of (examples x 1) arrays, one
    per epoch (ours and the published layout; empty at the start of a round) or a matrix."""
    if torch.is_tensor(prediction):
        return prediction.to(torch.int8).cpu()
    if isinstance(prediction, list):
        if not prediction:
            return torch.empty((examples, 0), dtype=torch.int8)
        return torch.from_numpy(np.concatenate([np.asarray(p).reshape(-1, 1) for p in prediction], axis=1)
                                .astype(np.int8))
    return torch.from_numpy(np.asarray(prediction).astype(np.int8))


def _fresh_start(session: Session) -> Tuple[nn.Module, torch.optim.Optimizer, Any, RunState]:
    config = session.config
    base_seed = config.seed if config.seed is not None else fresh_seed()
    model = session.new_model(base_seed)
    sequence, schedule = session.first_round_data()
    optimizer = make_optimizer(model, config.lr, config.momentum, config.weight_decay)
    scheduler = make_scheduler(optimizer, schedule.milestones)
    # rewind_lt has no rewind point until epoch --rewind_epoch of round 0 has run.
    init_weight = None if config.prune_type == "rewind_lt" else copy_state(model)
    run = RunState(state=0, schedule=schedule, sequence=sequence, base_seed=base_seed, init_weight=init_weight)
    return model, optimizer, scheduler, run


def _new_round_optimizer(session: Session, model: nn.Module, schedule: RoundSchedule,
                         lr_rewind_steps: int) -> Tuple[torch.optim.Optimizer, Any]:
    config = session.config
    optimizer = make_optimizer(model, config.lr, config.momentum, config.weight_decay)
    scheduler = make_scheduler(optimizer, schedule.milestones)
    with warnings.catch_warnings():
        # Stepping before any optimiser step is the point here (learning-rate rewinding).
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
        for _ in range(lr_rewind_steps):
            scheduler.step()
    return optimizer, scheduler


# ============================================================================ vanilla IMP
def run_imp(config: Config) -> None:
    """main_imp.py: iterative magnitude pruning (lt | rewind_lt | pt, or random pruning)."""
    session = Session(config, "imp")
    model, optimizer, scheduler, run = (session.resume(with_records=False) if config.resume
                                        else _fresh_start(session))
    while run.state < config.pruning_times:
        LOG.info(f"=== round {run.state}/{config.pruning_times - 1}: remaining weights "
                 f"{pruner.remaining_weights(model):.2f}%, {len(run.sequence)} training examples, "
                 f"{run.schedule.epochs} epochs")
        session.train_round(model, optimizer, scheduler, run)
        session.finish_round(model, run)
        if config.random_prune:
            generator = make_generator(torch.device("cpu"), run.base_seed, STREAM_RANDOM_PRUNE, run.state)
            pruner.random_prune(model, config.rate, generator)
        else:
            pruner.global_magnitude_prune(model, config.rate)
        mask = pruner.extract_mask(model.state_dict())
        if config.prune_type == "pt":
            dense_best = session.load(session.paths.best(0), "best dense checkpoint")
            target = pruner.dense_state_dict(dense_best["state_dict"])
        else:
            target = _rewind_target(run, model)
        with weights_error("rewind weights", config):
            pruner.rewind(model, target, mask)
        if run.state == config.pruning_times - 1:
            session.save_final_ticket(model, run)
            break
        run = run.next_round(run.schedule, run.sequence)
        optimizer, scheduler = _new_round_optimizer(session, model, run.schedule, config.rewind_epoch)
        session.save(model, optimizer, scheduler, run)
    LOG.info("done")


def _rewind_target(run: RunState, model: nn.Module) -> StateDict:
    if run.init_weight is None:
        # Published runs crash here; a round 0 that stopped before --rewind_epoch has no
        # rewind point, so the round's final weights stand in for it.
        LOG.info("round 0 ended before --rewind_epoch: rewinding to its final weights instead")
        run.init_weight = pruner.dense_state_dict(copy_state(model))
    return run.init_weight


# ============================================================================ PrAC IMP
def run_prac_imp(config: Config) -> None:
    """main_PrAC_imp.py: IMP with Early-Bird rounds trained on Pruning-Aware Critical sets."""
    session = Session(config, "prac")
    if config.resume:
        model, optimizer, scheduler, run = session.resume(with_records=True)
    else:
        model, optimizer, scheduler, run = _fresh_start(session)
        _save_training_set(session, run)
    dense_predictions: Optional[np.ndarray] = None
    while run.state < config.pruning_times:
        if run.records is None:
            run.records = session.new_records(run.schedule.epochs)
        if run.early_bird is None:
            run.early_bird = pruner.EarlyBird(config.eb_eps, config.queue_length, run.schedule.warmup)
        early_bird = run.early_bird
        remaining = pruner.unpruned_count(model)
        LOG.info(f"=== round {run.state}/{config.pruning_times - 1}: remaining weights "
                 f"{pruner.remaining_weights(model):.2f}%, PrAC set {len(run.sequence)} examples, "
                 f"{run.schedule.epochs} epochs")

        def early_bird_check(epoch: int) -> Tuple[Optional[float], bool]:
            return early_bird.update(epoch, pruner.candidate_mask(model, config.rate), remaining)

        session.train_round(model, optimizer, scheduler, run, after_epoch=early_bird_check)
        session.finish_round(model, run)
        # The ticket is the last candidate mask; recomputing it gives the same mask, also
        # after a resume at the end of a round.
        ticket_mask = pruner.candidate_mask(model, config.rate)
        with weights_error("rewind weights", config):
            pruner.rewind(model, _rewind_target(run, model), ticket_mask)
        if run.state == config.pruning_times - 1:
            session.save_final_ticket(model, run)
            break
        start = time.time()
        events = forgetting_events(run.records[:run.epoch].t().cpu().numpy())
        forgetting_part = select_by_forgetting(events, config.data_prune, config.data_rate, run.state,
                                               config.threshold, session.data.train_number)
        aware_part = np.empty(0, dtype=np.int64)
        if run.state >= 1:
            if dense_predictions is None:
                dense_predictions = _train_split_predictions(session, session.paths.best(0))
            pruned_predictions = _train_split_predictions(session, session.paths.best(run.state))
            aware_part = session.data.train_indices[pruning_aware_examples(dense_predictions, pruned_predictions)]
        prac_set = np.union1d(forgetting_part, aware_part).astype(np.int64)
        LOG.info(f"* PrAC set after round {run.state}: {forgetting_part.size} by forgetting, "
                 f"{aware_part.size} pruning-aware, {prac_set.size} in the union "
                 f"({time.time() - start:.2f}s)")
        if prac_set.size == 0:
            LOG.info("* the PrAC set is empty: the next round keeps the previous training set")
            prac_set = run.sequence
        schedule = scaled_schedule(config.epochs, config.decreasing_lr, config.warmup, prac_set.size,
                                   session.data.train_number)
        run = run.next_round(schedule, prac_set)
        run.set_parts = {"forgetting_part": int(forgetting_part.size), "pruning_aware_part": int(aware_part.size)}
        run.records = session.new_records(schedule.epochs)
        run.early_bird = pruner.EarlyBird(config.eb_eps, config.queue_length, schedule.warmup)
        optimizer, scheduler = _new_round_optimizer(session, model, schedule, lr_rewind_steps=0)
        _save_training_set(session, run)
        session.save(model, optimizer, scheduler, run)
    LOG.info("done")


def _save_training_set(session: Session, run: RunState) -> None:
    atomic_write(session.paths.prac_set(run.state), lambda handle: np.save(handle, run.sequence))


def _train_split_predictions(session: Session, checkpoint_path: str) -> np.ndarray:
    """Labels a saved model predicts for the training split (split order, unaugmented, eval mode)."""
    checkpoint = session.load(checkpoint_path, "best checkpoint")
    require_keys(checkpoint, ("state_dict",), checkpoint_path, "best checkpoint")
    model = session.new_model(None)  # weights come from the checkpoint
    mask = pruner.extract_mask(checkpoint["state_dict"])
    if mask:
        pruner.apply_mask(model, mask)
    with weights_error(checkpoint_path, session.config):
        model.load_state_dict(checkpoint["state_dict"])
    indices = torch.as_tensor(session.data.train_indices, device=session.device)
    return predict(model, session.data.train, session.settings, indices).cpu().numpy()


# ============================================================================ retraining
def run_retrain(config: Config) -> None:
    """main_train.py: retrain a ticket from --init_dir weights and the --mask_dir mask."""
    session = Session(config, "retrain")
    if config.resume:
        model, optimizer, scheduler, run = session.resume(with_records=False)
    else:
        if not config.init_dir or not config.mask_dir:
            raise UserError("main_train.py needs --init_dir and --mask_dir (e.g. SAVE_DIR/1checkpoint.pth.tar)")
        base_seed = config.seed if config.seed is not None else fresh_seed()
        model = session.new_model(base_seed)
        init_weights = _init_weights(session.load(config.init_dir, "--init_dir"), config.init_dir)
        mask_source = session.load(config.mask_dir, "--mask_dir")
        state_dict = mask_source.get("state_dict", mask_source) if isinstance(mask_source, dict) else None
        mask = pruner.extract_mask(state_dict) if isinstance(state_dict, dict) else {}
        if not mask:
            raise UserError(f"--mask_dir {config.mask_dir} holds no *.weight_mask entries: it is a dense "
                            "(round 0) checkpoint or not a checkpoint; pick one of a pruned round")
        pruner.check_mask(model, mask, source=f"--mask_dir {config.mask_dir}")
        with weights_error(f"--init_dir {config.init_dir}", config):
            pruner.rewind(model, init_weights, mask)
        optimizer = make_optimizer(model, config.lr, config.momentum, config.weight_decay)
        scheduler = make_scheduler(optimizer, list(config.decreasing_lr))
        run = RunState(state=0, schedule=session.full_schedule(), sequence=session.data.train_indices.copy(),
                       base_seed=base_seed, init_weight=init_weights)
    LOG.info(f"retraining a ticket with {pruner.remaining_weights(model):.2f}% of conv weights remaining")
    session.train_round(model, optimizer, scheduler, run)
    session.finish_round(model, run)
    LOG.info("done")


def _init_weights(checkpoint: Any, path: str) -> StateDict:
    if not isinstance(checkpoint, dict):
        raise UserError(f"--init_dir {path} is not a checkpoint or state_dict")
    if "init_weight" in checkpoint:
        if checkpoint["init_weight"] is None:
            raise UserError(f"--init_dir {path} has an empty init_weight (a rewind_lt run saved before "
                            "its rewind epoch); use a later checkpoint or the epoch_*_rewind_weight.pt file")
        return pruner.dense_state_dict(checkpoint["init_weight"])
    if all(torch.is_tensor(v) for v in checkpoint.values()):
        return pruner.dense_state_dict(checkpoint)
    raise UserError(f"--init_dir {path} has no init_weight entry and is not a plain state_dict")
