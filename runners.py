"""The round loop shared by main_imp.py and main_PrAC_imp.py, the epoch loop under it (which
main_train.py uses too), and the small per-script plans that parameterise the rounds.

A run's whole state is one :class:`checkpoint.RunState`; :mod:`checkpoint` maps it to the
published checkpoint keys, so any checkpoint resumes exactly.
"""
import contextlib
import os
import re
import shlex
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import checkpoint as codec
import cli
import distributed
import pruner
from checkpoint import RunState, StateDict, atomic_copy, load_checkpoint, save_checkpoint
from cli import Config, resume_mismatches, run_identity
from dataset import Data, load_data, load_index_file
from durable import atomic_write, claim_save_dir
from models import build_model
from paths import RunPaths
from prac import (BatchHook, RoundSchedule, RoundStatistics, SelectionInput, SelectionSettings, build_rule,
                  next_training_set, pruning_aware_examples, scaled_schedule)
from outputs import EPOCH_FIELDS, LAYER_FIELDS, ROUND_FIELDS, ResultTable, plot_curves, plot_layers, save_run_info
from training import LoopSettings, evaluate, make_optimizer, make_scheduler, predict, set_float32_math, train_epoch
from utils import (LOG, STREAM_RANDOM_MASK, STREAM_RANDOM_PRUNE, STREAM_SELECT, STREAM_TRAIN, UserError, derived_seed,
                   describe_device, fresh_seed, make_generator, select_device, setup_logging)

# Evaluation batches at 32 px. Measured on a 2-core CPU (2026-11-24): ResNet-20s evaluates
# ~8x faster in batches of 128 than of 1000, whose activations fall out of cache; a GPU wants
# large batches. Larger images get proportionally fewer per batch (default_eval_batch_size).
CPU_EVAL_BATCH, CUDA_EVAL_BATCH = 128, 1000
EVAL_BATCH_REFERENCE_SIZE = 32  # px: the image side the two batch sizes above are for
MIN_EVAL_BATCH = 8
EpochCheck = Tuple[Optional[float], bool, Optional[float]]  # (Early-Bird distance, stop, its seconds)


def default_eval_batch_size(device: torch.device, image_size: int) -> int:
    """The evaluation batch when --eval_batch_size is not given: the batch above for 32 px
    images, scaled by the pixel count, so a batch holds as many activations at any image size
    (1000 images of 224 px would hold ~25 GB in VGG-16's first two layers; 20 hold 0.5 GB)."""
    base = CUDA_EVAL_BATCH if device.type == "cuda" else CPU_EVAL_BATCH
    scaled = base * EVAL_BATCH_REFERENCE_SIZE ** 2 // max(image_size, 1) ** 2
    return max(MIN_EVAL_BATCH, min(base, scaled))


def shared_fresh_seed() -> int:
    """A fresh seed, rank 0's on every rank: the ranks must draw the same permutations."""
    return distributed.broadcast_object(fresh_seed())


@dataclass
class RunEvents:
    """What a caller (a test, a notebook, a monitor) may follow without patching the loop:
    each list's callables are called in order. ``round_start(session, model, run)`` before a
    round trains (the model holds its starting weights); ``epoch_row(session, row)`` after an
    epoch's row is written; ``checkpoint(session, run)`` after a checkpoint is durable (rank 0
    has written it); ``rewind_snapshot(session, weights)`` when round 0 keeps its rewind point."""

    round_start: List[Callable[["Session", nn.Module, RunState], None]] = field(default_factory=list)
    epoch_row: List[Callable[["Session", Dict[str, Any]], None]] = field(default_factory=list)
    checkpoint: List[Callable[["Session", RunState], None]] = field(default_factory=list)
    rewind_snapshot: List[Callable[["Session", StateDict], None]] = field(default_factory=list)


def emit(callbacks: Sequence[Callable[..., None]], *args: Any) -> None:
    for callback in callbacks:
        callback(*args)


