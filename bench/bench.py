#!/usr/bin/env python
"""Training-throughput benchmark: the published PrAC-LTH input path against ours.

One run builds one synthetic CIFAR-shaped data set in memory (``--n`` uint8 images
3x32x32, random labels, 10 classes) and one model (ResNet-20s), then measures:

* training images/s of (a) the published path: torchvision-CIFAR-style PIL transforms per
  example in the main process, per-element record writes, ``.item()`` twice per step;
  (b) a ``DataLoader`` (``--workers`` processes) over the same Dataset and step; (c) ours:
  ``training.train_epoch`` on one uint8 tensor, records on, in fp32 and bf16 + channels_last;
* the data paths of (a) and (c) alone, and ``training.evaluate`` in fp32 and bf16;
* bookkeeping: record writes (published vs ours), ``prac.forgetting_events`` and
  ``pruner.candidate_mask`` + ``pruner.mask_distance``.

Training and data-path rows time ``--steps`` batches per repeat (after an untimed
warm-up) and extrapolate to a 45,000-image epoch; ``--steps 0`` (the default on CUDA)
times whole epochs over the ``--n`` images instead, for our paths (the published ones,
CPU-bound, still time 20 batches). Every measurement is repeated ``--repeats`` times;
the tables give the median and the min-max spread. On CUDA every timing synchronises the
device first and is read from CUDA events; on the CPU from ``time.perf_counter``.

    python bench/bench.py                  # full run, writes bench/RESULTS.md
    python bench/bench.py --quick --out /tmp/bench.md
    python bench/bench.py --device cuda --compile
    python bench/bench.py --streamed --threads 1   # streamed JPEGs vs in memory: bench/RESULTS_streamed.md

``--streamed`` measures only the streamed path (:mod:`streamed`) against the in-memory one on
a temporary ImageFolder of ``--stream_n`` JPEG files (500x375, ImageNet's typical size): the
data path alone (uint8 batches decoded, cropped, flipped, made float on the device) and
``train_epoch`` with ResNet-18, both at ``--stream_size`` px.
"""
import argparse
import datetime
import itertools
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import dataset  # noqa: E402
import prac  # noqa: E402
import pruner  # noqa: E402
from dataset import ImageSet, random_crop_flip, to_model_input  # noqa: E402
from models import build_model  # noqa: E402
from runners import default_eval_batch_size  # noqa: E402
from training import LoopSettings, evaluate, make_optimizer, set_float32_math, train_epoch  # noqa: E402
from utils import UserError, check_torch_version, select_device  # noqa: E402

EPOCH_IMAGES = 45_000  # CIFAR's train_number: every "per epoch" figure is for this many images
ARCH, NUM_CLASSES = "res20s", 10
IMAGE_SIZE, CROP_PADDING = 32, 4
RECORD_EPOCHS = 182  # the published --epochs: columns of the forgetting record matrix
PRUNE_RATE = 0.2
LOADER_PREFETCH_FACTOR = 2  # DataLoader's default
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 5e-4

# Sizes of a full run and of --quick; explicit flags override either. A full run times
# 20 batches per path on the CPU and whole epochs on CUDA, where an epoch takes seconds.
FULL_SIZES = {"n": 45_000, "steps": 20, "repeats": 3, "eval_n": 10_000}
FULL_STEPS_CUDA = 0
QUICK_SIZES = {"n": 2048, "steps": 3, "repeats": 1, "eval_n": 1024}
# --streamed: JPEG files written, training batches timed per trial (batch STREAM_BATCH)
STREAM_SIZES = {"n": 512, "train_steps": 3}
STREAM_QUICK = {"n": 64, "train_steps": 1}
STREAM_IMAGE_SIZE, STREAM_BATCH = 224, 32
STREAM_JPEG = (500, 375)  # ImageNet's most common image size
STREAM_ARCH, STREAM_CLASSES = "res18", 10


