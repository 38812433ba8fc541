"""The one training loop, evaluation and predictions shared by all three scripts."""
import contextlib
import math
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import distributed
from dataset import AnyImageSet, random_crop_flip, to_model_input
from streamed import StreamedImageSet
from utils import LOG

SEED_BOUND = 2 ** 62
# --precision: fp32 is IEEE fp32 everywhere; tf32 lets CUDA matmuls and cuDNN convolutions
# round their inputs to TF32 (Ampere and newer; torch's default for convolutions); bf16
# autocasts the forward pass.
PRECISIONS = ("fp32", "tf32", "bf16")

# (dataset indices of the batch, its logits, its targets), called after each training step
BatchHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]


@dataclass(frozen=True)
class LoopSettings:
    """How batches are run: the parts of the config the loop needs, nothing else."""

    batch_size: int
    eval_batch_size: int = 1000
    precision: str = "fp32"
    channels_last: bool = False
    print_freq: int = 50
    progress: bool = True


@dataclass
class EpochStats:
    accuracy: float  # percent
    loss: float
    steps: int
    examples: int
    seconds: float


def make_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
    # Built after masks are applied, so it holds ``weight_orig`` of pruned convs.
    return torch.optim.SGD(model.parameters(), lr, momentum=momentum, weight_decay=weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, milestones: List[int]) -> torch.optim.lr_scheduler.MultiStepLR:
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=0.1)


def warmup_lr(base_lr: float, epoch: int, step: int, steps_per_epoch: int, warmup_epochs: int) -> float:
    """Linear warm-up per step (``step`` counts from 1), as the published scripts do it."""
    progress = (epoch * steps_per_epoch + step) / (warmup_epochs * steps_per_epoch)
    return min(base_lr * progress, base_lr)