def copy_state(model: nn.Module) -> StateDict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class Session:
    """What a run works with: config, device, data, file names, result tables, loop settings.

    Under torchrun every rank has one; rank 0 alone holds the save_dir lock and writes.
    """

    def __init__(self, config: Config, script: str, events: Optional[RunEvents] = None):
        self.config = config
        self.script = script  # the plan's: what args.json and the checkpoints record
        self.events = events or RunEvents()
        distributed.init_from_env(use_cuda=config.device != "cpu" and torch.cuda.is_available())
        self.lock = None
        try:
            if distributed.is_main():
                try:
                    os.makedirs(config.save_dir, exist_ok=True)
                except OSError as error:
                    raise UserError(f"--save_dir {config.save_dir} cannot be created ({error})") from None
                # held for the run's life (released by close(), or by the OS if the process dies)
                self.lock = claim_save_dir(config.save_dir)
            self.paths = RunPaths(config.save_dir)
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        config = self.config
        if not config.resume and distributed.is_main():
            self._claim_fresh_save_dir()
        # The other ranks read save_dir (a resume's checkpoint) only once rank 0 has claimed it.
        distributed.barrier()
        setup_logging(config.save_dir if distributed.is_main() else None, quiet=not distributed.is_main())
        gpu = distributed.local_rank() if distributed.launched() else config.gpu
        self.device = select_device(config.device, gpu)
        LOG.info(f"device: {describe_device(self.device)}")
        if self.device.type == "cuda":
            # Seeded runs stay reproducible (as the published setup_seed); unseeded ones
            # let cuDNN pick the fastest kernels for the fixed batch shapes.
            torch.backends.cudnn.deterministic = config.seed is not None
            torch.backends.cudnn.benchmark = config.seed is None
        set_float32_math(config.precision)
        if config.compile and self.device.type != "cuda":
            LOG.info("--compile is used on CUDA only; running eagerly on the CPU")
        self.data: Data = load_data(config.dataset, config.data, config.split_file, mode=config.data_mode,
                                    image_size=config.image_size, workers=config.workers).to(self.device)
        LOG.info(f"data: {config.dataset} ({self.data.mode}) from {self.data.source}: {self.data.train_number} train, "
                 f"{len(self.data.val_indices)} validation, {len(self.data.test)} test images")
        self.val_indices = torch.as_tensor(self.data.val_indices, device=self.device)
        eval_batch_size = config.eval_batch_size
        if eval_batch_size is None:
            eval_batch_size = default_eval_batch_size(self.device, self.data.info.image_size)
        self.settings = LoopSettings(batch_size=config.batch_size, eval_batch_size=eval_batch_size,
                                     precision=config.precision, channels_last=config.use_channels_last,
                                     print_freq=config.print_freq,
                                     progress=not config.no_progress and distributed.is_main())
        if distributed.world() > 1:
            LOG.info(f"distributed: {distributed.world()} processes ({torch.distributed.get_backend()}), "
                     f"global batch {config.batch_size}")
        self.epoch_table = ResultTable(self.paths.epochs_csv, EPOCH_FIELDS)
        self.round_table = ResultTable(self.paths.rounds_csv, ROUND_FIELDS)
        self.layer_table = ResultTable(self.paths.layers_csv, LAYER_FIELDS)
        self.identity = run_identity(config)  # what a resume checks against (input files by sha256)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        distributed.close()

    def _claim_fresh_save_dir(self) -> None:
        """A fresh run never overwrites a run that has a checkpoint; the leftovers of one that
        died before its first checkpoint (log, tables, run info) are cleared."""
        existing = self.paths.newest_checkpoint()
        if existing is not None:
            raise UserError(f"--save_dir {self.config.save_dir} already holds a run; resume it with --resume "
                            f"(newest checkpoint: {existing}) or choose a new --save_dir (nothing was overwritten)")
        leftovers = [p for p in (self.paths.epochs_csv, self.paths.rounds_csv, self.paths.layers_csv)
                     if os.path.exists(p)]
        for path in leftovers:
            os.remove(path)
        if leftovers:
            print(f"note: --save_dir {self.config.save_dir} held a run that stopped before its first "
                  "checkpoint; starting it afresh")

    def save_run_info(self, extra: Optional[Dict[str, Any]] = None) -> None:
        """args.json for a fresh run; args_resume.json once a resume has been checked."""
        if not distributed.is_main():
            return
        world = {"world_size": distributed.world()} if distributed.world() > 1 else {}
        path = self.paths.run_info.replace(".json", "_resume.json") if self.config.resume else self.paths.run_info
        save_run_info(path, self.script, self.config.to_dict(), describe_device(self.device),
                      {"data_source": self.data.source, "data_mode": self.data.mode, **world, **(extra or {})})

    def new_model(self, base_seed: Optional[int]) -> nn.Module:
        """The configured model on the device; seeded initialisation when ``base_seed`` is given.

        The initialisation consumes torch's global RNG as the published scripts do after
        setup_seed(seed). A model whose weights are loaded next passes None and is built
        under a forked RNG, so building it leaves the caller's random state alone.
        """
        info = self.data.info
        with torch.random.fork_rng(devices=[]) if base_seed is None else contextlib.nullcontext():
            if base_seed is not None:
                torch.manual_seed(base_seed)
            model = build_model(self.config.arch, info.num_classes, info.mean, info.std).to(self.device)
        if self.settings.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def forward_model(self, model: nn.Module, train: bool = False) -> nn.Module:
        """What runs the forward pass: under torchrun the training model is wrapped in DDP
        (built per round, as pruning replaces the parameters); evaluation uses the plain
        model, whose ranks run different numbers of batches."""
        if train and distributed.world() > 1:
            # broadcast_buffers=False: DDP would otherwise send every buffer, the pruning masks
            # included, before every forward (ResNet-18: ~43 MiB a step). Masks change only
            # between rounds (DDP is built per round and syncs them then); batch-norm running
            # statistics are rank 0's after train_round's sync_buffers at the end of each epoch,
            # exactly as with the per-step broadcast, and training mode never reads them.
            model = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda"
                                            else None, broadcast_buffers=False)
        if self.config.compile and self.device.type == "cuda":
            return torch.compile(model)  # type: ignore[return-value]
        return model

    def full_schedule(self) -> RoundSchedule:
        return RoundSchedule(self.config.epochs, list(self.config.decreasing_lr), self.config.warmup)

    def load(self, path: str, what: str) -> Any:
        return load_checkpoint(path, what, trust=self.config.trust_checkpoints)


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


# ============================================================================ checkpoints
def save_run(session: Session, plan: "Plan", model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
             run: RunState, is_best: bool = False) -> None:
    """Writes the round's best file (when this epoch is the best) and then its checkpoint.

    The order matters: a run killed between the two resumes from the previous checkpoint
    and redoes this epoch, so the best file can never be older than the checkpoint says.
    The contents are serialised once: on a best epoch the checkpoint is a copy of the best
    file's bytes (one device-to-host copy and one pickling while the GPU waits, not two).
    """
    if distributed.is_main():
        contents = codec.encode(run, model, optimizer, scheduler, session.identity, session.script)
        checkpoint_path = session.paths.checkpoint(plan.tag(run))
        if is_best:
            best_path = session.paths.best(plan.tag(run))
            save_checkpoint(contents, best_path)
            atomic_copy(best_path, checkpoint_path)
        else:
            save_checkpoint(contents, checkpoint_path)
    # The other ranks read the best files (pruning-aware predictions, pt rewinding) later.
    distributed.barrier()
    emit(session.events.checkpoint, session, run)