# ============================================================================ settings
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The flags, completed and checked (with ``--threads`` applied at once)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny run: {', '.join(f'{k}={v}' for k, v in QUICK_SIZES.items())} "
                             "(explicit flags still win)")
    parser.add_argument("--n", type=int, help=f"synthetic training images (default {FULL_SIZES['n']})")
    parser.add_argument("--steps", type=int,
                        help=f"batches timed per path and repeat, extrapolated to a {EPOCH_IMAGES}-image "
                             f"epoch (default {FULL_SIZES['steps']} on the CPU, {FULL_STEPS_CUDA} on CUDA); "
                             "0 times whole epochs over the --n images")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--eval_batch_size", type=int, default=None,
                        help="batch size of the evaluation rows (default: the scripts' default for "
                             f"{IMAGE_SIZE} px images on the device)")
    parser.add_argument("--repeats", type=int, help=f"repeats per measurement (default {FULL_SIZES['repeats']})")
    parser.add_argument("--eval_n", type=int, help=f"evaluation images (default {FULL_SIZES['eval_n']})")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of path (b) (default 2)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile our model (CUDA only)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads(N) before anything runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--streamed", action="store_true",
                        help="measure only streamed JPEGs against in-memory images (see above)")
    parser.add_argument("--stream_n", type=int, default=None,
                        help=f"JPEG files of --streamed (default {STREAM_SIZES['n']}, quick {STREAM_QUICK['n']})")
    parser.add_argument("--stream_size", type=int, default=STREAM_IMAGE_SIZE,
                        help=f"--image_size of --streamed (default {STREAM_IMAGE_SIZE})")
    parser.add_argument("--out", default=None,
                        help="markdown file the results are written to (default bench/RESULTS.md, "
                             "bench/RESULTS_streamed.md with --streamed)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    # Completed below: the device, unset sizes, and what a trial times: ``batches`` (--steps, at
    # most one pass over --n, all of it for 0), their ``images_per_trial``, and ``published_batches``
    # of (a) and (b), with --steps 0 as many as a full CPU run: their cost per batch is CPU work that
    # does not change along an epoch, so a whole epoch would only spend minutes of GPU time waiting.
    try:
        check_torch_version()
        args.device = select_device(args.device, gpu=0)
    except UserError as error:
        raise SystemExit(f"error: {error}") from None
    cuda = args.device.type == "cuda"
    sizes = dict(QUICK_SIZES if args.quick else FULL_SIZES)
    if not args.quick and cuda:
        sizes["steps"] = FULL_STEPS_CUDA
    for key, default in sizes.items():
        setattr(args, key, default if getattr(args, key) is None else getattr(args, key))
    if args.eval_batch_size is None:
        args.eval_batch_size = default_eval_batch_size(args.device, IMAGE_SIZE)
    if args.batch_size < 1 or args.eval_batch_size < 1 or args.n < args.batch_size:
        raise SystemExit(f"--batch_size and --eval_batch_size must be >= 1 and --n ({args.n}) "
                         f"at least --batch_size ({args.batch_size})")
    if args.steps < 0 or min(args.repeats, args.eval_n, args.workers) < 1:
        raise SystemExit("--steps must be >= 0; --repeats, --eval_n and --workers >= 1")
    if args.compile and not cuda:
        print("--compile is used on CUDA only; running eagerly", file=sys.stderr)
    args.compile = args.compile and cuda
    args.out = args.out or os.path.join(REPO, "bench", "RESULTS_streamed.md" if args.streamed else "RESULTS.md")
    epoch = math.ceil(args.n / args.batch_size)
    args.batches = min(args.steps, epoch) if args.steps > 0 else epoch
    args.published_batches = min(args.steps or FULL_SIZES["steps"], epoch)
    args.images_per_trial = min(args.batches * args.batch_size, args.n)
    return args


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            name = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), name)
    except OSError:
        pass
    return f"CPU: {name} ({os.cpu_count()} logical cores)"


# ============================================================================ timing
@dataclass
class Workload:
    """What one path runs: an untimed warm-up, then ``trial`` once per repeat.
    ``trial`` returns the number of images it handled."""

    trial: Callable[[], int]
    warmup: Callable[[], object] = lambda: None


@dataclass
class Measurement:
    images: int  # per trial
    seconds: List[float] = field(default_factory=list)

    @property
    def rates(self) -> List[float]:
        return [self.images / s for s in self.seconds]

    @property
    def median_rate(self) -> float:
        return self.images / statistics.median(self.seconds)

    def epoch_seconds(self) -> float:
        """Median seconds per EPOCH_IMAGES images, linear in the images timed."""
        return statistics.median(self.seconds) * EPOCH_IMAGES / self.images