def set_float32_math(precision: str) -> None:
    """Sets torch's process-wide TF32 switches for ``precision``: off for fp32 (torch leaves
    them on for cuDNN convolutions, so its "fp32" convolutions are TF32 on Ampere and newer),
    on for tf32; bf16 keeps the fp32 parts of its autocast in IEEE fp32. No effect on the CPU."""
    allow = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _train_batches(train_set: AnyImageSet, order: torch.Tensor, batch_size: int, generator: torch.Generator,
                   crop_padding: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """(dataset indices, augmented uint8 images) per step, in ``order``: the one place where
    in-memory and streamed data differ in training. Under torchrun: this rank's slice
    (:func:`distributed.shard`) of each global batch of ``batch_size``, possibly empty."""
    share = distributed.shard if distributed.world() > 1 else None
    if isinstance(train_set, StreamedImageSet):
        # One draw from the epoch's generator seeds every example's transform together with
        # its dataset index, so the images depend on neither the number of workers nor of ranks.
        epoch_seed = int(torch.randint(SEED_BOUND, (1,), generator=generator, device=generator.device))
        yield from train_set.train_batches(order, batch_size, epoch_seed, share)
        return
    for begin in range(0, int(order.numel()), batch_size):
        batch = order[begin:begin + batch_size]
        images = random_crop_flip(train_set.images[batch], crop_padding, generator)
        if share is not None:
            # Every rank augments the whole global batch (cheap next to the forward pass), so
            # the generator and the images do not depend on the number of ranks.
            part = share(int(batch.numel()))
            batch, images = batch[part], images[part]
        yield batch, images


def _eval_batches(data: AnyImageSet, indices: Optional[torch.Tensor],
                  batch_size: int) -> Iterator[Tuple[slice, torch.Tensor]]:
    """(positions in the output, unaugmented uint8 images) of ``indices`` (or all of ``data``)."""
    count = len(data) if indices is None else int(indices.numel())
    if isinstance(data, StreamedImageSet):
        yield from zip(_batches(count, batch_size), data.eval_batches(indices, batch_size))
        return
    for part in _batches(count, batch_size):
        yield part, data.images[part] if indices is None else data.images[indices[part]]


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, train_set: AnyImageSet,
                indices: torch.Tensor, generator: torch.Generator, settings: LoopSettings, *,
                epoch: int = 0, crop_padding: int = 4, warmup_epochs: int = 0, base_lr: float = 0.0,
                on_batch: Optional[BatchHook] = None, description: str = "") -> EpochStats:
    """Trains one epoch over ``indices`` (dataset indices, on the data's device) in a
    random order drawn from ``generator``.

    ``on_batch(batch_indices, logits, targets)`` is called after every step with that step's
    own (detached) logits, so per-example statistics are recorded from the very forward
    pass that trained on the example; it must not sync with the host.

    Under torchrun (``model`` wrapped in DDP) every rank draws the same permutation and the
    same global batches of ``settings.batch_size``, and trains its contiguous slice of each
    (:func:`distributed.shard`): together the ranks train every index once per epoch, with
    no padding. ``on_batch`` sees the rank's slice; the returned stats are global.
    """
    model.train()
    start = time.time()
    count = int(indices.numel())
    order = indices[torch.randperm(count, generator=generator, device=indices.device)]
    steps = math.ceil(count / settings.batch_size)
    device = train_set.device
    loss_sum = torch.zeros((), device=device)
    correct_sum = torch.zeros((), dtype=torch.int64, device=device)
    bar = tqdm(total=steps, desc=description, leave=False, dynamic_ncols=True,
               disable=not (settings.progress and sys.stderr.isatty()))
    batches = _train_batches(train_set, order, settings.batch_size, generator, crop_padding)
    world = distributed.world()
    seen = 0
    for step, (batch, images) in enumerate(batches):
        # Under torchrun ``batch`` is this rank's slice. A final global batch smaller than
        # the world leaves some slices empty; those ranks still run the (empty) forward and
        # backward pass that DDP's gradient all-reduce waits for.
        global_size = min(settings.batch_size, count - step * settings.batch_size)
        seen += int(batch.numel())
        if epoch < warmup_epochs:
            for group in optimizer.param_groups:
                group["lr"] = warmup_lr(base_lr, epoch, step + 1, steps, warmup_epochs)
        inputs = to_model_input(images, settings.channels_last)
        targets = train_set.labels[batch]
        with _autocast(device, settings.precision):
            logits = model(inputs)
            if world == 1:
                loss = F.cross_entropy(logits, targets)
                example_loss_sum = loss.detach().float() * batch.numel()
            else:
                # DDP averages the ranks' gradients: the rank's summed loss times
                # world / global batch size makes that average the gradient of the mean
                # loss over the global batch, as one process computes it, whatever the
                # slice sizes (and 0 for an empty slice).
                example_loss_sum = F.cross_entropy(logits, targets, reduction="sum")
                loss = example_loss_sum * (world / global_size)
                example_loss_sum = example_loss_sum.detach().float()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        logits = logits.detach()
        correct = logits.argmax(dim=1) == targets
        if on_batch is not None:
            on_batch(batch, logits, targets)
        loss_sum += example_loss_sum
        correct_sum += correct.sum()
        log_line = step % settings.print_freq == 0 and settings.print_freq < steps
        if log_line or step == steps - 1:
            # The only host syncs of the loop: at --print_freq, for the log and the bar.
            # (this rank's examples so far; the epoch's totals below are global)
            running_acc = 100.0 * correct_sum.item() / max(seen, 1)
            running_loss = loss_sum.item() / max(seen, 1)
            bar.set_postfix(loss=f"{running_loss:.3f}", acc=f"{running_acc:.2f}")
            if log_line:
                LOG.info(f"Epoch [{epoch}][{step}/{steps}] loss {running_loss:.4f} acc {running_acc:.3f} "
                          f"time {time.time() - start:.2f}")
        bar.update(1)
    bar.close()
    distributed.all_reduce(loss_sum)
    distributed.all_reduce(correct_sum)
    return EpochStats(accuracy=100.0 * correct_sum.item() / count, loss=loss_sum.item() / count,
                      steps=steps, examples=count, seconds=time.time() - start)


def _batches(count: int, batch_size: int) -> Iterator[slice]:
    for begin in range(0, count, batch_size):
        yield slice(begin, min(begin + batch_size, count))


@torch.no_grad()
def predict(model: nn.Module, data: AnyImageSet, settings: LoopSettings,
            indices: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Predicted labels of ``data`` (or of ``indices`` of it, in that order): eval mode,
    no augmentation, large batches. Under torchrun each rank predicts its shard and every
    rank gets all of them; ``model`` must then be the unwrapped model (not DDP), as the
    ranks run different numbers of batches."""
    if distributed.world() > 1:
        count = len(data) if indices is None else int(indices.numel())
        positions = torch.arange(count, device=data.device)[distributed.shard(count)]
        indices = positions if indices is None else indices[positions]
    was_training = model.training
    model.eval()
    count = len(data) if indices is None else int(indices.numel())
    predictions = torch.empty(count, dtype=torch.int64, device=data.device)
    for part, images in _eval_batches(data, indices, settings.eval_batch_size):
        with _autocast(data.device, settings.precision):
            predictions[part] = model(to_model_input(images, settings.channels_last)).argmax(dim=1)
    model.train(was_training)
    return distributed.all_gather_concat(predictions)


def evaluate(model: nn.Module, data: AnyImageSet, settings: LoopSettings,
             indices: Optional[torch.Tensor] = None) -> float:
    """Top-1 accuracy in percent on ``data`` (or on ``indices`` of it)."""
    count = len(data) if indices is None else int(indices.numel())
    if count == 0:
        return 0.0
    labels = data.labels if indices is None else data.labels[indices]
    correct = (predict(model, data, settings, indices) == labels).sum()
    return 100.0 * correct.item() / count