def new_optimizer(session: Session, model: nn.Module, schedule: RoundSchedule,
                  lr_rewind_steps: int = 0) -> Tuple[torch.optim.Optimizer, Any]:
    """A fresh SGD optimiser and MultiStepLR schedule, stepped ``lr_rewind_steps`` times
    (main_imp.py's learning-rate rewinding)."""
    config = session.config
    optimizer = make_optimizer(model, config.lr, config.momentum, config.weight_decay)
    scheduler = make_scheduler(optimizer, schedule.milestones)
    with warnings.catch_warnings():
        # Stepping before any optimiser step is the point here (learning-rate rewinding).
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
        for _ in range(lr_rewind_steps):
            scheduler.step()
    return optimizer, scheduler


def restart_command(script: str) -> str:
    """The command that started this process, without ``--resume``: what starts afresh a run
    that died before its first checkpoint. Generic words when not run as ``script``."""
    argv = sys.argv
    if not argv or os.path.basename(argv[0]) != script:
        return "the same command without --resume"
    return "the same command without --resume: " + shlex.join(
        ["python", argv[0], *[arg for arg in argv[1:] if arg != "--resume"]])


def resume_run(session: Session, plan: "Plan") -> Tuple[nn.Module, torch.optim.Optimizer, Any, RunState]:
    """Rebuilds model, optimiser, schedule and run state from --checkpoint (ours or published)."""
    config = session.config
    path = str(config.checkpoint or session.paths.newest_checkpoint() or "")
    if not path:
        raise UserError(f"--resume found no checkpoint in {config.save_dir}: the run stopped before its first "
                        f"checkpoint (or never started); start it afresh with {restart_command(session.script)}")
    fallback_seed = config.seed if config.seed is not None else shared_fresh_seed()
    decoded = codec.decode(session.load(path, "checkpoint"), path, fallback_seed, session.full_schedule(),
                           session.data.train_indices,
                           lambda size: scaled_schedule(config.epochs, config.decreasing_lr, config.warmup, size,
                                                        session.data.train_number))
    plan.check_resumable(decoded, path)
    run = decoded.run
    model = session.new_model(run.base_seed)
    mask = pruner.extract_mask(decoded.model_state)
    if mask:
        pruner.check_mask(model, mask, source=f"checkpoint {path}")
        pruner.apply_mask(model, mask)
    with weights_error(f"checkpoint {path}", config):
        model.load_state_dict(decoded.model_state)
    optimizer, scheduler = new_optimizer(session, model, run.schedule)
    try:
        optimizer.load_state_dict(decoded.optimizer_state)
        scheduler.load_state_dict(decoded.scheduler_state)
    except (ValueError, KeyError, RuntimeError) as error:
        raise UserError(f"checkpoint {path}: its optimiser state does not fit this model ({error})") from None
    plan.restore(run, decoded, path)
    # Result rows past the checkpoint are recomputed, so drop them now.
    if distributed.is_main():
        session.epoch_table.keep_only(lambda row: int(row["round"]) < run.round or
                                      (int(row["round"]) == run.round and int(row["epoch"]) <= run.epoch))
        session.round_table.keep_only(lambda row: int(row["round"]) < run.round)
        session.layer_table.keep_only(lambda row: int(row["round"]) < run.round)
    session.save_run_info()
    LOG.info(f"resumed from {path}: {plan.label(run)}, {run.epoch}/{run.schedule.epochs} epochs done")
    return model, optimizer, scheduler, run