def measure(name: str, workload: Workload, config: argparse.Namespace) -> Measurement:
    """Warm-up, then ``--repeats`` timed trials (one progress line to stderr): on CUDA between two
    events with the device synchronised first, so queued kernels are neither missed nor charged to
    the next measurement; on the CPU by ``time.perf_counter``."""
    result = Measurement(images=0)
    workload.warmup()
    for _ in range(config.repeats):
        if config.device.type == "cuda":
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            result.images = workload.trial()
            end.record()
            end.synchronize()
            result.seconds.append(start.elapsed_time(end) / 1000.0)
        else:
            started = time.perf_counter()
            result.images = workload.trial()
            result.seconds.append(time.perf_counter() - started)
    images = f" for {result.images} images" if result.images else ""
    print(f"  {name}: {statistics.median(result.seconds):.4f} s (median of {config.repeats}){images}", file=sys.stderr)
    return result


# ============================================================================ data and models
Bench = argparse.Namespace  # parse_args's settings, with make_bench's synthetic data added


def make_bench(bench: Bench) -> Bench:
    """Adds the data every path shares: ImageSets ``train`` (``--n`` uint8 3x32x32 images, int64
    labels) and ``test`` (``--eval_n``) on the device, and for the published paths the same train
    set in torchvision CIFAR's layout: ``hwc`` (N x 32 x 32 x 3 uint8 numpy), ``targets`` (a list)."""
    generator = torch.Generator().manual_seed(bench.seed)
    shape = (3, IMAGE_SIZE, IMAGE_SIZE)
    images = torch.randint(0, 256, (bench.n, *shape), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (bench.n,), generator=generator)
    test_images = torch.randint(0, 256, (bench.eval_n, *shape), dtype=torch.uint8, generator=generator)
    test_labels = torch.randint(0, NUM_CLASSES, (bench.eval_n,), generator=generator)
    bench.train = ImageSet(images, labels).to(bench.device)
    bench.test = ImageSet(test_images, test_labels).to(bench.device)
    bench.hwc = images.permute(0, 2, 3, 1).contiguous().numpy()
    bench.targets = labels.tolist()
    return bench