# ============================================================================ the epoch loop
def train_round(session: Session, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                run: RunState, plan: "Plan") -> None:
    """Runs the round's remaining epochs: train, evaluate, step the schedule, run the plan's
    after-epoch checks, write the result row, the best file and the checkpoint."""
    config, data = session.config, session.data
    indices = torch.as_tensor(run.train_indices, device=session.device)
    forward_model = session.forward_model(model)
    train_model = session.forward_model(model, train=True) if distributed.world() > 1 else forward_model
    while not run.round_finished and run.epoch < run.schedule.epochs:
        epoch = run.epoch
        lr = optimizer.param_groups[0]["lr"]
        generator = make_generator(session.device, run.base_seed, STREAM_TRAIN, run.round, epoch)
        stats = train_epoch(train_model, optimizer, data.train, indices, generator, session.settings,
                            epoch=epoch, crop_padding=data.info.crop_padding,
                            warmup_epochs=run.schedule.warmup, base_lr=config.lr,
                            on_batch=traced(plan.batch_hook(run, epoch), f"trained.r{run.round}.e{epoch}"),
                            description=f"{plan.label(run)} epoch {epoch + 1}/{run.schedule.epochs}")
        distributed.sync_buffers(model)
        plan.gather_records(run, epoch)
        val_acc = evaluate(forward_model, data.train, session.settings, session.val_indices)
        test_acc = evaluate(forward_model, data.test, session.settings)
        scheduler.step()
        run.results["train_acc"].append(stats.accuracy)
        run.results["val_acc"].append(val_acc)
        run.results["test_acc"].append(test_acc)
        # The first epoch always counts, so a round whose validation accuracy never
        # rises above 0 still has a best checkpoint.
        is_best = val_acc > run.best_val_acc or epoch == 0
        run.best_val_acc = max(run.best_val_acc, val_acc)
        distance, stop, check_seconds = plan.after_epoch(run, model, epoch)
        run.epoch = epoch + 1
        run.round_steps += stats.steps
        run.round_examples += stats.examples
        run.cumulative_steps += stats.steps
        run.round_seconds += stats.seconds
        if stop:
            run.round_finished, run.eb_stop_epoch = True, epoch + 1
        # The row goes first: if the run dies before the checkpoint, resuming drops it.
        row = {"round": run.round, "epoch": epoch + 1, "lr": lr, "train_acc": stats.accuracy,
               "val_acc": val_acc, "test_acc": test_acc, "remaining_weights": pruner.remaining_weights(model),
               "train_examples": stats.examples, "round_steps": run.round_steps,
               "round_examples_seen": run.round_examples, "cumulative_steps": run.cumulative_steps,
               "eb_distance": distance, "eb_seconds": check_seconds, "seconds": stats.seconds}
        if distributed.is_main():
            session.epoch_table.append(row)
        emit(session.events.epoch_row, session, row)
        save_run(session, plan, model, optimizer, scheduler, run, is_best=is_best)
        LOG.info(f"{plan.label(run)} epoch {epoch + 1}/{run.schedule.epochs}: lr {lr:.4g} "
                 f"train {stats.accuracy:.2f} val {val_acc:.2f} test {test_acc:.2f} "
                 f"({stats.examples / max(stats.seconds, 1e-9):.0f} img/s)"
                 + (f" mask distance {distance:.4f}" if distance is not None else "")
                 + (" -> Early-Bird stop" if stop else ""))


def traced(hook: Optional[BatchHook], name: str) -> Optional[BatchHook]:
    """``hook``, which with PRAC_LTH_TRACE set also saves the dataset indices this rank has
    trained so far in the epoch (the test of distributed runs counts them)."""
    if not os.environ.get(distributed.TRACE_ENV):
        return hook
    seen = []

    def tracing(indices: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        seen.append(indices.cpu())
        distributed.trace(name, torch.cat(seen))  # rewritten each batch: a test aid, not a hot path
        if hook is not None:
            hook(indices, logits, targets)
    return tracing


def finish_round(session: Session, plan: "Plan", model: nn.Module, run: RunState) -> Tuple[float, float]:
    """Reports the round: plots, round row and per-layer rows (rank 0), test accuracy at the
    best validation epoch."""
    val = run.results["val_acc"]
    if not val:
        raise UserError(f"{plan.label(run)} has no finished epoch to report")
    best = int(np.argmax(val))
    best_val, test_at_best = val[best], run.results["test_acc"][best]
    remaining = pruner.remaining_weights(model)
    if distributed.is_main():
        config = session.config
        plot_curves(run.results, session.paths.curves(plan.tag(run)),
                    title=f"{config.arch} {config.dataset} {plan.label(run)}")
        session.round_table.append({
            "round": run.round, "remaining_weights": remaining, "train_examples": len(run.train_indices),
            "forgetting_part": run.set_parts.get("forgetting_part"),
            "pruning_aware_part": run.set_parts.get("pruning_aware_part"),
            "epochs_planned": run.schedule.epochs, "epochs_run": run.epoch, "eb_stop_epoch": run.eb_stop_epoch,
            "steps": run.round_steps, "examples_seen": run.round_examples, "cumulative_steps": run.cumulative_steps,
            "best_val_acc": best_val, "test_acc_at_best_val": test_at_best, "seconds": run.round_seconds,
            "select_rule": plan.select_rule})
        # The layer rows go after the round row: a resume drops both of an unfinished round.
        session.layer_table.extend([{"round": run.round, "layer": name, "weights": weights, "remaining": kept}
                                    for name, weights, kept in pruner.layer_counts(model)])
        plot_layers(session.layer_table.rows(), session.paths.layers_plot,
                    title=f"{config.arch} {config.dataset}: remaining weights per layer")
    LOG.info(f"* {plan.label(run)}: remaining weights {remaining:.2f}%, best validation {best_val:.2f} "
             f"at epoch {best + 1}, test accuracy there {test_at_best:.2f}")
    return best_val, test_at_best


# ============================================================================ plans
class Plan:
    """What varies between the scripts, each of which is a plan run by :func:`run_rounds`:
    its name, how its first round starts, what it does during and between rounds."""

    script = ""
    records_per_example = False  # its checkpoints hold PrAC's per-example records
    lr_rewind_steps = 0
    select_rule: Optional[str] = None  # the rounds.csv column

    def __init__(self, session: Session):
        self.session = session
        self.config = session.config

    @property
    def rounds(self) -> int:
        return self.config.pruning_times

    def tag(self, run: RunState) -> Optional[int]:
        """The round number in file names."""
        return run.round

    def label(self, run: RunState) -> str:
        return f"round {run.round}"

    def start(self, base_seed: int) -> Tuple[nn.Module, RunState]:
        """A fresh run's model and state, after its run info is written."""
        raise NotImplementedError

    def check_model(self, model: nn.Module) -> None:
        """Refuses, before anything is trained, a model the run's settings do not fit."""

    def announce(self, run: RunState, model: nn.Module) -> None:
        """The log line that opens a round."""

    def prepare_round(self, run: RunState) -> None:
        """Creates what the round records, when a fresh round (not a resume) starts."""

    def end_round(self, run: RunState, model: nn.Module, last: bool) -> None:
        """What follows a reported round (the ticket search prunes and rewinds here)."""

    def next_round(self, run: RunState) -> RunState:
        raise NotImplementedError

    def check_resumable(self, decoded: codec.Decoded, path: str) -> None:
        """Refuses, before anything is written, a checkpoint of another script or of a run
        whose data, split, architecture or meaning-changing flags differ from this one's."""
        mismatches = resume_mismatches(decoded.config or {}, self.config, decoded.script, self.script)
        if decoded.script is None and decoded.is_prac != self.records_per_example:
            writer = cli.SEARCH if decoded.is_prac else "main_imp.py or main_train.py"
            mismatches.insert(0, f"script: a checkpoint of {writer}, now {self.script}")
        if mismatches:
            raise UserError(f"checkpoint {path} belongs to another run ({'; '.join(mismatches)}); resume with "
                            "the settings it was written with, or start a new --save_dir (nothing was written)")

    def restore(self, run: RunState, decoded: codec.Decoded, path: str) -> None:
        """Rebuilds the plan's own part of the run state from a checkpoint."""

    def batch_hook(self, run: RunState, epoch: int) -> Optional[BatchHook]:
        return None

    def gather_records(self, run: RunState, epoch: int) -> None:
        """Under torchrun: merges the ranks' records of ``epoch`` so every rank holds all."""

    def after_epoch(self, run: RunState, model: nn.Module, epoch: int) -> EpochCheck:
        return None, False, None

    def save_round_files(self, run: RunState) -> None:
        """Files that describe a round, written before its first checkpoint."""


class SearchPlan(Plan):
    """Rounds of ticket search: the rewind snapshot of round 0, pruning and rewinding."""

    def start(self, base_seed: int) -> Tuple[nn.Module, RunState]:
        session, config = self.session, self.config
        model = session.new_model(base_seed)
        self.check_model(model)  # before anything is written
        session.save_run_info()
        train_indices, schedule = self.first_round()
        # rewind_lt has no rewind point until epoch --rewind_epoch of round 0 has run.
        rewind_weights = None if config.prune_type == "rewind_lt" else copy_state(model)
        return model, RunState(round=0, schedule=schedule, train_indices=train_indices, base_seed=base_seed,
                               rewind_weights=rewind_weights)

    def check_model(self, model: nn.Module) -> None:
        pruner.check_scope(model, self.config.scope)

    def announce(self, run: RunState, model: nn.Module) -> None:
        LOG.info(f"=== round {run.round}/{self.rounds - 1}: remaining weights "
                 f"{pruner.remaining_weights(model):.2f}%, {len(run.train_indices)} training examples, "
                 f"{run.schedule.epochs} epochs")

    def after_epoch(self, run: RunState, model: nn.Module, epoch: int) -> EpochCheck:
        if run.round == 0 and epoch == self.config.rewind_epoch:
            rewind_weights = copy_state(model)
            if distributed.is_main():
                save_checkpoint(rewind_weights, self.session.paths.rewind_weight(epoch))
            emit(self.session.events.rewind_snapshot, self.session, rewind_weights)
            if self.config.prune_type == "rewind_lt":
                run.rewind_weights = rewind_weights
        return None, False, None

    def end_round(self, run: RunState, model: nn.Module, last: bool) -> None:
        """Prunes to the round's ticket mask and rewinds; after the last round, saves the final ticket."""
        mask = self.ticket_mask(run, model)
        with weights_error("rewind weights", self.config):
            pruner.rewind(model, self.rewind_target(run, model), mask)
        if last:
            paths = self.session.paths
            if distributed.is_main():
                save_checkpoint(codec.encode_final_ticket(run, model), paths.final_ticket())
            LOG.info(f"final ticket ({pruner.remaining_weights(model):.2f}% weights) saved to {paths.final_ticket()}")

    def first_round(self) -> Tuple[np.ndarray, RoundSchedule]:
        """Round 0 trains on the whole training split, or on --train_subset with epochs scaled."""
        config, data = self.config, self.session.data
        if config.train_subset:
            subset = load_index_file(config.train_subset, data)
            LOG.info(f"training on the {subset.size} examples of {config.train_subset}")
            return subset, scaled_schedule(config.epochs, config.decreasing_lr, config.warmup,
                                           subset.size, data.train_number)
        return data.train_indices.copy(), self.session.full_schedule()

    def ticket_mask(self, run: RunState, model: nn.Module) -> pruner.Mask:
        raise NotImplementedError

    def rewind_target(self, run: RunState, model: nn.Module) -> StateDict:
        if run.rewind_weights is None:
            # Published runs crash here; a round 0 that stopped before --rewind_epoch has no
            # rewind point, so the round's final weights stand in for it.
            LOG.info("round 0 ended before --rewind_epoch: rewinding to its final weights instead")
            run.rewind_weights = pruner.dense_state_dict(copy_state(model))
        return run.rewind_weights


class ImpPlan(SearchPlan):
    """main_imp.py: every round trains the same examples for the same epochs; masks come from
    magnitude (or random) pruning; lt / rewind_lt rewind to the saved weights, pt restarts
    from the best dense checkpoint; the learning rate is rewound --rewind_epoch steps."""

    script = cli.IMP

    def __init__(self, session: Session):
        super().__init__(session)
        self.lr_rewind_steps = self.config.rewind_epoch

    def ticket_mask(self, run: RunState, model: nn.Module) -> pruner.Mask:
        if self.config.random_prune:
            generator = make_generator(torch.device("cpu"), run.base_seed, STREAM_RANDOM_PRUNE, run.round)
            pruner.random_prune(model, self.config.rate, generator, self.config.scope)
        else:
            pruner.magnitude_prune(model, self.config.rate, self.config.scope)
        return pruner.extract_mask(model.state_dict())

    def rewind_target(self, run: RunState, model: nn.Module) -> StateDict:
        if self.config.prune_type == "pt":
            dense_best = self.session.load(self.session.paths.best(0), "best dense checkpoint")
            return pruner.dense_state_dict(dense_best["state_dict"])
        return super().rewind_target(run, model)

    def next_round(self, run: RunState) -> RunState:
        return run.next_round(run.schedule, run.train_indices)


class PracPlan(SearchPlan):
    """main_PrAC_imp.py: per-example statistics through the batch hook, Early-Bird rounds
    whose ticket is the last candidate mask, and the next round's examples from the
    --select rule with epochs scaled by the set's size."""

    script = cli.SEARCH
    records_per_example = True

    def __init__(self, session: Session):
        super().__init__(session)
        config = self.config
        self.select_rule = config.select
        self.rule = build_rule(config.select, SelectionSettings(config.data_prune, config.threshold,
                                                                config.data_rate, config.score_epochs))
        self._dense_predictions: Optional[np.ndarray] = None

    def new_statistics(self, epochs: int) -> RoundStatistics:
        return RoundStatistics.empty(epochs, len(self.session.data.train), self.session.device,
                                     self.config.score_epochs if self.rule.uses_el2n else None)

    def prepare_round(self, run: RunState) -> None:
        if run.statistics is None:
            run.statistics = self.new_statistics(run.schedule.epochs)
        if run.early_bird is None:
            run.early_bird = pruner.EarlyBird(self.config.eb_eps, self.config.queue_length, run.schedule.warmup)

    def restore(self, run: RunState, decoded: codec.Decoded, path: str) -> None:
        examples = len(self.session.data.train)
        records = decoded.records
        assert records is not None and decoded.early_bird is not None  # check_resumable made sure
        if records.shape[0] != run.epoch or (run.epoch and records.shape[1] != examples):
            raise UserError(f"checkpoint {path}: its per-example records are {tuple(records.shape[::-1])}, "
                            f"expected ({examples}, {run.epoch}); is it from this data set?")
        run.statistics = self.new_statistics(run.schedule.epochs)
        if run.epoch:
            run.statistics.correctness.values[:run.epoch] = records.to(self.session.device)
        if run.statistics.el2n is not None:
            if decoded.el2n_sums is None and run.epoch > 0:
                raise UserError(f"checkpoint {path} holds no EL2N scores; resume it with the --select it was "
                                "written with")
            if decoded.el2n_sums is not None:
                run.statistics.el2n.sums.copy_(decoded.el2n_sums.to(self.session.device))
        saved = decoded.early_bird
        last_mask = saved["last_mask"]
        if last_mask is not None:  # published runs set it only after an epoch
            last_mask = {k: v.to(self.session.device) for k, v in last_mask.items()}
        run.early_bird = pruner.EarlyBird(self.config.eb_eps, self.config.queue_length, run.schedule.warmup,
                                          queue=saved["queue"], last_mask=last_mask,
                                          start_record=saved["start_record"])
        if not saved["stop_known"]:
            # A published checkpoint does not say whether Early-Bird stopped the round;
            # its queue does (the published resume trained on after a stop).
            run.round_finished = bool(run.early_bird.queue.max() < self.config.eb_eps)

    def batch_hook(self, run: RunState, epoch: int) -> Optional[BatchHook]:
        assert run.statistics is not None
        return run.statistics.batch_hook(epoch)

    def gather_records(self, run: RunState, epoch: int) -> None:
        assert run.statistics is not None
        if distributed.world() > 1:
            run.statistics.gather(epoch)

    def after_epoch(self, run: RunState, model: nn.Module, epoch: int) -> EpochCheck:
        super().after_epoch(run, model, epoch)
        assert run.early_bird is not None
        start = time.time()
        candidate = pruner.candidate_mask(model, self.config.rate, self.config.scope)
        if distributed.world() > 1:
            # The ranks hold the same weights, so the same mask; two numbers per layer
            # (kept count, sum of kept positions) check it with two small all-reduces.
            distributed.assert_same(mask_fingerprint(candidate), "the Early-Bird candidate mask")
        remaining = pruner.unpruned_count(model, self.config.scope)
        distance, stop = run.early_bird.update(epoch, candidate, remaining)
        return distance, stop, time.time() - start

    def ticket_mask(self, run: RunState, model: nn.Module) -> pruner.Mask:
        # The ticket is the last candidate mask; recomputing it gives the same mask, also
        # after a resume at the end of a round.
        return pruner.candidate_mask(model, self.config.rate, self.config.scope)

    def pruning_aware(self, round_number: int) -> np.ndarray:
        """Dataset indices whose predicted labels differ between the best dense model and
        this round's best model (none after the dense round itself)."""
        paths, data = self.session.paths, self.session.data
        if round_number < 1:
            return np.empty(0, dtype=np.int64)
        if self._dense_predictions is None:
            self._dense_predictions = train_split_predictions(self.session, paths.best(0))
        pruned = train_split_predictions(self.session, paths.best(round_number))
        return data.train_indices[pruning_aware_examples(self._dense_predictions, pruned)]

    def next_round(self, run: RunState) -> RunState:
        assert run.statistics is not None
        start = time.time()
        data = self.session.data
        selection_seed = derived_seed(run.base_seed, STREAM_SELECT, run.round)
        target_size = (matched_set_size(self.config.match_sizes, run.round + 1, data.train_number)
                       if self.config.match_sizes else None)
        inputs = SelectionInput(round=run.round, epochs_run=run.epoch, statistics=run.statistics,
                                train_indices=data.train_indices,
                                pruning_aware=lambda: self.pruning_aware(run.round),
                                generator=np.random.default_rng(selection_seed), target_size=target_size)
        selection = self.rule.select(inputs)
        indices, fell_back = next_training_set(selection, run.train_indices)
        distributed.trace(f"records.r{run.round}", run.statistics.correctness.values[:run.epoch].t())
        distributed.trace(f"selected.r{run.round}", indices)
        parts = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in selection.parts.items())
        if target_size is not None:
            parts = f"the size of round {run.round + 1}'s set in {self.config.match_sizes}"
        LOG.info(f"* {self.config.select} set after round {run.round}: {selection.indices.size} examples "
                 f"({parts}; {time.time() - start:.2f}s)")
        if fell_back:
            LOG.info("* the selected set is empty: the next round keeps the previous training set")
        schedule = scaled_schedule(self.config.epochs, self.config.decreasing_lr, self.config.warmup,
                                   indices.size, data.train_number)
        following = run.next_round(schedule, indices, selection.parts)
        self.prepare_round(following)
        return following

    def save_round_files(self, run: RunState) -> None:
        if distributed.is_main():
            atomic_write(self.session.paths.prac_set(run.round),
                         lambda handle: np.save(handle, np.asarray(run.train_indices, dtype=np.int64)))