def new_model(bench: Bench, channels_last: bool = False) -> nn.Module:
    """ResNet-20s with the same initial weights every time."""
    torch.manual_seed(bench.seed)
    model = build_model(ARCH, NUM_CLASSES).to(bench.device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def forward_model(bench: Bench, model: nn.Module) -> nn.Module:
    """``model`` compiled when ``--compile`` (CUDA) was asked for, as the runners do.

    Compiled state of earlier rows is dropped first, so rows neither share compiled graphs
    nor run into the recompilation limit (and fall back to eager) as models accumulate."""
    if not bench.compile:
        return model
    torch.compiler.reset()
    return torch.compile(model)  # type: ignore[return-value]


def device_generator(device: torch.device, seed: int) -> torch.Generator:
    """A seeded generator on ``device``: a random op takes the generator of its tensors'
    device, so a CPU generator crashes every draw the loop makes on CUDA."""
    return torch.Generator(device=device).manual_seed(seed)


# ============================================================================ the published path
class CifarStyleDataset(Dataset):
    """Item access as torchvision's CIFAR10 does it: the uint8 HWC array of one image becomes
    a PIL image, then the published transform runs on it. ``with_index`` adds the example's
    index to each item, so a DataLoader batch can write records."""

    def __init__(self, bench: Bench, with_index: bool = False):
        from torchvision import transforms
        self.data, self.targets, self.with_index = bench.hwc, bench.targets, with_index
        self.transform = transforms.Compose([transforms.RandomCrop(IMAGE_SIZE, padding=CROP_PADDING),
                                             transforms.RandomHorizontalFlip(), transforms.ToTensor()])

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple:
        from PIL import Image
        item = (self.transform(Image.fromarray(self.data[index])), self.targets[index])
        return (*item, index) if self.with_index else item


class PublishedStep:
    """The published step on a fresh ResNet-20s: forward, backward, SGD step; the per-example
    record written one element at a time; loss and accuracy read back with ``.item()`` into
    the AverageMeter sums. ``new_epoch`` starts the records (float64, one row per example,
    -1 = untrained) and the sums afresh, as every trial does."""

    def __init__(self, bench: Bench):
        self.n = bench.n
        self.model = new_model(bench)
        self.optimizer = make_optimizer(self.model, LR, MOMENTUM, WEIGHT_DECAY)
        self.model.train()

    def new_epoch(self) -> None:
        self.records = -np.ones((self.n, 1))
        self.loss_sum, self.accuracy_sum = 0.0, 0.0

    def __call__(self, images: torch.Tensor, targets: torch.Tensor, batch_indices: np.ndarray) -> None:
        logits = self.model(images)
        loss = F.cross_entropy(logits, targets)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        hits = logits.detach().argmax(dim=1) == targets
        for j, index in enumerate(batch_indices):
            self.records[index, 0] = hits[j]
        # top-1 in percent through topk, as the published accuracy() computes it
        predicted = logits.detach().float().topk(1, dim=1).indices.t()
        accuracy = predicted.eq(targets.view(1, -1)).flatten().float().sum().mul(100.0 / targets.numel())
        self.loss_sum += loss.float().item() * images.shape[0]
        self.accuracy_sum += accuracy.item() * images.shape[0]


def path_a_published(bench: Bench, train: bool) -> Workload:
    """(a) The published loop: each batch built as the published ``train()`` builds it (one
    ``__getitem__`` per example in the main process, ``torch.stack``, the labels picked from
    ``np.array(targets)``, the whole label list converted again at every step), then with
    ``train`` the published step; without, the data path alone (no model)."""
    data = CifarStyleDataset(bench)
    step = PublishedStep(bench) if train else None
    rng = np.random.default_rng(bench.seed)

    def run(batches: int) -> int:
        if step is not None:
            step.new_epoch()
        order = rng.permutation(bench.n)
        images_seen = 0
        for b in range(batches):
            batch_indices = order[b * bench.batch_size:(b + 1) * bench.batch_size]
            images = torch.stack([data[index][0] for index in batch_indices]).to(bench.device)
            targets = torch.LongTensor(np.array(data.targets)[batch_indices].tolist()).to(bench.device)
            if step is not None:
                step(images, targets, batch_indices)
            images_seen += len(batch_indices)
        return images_seen

    return Workload(trial=lambda: run(bench.published_batches), warmup=lambda: run(1))


def path_b_dataloader_train(bench: Bench) -> Workload:
    """(b) The same Dataset and step behind a shuffling ``DataLoader`` with worker processes.

    One loader iterator serves the warm-up and every repeat (its ``RandomSampler``, the
    sampler ``shuffle=True`` builds, draws as many samples as all of them need, in fresh
    permutations), so worker start-up is not charged to the timed steps: over a real epoch
    it is amortised. The warm-up takes more batches than the workers prefetch, so the timed
    steps start from the steady state, not from a queue filled while nothing was timed."""
    device = bench.device
    cuda = device.type == "cuda"
    data = CifarStyleDataset(bench, with_index=True)
    warmup_batches = bench.workers * LOADER_PREFETCH_FACTOR + 1
    batches_needed = warmup_batches + bench.repeats * bench.published_batches
    sampler = RandomSampler(data, num_samples=batches_needed * bench.batch_size,
                            generator=torch.Generator().manual_seed(bench.seed))
    loader = DataLoader(data, batch_size=bench.batch_size, sampler=sampler,
                        num_workers=bench.workers, prefetch_factor=LOADER_PREFETCH_FACTOR, pin_memory=cuda)
    step = PublishedStep(bench)
    stream = iter(loader)  # referenced by this workload alone: its workers stop when the row is done

    def run(batches: int) -> int:
        step.new_epoch()
        images_seen = 0
        for images, targets, indices in itertools.islice(stream, batches):
            step(images.to(device, non_blocking=cuda), targets.to(device, non_blocking=cuda), indices.numpy())
            images_seen += int(targets.shape[0])
        return images_seen

    return Workload(trial=lambda: run(bench.published_batches), warmup=lambda: run(warmup_batches))


# ============================================================================ our path
def path_c_ours(bench: Bench, precision: str, channels_last: bool, train: bool) -> Workload:
    """(c) Ours on a fresh ResNet-20s: ``training.train_epoch`` on the in-memory uint8 ImageSet,
    records on; without ``train``, ``training.evaluate`` on the ``--eval_n`` test images. The
    warm-up meets every batch shape of a trial, one full batch plus the final, smaller one if
    there is one, so ``--compile`` compiles both before the timing starts."""
    model = new_model(bench, channels_last)
    optimizer = make_optimizer(model, LR, MOMENTUM, WEIGHT_DECAY)
    runnable = forward_model(bench, model)
    settings = LoopSettings(batch_size=bench.batch_size, eval_batch_size=bench.eval_batch_size,
                            precision=precision, channels_last=channels_last, print_freq=10 ** 9, progress=False)
    generator = device_generator(bench.device, bench.seed)
    round_statistics = prac.RoundStatistics.empty(1, bench.n, bench.device)
    total = bench.images_per_trial if train else len(bench.test)
    batch = bench.batch_size if train else bench.eval_batch_size

    def run(count: int) -> int:
        set_float32_math(precision)
        if not train:
            evaluate(runnable, ImageSet(bench.test.images[:count], bench.test.labels[:count]), settings)
            return count
        indices = torch.randperm(bench.n, generator=generator, device=bench.device)[:count]
        stats = train_epoch(runnable, optimizer, bench.train, indices, generator, settings,
                            crop_padding=CROP_PADDING, on_batch=round_statistics.batch_hook(0))
        return stats.examples

    return Workload(trial=lambda: run(total), warmup=lambda: run(min(total, batch + total % batch)))


def path_c_ours_data(bench: Bench) -> Workload:
    """(c) data alone: the batches ``train_epoch`` feeds the model (float, on the device)."""
    generator = device_generator(bench.device, bench.seed)

    def run(count: int) -> int:
        order = torch.randperm(bench.n, generator=generator, device=bench.device)[:count]
        for begin in range(0, count, bench.batch_size):
            batch = order[begin:begin + bench.batch_size]
            to_model_input(random_crop_flip(bench.train.images[batch], CROP_PADDING, generator), False)
            bench.train.labels[batch]  # noqa: B018 (the labels are part of the batch)
        return count

    return Workload(trial=lambda: run(bench.images_per_trial), warmup=lambda: run(bench.batch_size))


# ============================================================================ bookkeeping
def records_write(bench: Bench, published: bool) -> Workload:
    """The record write of one epoch over ``--n`` examples. Published: a float64 numpy array written
    one element at a time from the step's device tensor. Ours: the batch hook of ``prac.RoundStatistics``
    (one indexed write per batch into the int8 records on the device), as ``train_epoch`` calls it."""
    device = bench.device
    generator = device_generator(device, bench.seed)
    batches = list(torch.randperm(bench.n, generator=generator, device=device).split(bench.batch_size))
    if published:
        host_batches = [b.cpu().numpy() for b in batches]
        hits = [torch.rand(b.numel(), generator=generator, device=device) < 0.5 for b in batches]

        def run_published() -> int:
            records = -np.ones((bench.n, 1))
            for batch_indices, acc in zip(host_batches, hits):
                for j, index in enumerate(batch_indices):
                    records[index, 0] = acc[j]
            return bench.n

        return Workload(trial=run_published)  # no warm-up: it would only repeat the same Python loop
    logits = [torch.randn(b.numel(), 10, generator=generator, device=device) for b in batches]
    targets = [torch.randint(0, 10, (b.numel(),), generator=generator, device=device) for b in batches]
    hook = prac.RoundStatistics.empty(1, bench.n, device).batch_hook(0)

    def run() -> int:
        for batch, batch_logits, batch_targets in zip(batches, logits, targets):
            hook(batch, batch_logits, batch_targets)
        return bench.n

    return Workload(trial=run, warmup=run)


def forgetting_workload(bench: Bench) -> Workload:
    """``prac.forgetting_events`` on the round's records as the PrAC runner passes them:
    the epochs x N int8 tensor on the device, transposed to N x epochs and copied to host."""
    generator = device_generator(bench.device, bench.seed)
    records = torch.randint(0, 2, (RECORD_EPOCHS, bench.n), generator=generator, device=bench.device).to(torch.int8)
    records[:, ::10] = -1  # some examples untrained in this round

    def run() -> int:
        prac.forgetting_events(records.t().cpu().numpy())
        return bench.n

    return Workload(trial=run, warmup=run)


def early_bird_workload(bench: Bench) -> Workload:
    """One epoch's Early-Bird check on the dense ResNet-20s: ``candidate_mask`` then
    ``mask_distance`` to the previous epoch's mask."""
    model = new_model(bench)
    previous = pruner.candidate_mask(model, PRUNE_RATE)
    remaining = pruner.unpruned_count(model)

    def run() -> int:
        pruner.mask_distance(previous, pruner.candidate_mask(model, PRUNE_RATE), remaining)
        return 0

    return Workload(trial=run, warmup=run)


# ============================================================================ report
def run_all(bench: Bench) -> Dict[str, Measurement]:
    """Every row's measurement by its progress name, each workload built just before it is timed."""
    print(f"timing on {device_name(bench.device)}, {torch.get_num_threads()} threads", file=sys.stderr)
    set_float32_math("fp32")  # the published paths too: fp32 is IEEE fp32 (TF32 off) in every row
    workloads: Dict[str, Callable[[], Workload]] = {
        "(a) published train": lambda: path_a_published(bench, train=True),
        "(b) DataLoader train": lambda: path_b_dataloader_train(bench),
        "(c) ours train fp32": lambda: path_c_ours(bench, "fp32", False, train=True),
        "(c) ours train bf16": lambda: path_c_ours(bench, "bf16", True, train=True),
        "(a) published data": lambda: path_a_published(bench, train=False),
        "(c) ours data": lambda: path_c_ours_data(bench),
        "eval fp32": lambda: path_c_ours(bench, "fp32", False, train=False),
        "eval bf16": lambda: path_c_ours(bench, "bf16", True, train=False),
        "records write, published": lambda: records_write(bench, published=True),
        "records write, ours": lambda: records_write(bench, published=False),
        "forgetting_events": lambda: forgetting_workload(bench),
        "candidate_mask + mask_distance": lambda: early_bird_workload(bench),
    }
    return {name: measure(name, make(), bench) for name, make in workloads.items()}


def _spread(values: Sequence[float], fmt: str) -> str:
    return f"{format(min(values), fmt)}–{format(max(values), fmt)}"


def report_head(title: str, config: argparse.Namespace, device_note: str, workers_note: str) -> List[str]:
    """Title, date, device, versions and threads: the lines both reports open with."""
    try:
        import torchvision
        torchvision_version = torchvision.__version__
    except Exception as error:  # torchvision absent or broken: report, do not fail here
        torchvision_version = f"unavailable ({type(error).__name__})"
    return [
        f"# {title}{' (quick mode)' if config.quick else ''}",
        "",
        f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- device: {device_name(config.device)}{device_note}",
        f"- torch {torch.__version__}, torchvision {torchvision_version}, numpy {np.__version__}, "
        f"Python {platform.python_version()}",
        f"- threads: torch.get_num_threads() = {torch.get_num_threads()} "
        f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}); {workers_note}",
    ]