def matched_set_size(run_dir: str, round_number: int, train_number: int) -> int:
    """How many examples the PrAC run in ``run_dir`` trained on in round ``round_number``:
    the length of its ``{k}prac_set.npy``, else the round's ``train_examples`` in its rounds.csv."""
    paths = RunPaths(run_dir)
    size = None
    if os.path.isfile(paths.prac_set(round_number)):
        try:
            size = int(np.load(paths.prac_set(round_number), mmap_mode="r", allow_pickle=False).shape[0])
        except (OSError, ValueError) as error:
            raise UserError(f"--match_sizes: {paths.prac_set(round_number)} cannot be read ({error})") from None
    else:
        rows = [row for row in ResultTable(paths.rounds_csv, ROUND_FIELDS).rows()
                if row.get("round") == str(round_number) and row.get("train_examples")]
        if rows:
            size = int(rows[-1]["train_examples"])
    if size is None:
        raise UserError(f"--match_sizes {run_dir} records no training set for round {round_number} (neither "
                        f"{os.path.basename(paths.prac_set(round_number))} nor a rounds.csv row): has that "
                        f"PrAC run reached round {round_number}?")
    if size > train_number:
        raise UserError(f"--match_sizes {run_dir}: its round-{round_number} set has {size} examples, more than "
                        f"this run's {train_number} training examples; is it a run of another data set?")
    return size


def mask_fingerprint(mask: pruner.Mask) -> torch.Tensor:
    """Per layer, the number of kept weights and the sum of their flat positions (exact in
    float64 for any layer under 2**26 weights)."""
    values = []
    for layer in mask.values():
        kept = layer.detach().flatten().double()
        values += [kept.sum(), (kept * torch.arange(kept.numel(), dtype=torch.float64, device=kept.device)).sum()]
    return torch.stack(values) if values else torch.zeros(1)


def train_split_predictions(session: Session, checkpoint_path: str) -> np.ndarray:
    """Labels a saved model predicts for the training split (split order, unaugmented, eval mode)."""
    saved = session.load(checkpoint_path, "best checkpoint")
    if not isinstance(saved, dict) or "state_dict" not in saved:
        raise UserError(f"best checkpoint {checkpoint_path} holds no state_dict")
    model = session.new_model(None)  # weights come from the checkpoint
    mask = pruner.extract_mask(saved["state_dict"])
    if mask:
        pruner.apply_mask(model, mask)
    with weights_error(checkpoint_path, session.config):
        model.load_state_dict(saved["state_dict"])
    indices = torch.as_tensor(session.data.train_indices, device=session.device)
    return predict(model, session.data.train, session.settings, indices).cpu().numpy()


# ============================================================================ the round loop
def run_rounds(session: Session, plan: Plan) -> None:
    """Every script's loop: train a round, report it, end it (prune and rewind, for a search),
    choose the next round's examples and schedule; ``plan.rounds`` rounds, resumable after
    any write."""
    config = session.config
    if config.resume:
        model, optimizer, scheduler, run = resume_run(session, plan)
        plan.check_model(model)
    else:
        model, run = plan.start(config.seed if config.seed is not None else shared_fresh_seed())
        optimizer, scheduler = new_optimizer(session, model, run.schedule)
        plan.prepare_round(run)
        plan.save_round_files(run)
        save_run(session, plan, model, optimizer, scheduler, run)
    while run.round < plan.rounds:
        plan.prepare_round(run)
        plan.announce(run, model)
        emit(session.events.round_start, session, model, run)
        train_round(session, model, optimizer, scheduler, run, plan)
        finish_round(session, plan, model, run)
        last = run.round == plan.rounds - 1
        plan.end_round(run, model, last)
        if last:
            break
        run = plan.next_round(run)
        optimizer, scheduler = new_optimizer(session, model, run.schedule, plan.lr_rewind_steps)
        plan.save_round_files(run)
        save_run(session, plan, model, optimizer, scheduler, run)
    LOG.info("done")