def render(config: argparse.Namespace, r: Dict[str, Measurement]) -> str:
    """The markdown report: settings, throughput table, bookkeeping table, notes."""
    timed = (f"whole epochs of {config.n} images" if config.images_per_trial == config.n
             else f"{config.batches} batches of {config.batch_size}")
    extrapolated = config.images_per_trial != EPOCH_IMAGES
    train_a, data_a = r["(a) published train"], r["(a) published data"]
    epoch_seconds = r["(c) ours train fp32"].epoch_seconds()
    throughput = [  # label, measurement, compared with (None: an evaluation row, without ratio or epoch)
        ("(a) published: PIL transforms per example, main process, per-element records", train_a, train_a),
        (f"(b) DataLoader, {config.workers} workers, same PIL transforms and step", r["(b) DataLoader train"],
         train_a),
        ("(c) ours: train_epoch, uint8 ImageSet, records on, fp32", r["(c) ours train fp32"], train_a),
        ("(c) ours: train_epoch, bf16 + channels_last", r["(c) ours train bf16"], train_a),
        ("data path alone, (a) published", data_a, data_a),
        ("data path alone, (c) ours", r["(c) ours data"], data_a),
        (f"evaluate, {config.eval_n} images, fp32", r["eval fp32"], None),
        (f"evaluate, {config.eval_n} images, bf16 + channels_last", r["eval bf16"], None),
    ]
    bookkeeping = [  # label, when, measurement, per example (then scaled from --n to EPOCH_IMAGES examples)
        ("records write, published (per-element loop into numpy)", "every epoch", r["records write, published"],
         True),
        ("records write, ours (one indexed write per batch)", "every epoch", r["records write, ours"], True),
        (f"prac.forgetting_events, N x {RECORD_EPOCHS} int8 (as the runner passes it)", "once per round",
         r["forgetting_events"], True),
        ("pruner.candidate_mask + mask_distance, dense ResNet-20s", "every epoch (Early-Bird)",
         r["candidate_mask + mask_distance"], False),
    ]
    lines = report_head("Training throughput: published PrAC-LTH path vs ours", config, "",
                        f"DataLoader workers: {config.workers}") + [
        f"- repeats: {config.repeats} per row (median, spread = min–max), after an untimed warm-up",
        f"- model: ResNet-20s, {NUM_CLASSES} classes; data: {config.n} synthetic uint8 3x32x32 images, "
        f"random labels, in memory; eval on {config.eval_n} images; "
        f"torch.compile: {'on' if config.compile else 'off'}",
        "- fp32 rows are IEEE fp32 (TF32 off for matmuls and cuDNN convolutions, as --precision fp32)",
        f"- training and data rows time {timed} per repeat"
        + (f" and extrapolate to a {EPOCH_IMAGES:,}-image epoch" if extrapolated else "")
        + (f"; the published paths (a), (b) time {config.published_batches} batches and extrapolate"
           if config.published_batches != config.batches else ""),
        "",
        f"| Path | images/s | spread | s per {EPOCH_IMAGES // 1000}k-image epoch"
        f"{' (extrapolated)' if extrapolated else ''} | vs (a) |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, m, base in throughput:
        ratio = f"{m.median_rate / base.median_rate:.2f}x" if base is not None else "—"
        seconds = f"{m.epoch_seconds():.1f}" if base is not None else "—"
        lines.append(f"| {label} | {m.median_rate:,.0f} | {_spread(m.rates, ',.0f')} | {seconds} | {ratio} |")
    lines += [
        "",
        "Training rows compare with (a) training, data-path rows with (a)'s data path. (a) also rebuilds "
        "`np.array(targets)` from the label list at every step and calls `.item()` twice, as the published "
        "`train()` does; (b) is timed after worker start-up, with the prefetch queue in its steady state; "
        "the data-path rows end with float batches (and labels) on the device.",
        "",
        f"| Bookkeeping | when | seconds{' (scaled to 45k examples)' if config.n != EPOCH_IMAGES else ''} | "
        "spread | % of our fp32 epoch |",
        "|---|---|---:|---:|---:|",
    ]
    for label, when, m, per_example in bookkeeping:
        scale = EPOCH_IMAGES / config.n if per_example else 1.0
        seconds = [s * scale for s in m.seconds]
        median = statistics.median(seconds)
        lines.append(f"| {label} | {when} | {median:.4f} | {_spread(seconds, '.4f')} | "
                     f"{100.0 * median / epoch_seconds:.3g}% |")
    lines += [
        "",
        f"Percentages are of our fp32 epoch ({epoch_seconds:.1f} s per {EPOCH_IMAGES:,} images above).",
        "",
    ]
    return "\n".join(lines)


# ============================================================================ --streamed
def write_jpeg_tree(root: str, n: int, seed: int) -> None:
    """``root/train/<class>/*.JPEG``: smooth random images (natural-looking JPEG sizes) of
    STREAM_JPEG pixels, and the first image of each class in its test folder."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = STREAM_JPEG
    for i in range(n):
        folder = os.path.join(root, "train", f"class_{i % STREAM_CLASSES}")
        os.makedirs(folder, exist_ok=True)
        os.makedirs(os.path.join(root, "test", f"class_{i % STREAM_CLASSES}"), exist_ok=True)
        coarse = Image.fromarray(rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8))
        fine = np.asarray(coarse.resize((width, height), Image.BICUBIC), dtype=np.int16)
        fine = fine + rng.normal(0, 8, fine.shape).astype(np.int16)
        image = Image.fromarray(np.clip(fine, 0, 255).astype(np.uint8))
        image.save(os.path.join(folder, f"{i:06d}.JPEG"), quality=90)
        if i < STREAM_CLASSES:
            image.save(os.path.join(root, "test", f"class_{i}", f"{i:06d}.JPEG"), quality=90)


def streamed_data_workload(train: object, count: int, seed: int) -> Workload:
    """One pass of ``count`` random indices through the loop's batch seam, ending with float
    batches on the device (as ``train_epoch`` feeds the model)."""
    from training import _train_batches  # the seam itself, so both paths are timed as trained

    generator = device_generator(train.device, seed)
    side = train.image_size if hasattr(train, "image_size") else int(train.images.shape[-1])
    padding = max(1, side // 8)

    def run(images: int) -> int:
        order = torch.randperm(len(train), generator=generator, device=train.device)[:images]
        for _, batch in _train_batches(train, order, STREAM_BATCH, generator, padding):
            to_model_input(batch, False)
        return images

    return Workload(trial=lambda: run(count), warmup=lambda: run(min(count, STREAM_BATCH)))


def streamed_train_workload(train: object, count: int, seed: int) -> Workload:
    """``train_epoch`` with ResNet-18 over ``count`` random indices of ``train``."""
    torch.manual_seed(seed)
    model = build_model(STREAM_ARCH, STREAM_CLASSES).to(train.device)
    optimizer = make_optimizer(model, LR, MOMENTUM, WEIGHT_DECAY)
    settings = LoopSettings(batch_size=STREAM_BATCH, eval_batch_size=STREAM_BATCH, print_freq=10 ** 9, progress=False)
    generator = device_generator(train.device, seed)

    def run(images: int) -> int:
        indices = torch.randperm(len(train), generator=generator, device=train.device)[:images]
        return train_epoch(model, optimizer, train, indices, generator, settings).examples

    return Workload(trial=lambda: run(count), warmup=lambda: run(min(count, STREAM_BATCH)))


def run_streamed(config: argparse.Namespace) -> str:
    sizes = STREAM_QUICK if config.quick else STREAM_SIZES
    stream_n, size = config.stream_n or sizes["n"], config.stream_size
    count = min(sizes["train_steps"] * STREAM_BATCH, stream_n)
    set_float32_math("fp32")
    with tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        write_jpeg_tree(root, stream_n, config.seed)
        print(f"wrote {stream_n} JPEGs in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        memory = dataset.load_data("folder", root, mode="memory", image_size=size).to(config.device)
        kinds = [("in memory (uint8 tensor, batched pad-crop + flip)", memory.train)]
        for workers in sorted({0, config.workers}):
            data = dataset.load_data("folder", root, mode="stream", image_size=size, workers=workers)
            kinds.append((f"streamed, {workers} workers (decode + resized crop + flip per example)",
                          data.to(config.device).train))
        data_rows = [(f"data path alone, {label}",
                      measure(label, streamed_data_workload(train, stream_n, config.seed), config))
                     for label, train in kinds]
        train_rows = [(f"train_epoch, ResNet-18, {label}",
                       measure(label, streamed_train_workload(train, count, config.seed), config))
                      for label, train in kinds]
    lines = report_head("Streamed JPEGs vs in-memory images", config, f"; {os.cpu_count()} CPU cores",
                        "DataLoader workers use one each") + [
        f"- data: {stream_n} JPEG files of {STREAM_JPEG[0]}x{STREAM_JPEG[1]} (quality 90) in an ImageFolder, "
        f"images of {size}x{size}, batches of {STREAM_BATCH}; {config.repeats} repeats (median, min–max)",
        f"- data rows pass all {stream_n} images; train rows {count} "
        f"({STREAM_ARCH}, {STREAM_CLASSES} classes, fp32)",
        "",
        "| Path | images/s | spread | vs in memory |",
        "|---|---:|---:|---:|",
    ]
    for rows in (data_rows, train_rows):  # each row compared with the in-memory one, the first
        base = rows[0][1]
        lines += [f"| {label} | {m.median_rate:,.1f} | {_spread(m.rates, ',.1f')} | "
                  f"{m.median_rate / base.median_rate:.2f}x |" for label, m in rows]
    lines += ["", "The record gather across ranks is measured apart, by bench/bench_gather.py under torchrun.", ""]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    config = parse_args(argv)
    started = time.perf_counter()
    report = run_streamed(config) if config.streamed else render(config, run_all(make_bench(config)))
    print(report)
    os.makedirs(os.path.dirname(os.path.abspath(config.out)), exist_ok=True)
    with open(config.out, "w") as handle:
        handle.write(report)
    print(f"wrote {config.out} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