def run_script(plan_class: type, config: Config, events: Optional[RunEvents] = None) -> None:
    with Session(config, plan_class.script, events) as session:
        run_rounds(session, plan_class(session))


def run_imp(config: Config, events: Optional[RunEvents] = None) -> None:
    """main_imp.py: iterative magnitude pruning (lt | rewind_lt | pt, or random pruning)."""
    run_script(ImpPlan, config, events)


def run_prac_imp(config: Config, events: Optional[RunEvents] = None) -> None:
    """main_PrAC_imp.py: IMP with Early-Bird rounds trained on the --select rule's sets."""
    run_script(PracPlan, config, events)


def run_retrain(config: Config, events: Optional[RunEvents] = None) -> None:
    """main_train.py: one round training a ticket on the full training split (RetrainPlan)."""
    run_script(RetrainPlan, config, events)


# ============================================================================ retraining
class RetrainPlan(Plan):
    """main_train.py: one round on the full training split, from the ticket it is given.

    --init_dir and --mask_dir: the ticket. --mask_dir alone: the mask from a fresh seeded
    initialisation (the random re-initialisation control). --random_mask with --mask_dir: a
    seeded random mask of the ticket's per-layer counts (the random-mask control), on the
    --init_dir weights. --init_dir alone: those weights, dense. Neither: the dense network
    from a seeded initialisation.
    """

    script = cli.RETRAIN
    rounds = 1  # type: ignore[assignment]

    def tag(self, run: RunState) -> Optional[int]:
        return None  # main_train.py's files carry no round number

    def label(self, run: RunState) -> str:
        return "retraining"

    def start(self, base_seed: int) -> Tuple[nn.Module, RunState]:
        session, config = self.session, self.config
        model = session.new_model(base_seed)
        init_weights = (_init_weights(session.load(config.init_dir, "--init_dir"), config.init_dir)
                        if config.init_dir else pruner.dense_state_dict(copy_state(model)))
        mask, source_round = _ticket_mask(session, model) if config.mask_dir else ({}, None)
        if mask and config.random_mask:
            # open_lth's randomly_prune: the ticket's per-layer counts, positions at random
            mask = pruner.random_mask_like(mask, make_generator(torch.device("cpu"), base_seed, STREAM_RANDOM_MASK))
        with weights_error(f"--init_dir {config.init_dir}" if config.init_dir else "the model", config):
            if mask:
                pruner.rewind(model, init_weights, mask)
            else:
                model.load_state_dict(init_weights)
        session.save_run_info({"ticket": _ticket_record(config, source_round)})
        return model, RunState(round=0, schedule=session.full_schedule(),
                               train_indices=session.data.train_indices.copy(), base_seed=base_seed,
                               rewind_weights=init_weights)

    def announce(self, run: RunState, model: nn.Module) -> None:
        config = self.config
        what = ("the ticket's weights under a random mask of its per-layer counts (random mask)"
                if config.random_mask and config.init_dir else
                "a random mask of the ticket's per-layer counts from a fresh initialisation" if config.random_mask
                else "a ticket" if config.init_dir and config.mask_dir else
                "a mask from a fresh initialisation (random re-initialisation)" if config.mask_dir else
                "the given weights, dense" if config.init_dir else "the dense network from a fresh initialisation")
        LOG.info(f"retraining {what}: {pruner.remaining_weights(model):.2f}% of conv weights remaining")


def _ticket_mask(session: Session, model: nn.Module) -> Tuple[pruner.Mask, Optional[int]]:
    """The --mask_dir mask, checked against the model, and the round it was saved at."""
    path = session.config.mask_dir
    source = session.load(path, "--mask_dir")
    state_dict = source.get("state_dict", source) if isinstance(source, dict) else None
    mask = pruner.extract_mask(state_dict) if isinstance(state_dict, dict) else {}
    if not mask:
        raise UserError(f"--mask_dir {path} holds no *.weight_mask entries: it is a dense "
                        "(round 0) checkpoint or not a checkpoint; pick one of a pruned round")
    pruner.check_mask(model, mask, source=f"--mask_dir {path}")
    saved_round = source.get("state") if isinstance(source, dict) else None
    return mask, int(saved_round) if isinstance(saved_round, (int, np.integer)) else None


def _ticket_record(config: Config, source_round: Optional[int]) -> Dict[str, Any]:
    """Where the retrained ticket came from, for args.json (report.py reads it)."""
    init_dir, mask_dir = (os.path.abspath(path) if path else None for path in (config.init_dir, config.mask_dir))
    return {"init_dir": init_dir, "mask_dir": mask_dir, "source_run": os.path.dirname(mask_dir) if mask_dir else None,
            "source_round": source_round, "reinit": bool(config.mask_dir and not config.init_dir),
            "random_mask": bool(config.random_mask)}


def _init_weights(saved: Any, path: str) -> StateDict:
    if not isinstance(saved, dict):
        raise UserError(f"--init_dir {path} is not a checkpoint or state_dict")
    if "init_weight" in saved:
        if saved["init_weight"] is None:
            raise UserError(f"--init_dir {path} has an empty init_weight (a rewind_lt run saved before "
                            "its rewind epoch); use a later checkpoint or the epoch_*_rewind_weight.pt file")
        return pruner.dense_state_dict(saved["init_weight"])
    if all(torch.is_tensor(v) for v in saved.values()):
        return pruner.dense_state_dict(saved)
    raise UserError(f"--init_dir {path} has no init_weight entry and is not a plain state_dict")
