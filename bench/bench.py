#!/usr/bin/env python
"""Training-throughput benchmark: the published PrAC-LTH input path against ours.

One run builds one synthetic CIFAR-shaped data set in memory (``--n`` uint8 images
3x32x32, random labels, 10 classes) and one model (ResNet-20s), then measures:

* training images/s of
  (a) the published path: a torchvision-CIFAR-style Dataset (uint8 HWC numpy -> PIL ->
      RandomCrop(32, 4) + RandomHorizontalFlip + ToTensor per example) read in the main
      process, a batch stacked from a Python loop over the permuted indices, the model
      step, a per-element record write into a numpy array and ``.item()`` twice per step;
  (b) a ``DataLoader`` (``--workers`` processes, shuffle) over the same Dataset and the
      same published model step;
  (c) ours: ``training.train_epoch`` on an ``ImageSet`` held as one uint8 tensor, records
      on, in fp32 and in bf16 with channels_last;
* the data paths of (a) and (c) alone (float batches on the device, no model);
* evaluation images/s (``training.evaluate``) in fp32 and bf16;
* bookkeeping: the per-example record write (published loop vs ours),
  ``prac.forgetting_events`` and ``pruner.candidate_mask`` + ``pruner.mask_distance``.

Training and data-path rows time ``--steps`` batches per repeat (after an untimed
warm-up) and extrapolate to a 45,000-image epoch; ``--steps 0`` (the default on CUDA)
times whole epochs over the ``--n`` images instead, for our paths (the published ones,
CPU-bound, still time 20 batches). Every measurement is repeated
``--repeats`` times; the tables give the median and the min-max spread. On CUDA every
timing synchronises the device first and is read from CUDA events.

    python bench/bench.py                  # full run, writes bench/RESULTS.md
    python bench/bench.py --quick --out /tmp/bench.md
    python bench/bench.py --device cuda --compile
    python bench/bench.py --streamed --threads 1   # streamed JPEGs vs in memory: bench/RESULTS_streamed.md

``--streamed`` measures only the streamed path (:mod:`streamed`) against the in-memory one
on an ImageFolder of ``--stream_n`` JPEG files (500x375, ImageNet's typical size) written
to a temporary folder: the data path alone (uint8 batches decoded, cropped and flipped, made
float on the device) and ``train_epoch`` with ResNet-18, both at ``--stream_size`` px.
"""
import argparse
import datetime
import itertools
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import prac  # noqa: E402
import pruner  # noqa: E402
from dataset import ImageSet, random_crop_flip, to_model_input  # noqa: E402
from models import build_model  # noqa: E402
from runners import default_eval_batch_size  # noqa: E402
from training import LoopSettings, evaluate, make_optimizer, set_float32_math, train_epoch  # noqa: E402
from utils import UserError, check_torch_version, select_device  # noqa: E402

EPOCH_IMAGES = 45_000  # CIFAR's train_number: every "per epoch" figure is for this many images
ARCH = "res20s"
NUM_CLASSES = 10
IMAGE_SIZE = 32
CROP_PADDING = 4
RECORD_EPOCHS = 182  # the published --epochs: columns of the forgetting record matrix
PRUNE_RATE = 0.2
LOADER_PREFETCH_FACTOR = 2  # DataLoader's default
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 5e-4

T = TypeVar("T")

# Sizes of a full run and of --quick; explicit flags override either. A full run times
# 20 batches per path on the CPU and whole epochs on CUDA, where an epoch takes seconds.
FULL_SIZES = {"n": 45_000, "steps": 20, "repeats": 3, "eval_n": 10_000}
FULL_STEPS_CUDA = 0
QUICK_SIZES = {"n": 2048, "steps": 3, "repeats": 1, "eval_n": 1024}
# --streamed: JPEG files written, training batches timed per trial (batch STREAM_BATCH)
STREAM_SIZES = {"n": 512, "train_steps": 3}
STREAM_QUICK = {"n": 64, "train_steps": 1}
STREAM_IMAGE_SIZE = 224
STREAM_BATCH = 32
STREAM_JPEG = (500, 375)  # ImageNet's most common image size
STREAM_ARCH, STREAM_CLASSES = "res18", 10


# ============================================================================ settings
@dataclass(frozen=True)
class BenchConfig:
    n: int
    steps: int  # batches per trial; 0: whole epochs over the n images
    batch_size: int
    eval_batch_size: int
    repeats: int
    eval_n: int
    workers: int
    device: torch.device
    compile: bool
    seed: int
    quick: bool
    out: str

    @property
    def batches_per_trial(self) -> int:
        """``steps``, at most one pass over the ``n`` images (all of it for ``steps`` 0)."""
        epoch = math.ceil(self.n / self.batch_size)
        return min(self.steps, epoch) if self.steps > 0 else epoch

    @property
    def published_batches_per_trial(self) -> int:
        """Batches of the published paths (a) and (b): ``steps``, or with ``steps`` 0 as many
        as a full CPU run times. Their cost per batch is CPU work that does not change along
        an epoch, so a whole epoch of them would only spend minutes of GPU time to wait."""
        return min(self.steps or FULL_SIZES["steps"], math.ceil(self.n / self.batch_size))

    @property
    def images_per_trial(self) -> int:
        return min(self.batches_per_trial * self.batch_size, self.n)

    @property
    def extrapolated(self) -> bool:
        return self.images_per_trial != EPOCH_IMAGES


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
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
    return parser.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> BenchConfig:
    """Picks the device, fills unset sizes from the quick or full defaults and checks them."""
    try:
        check_torch_version()
        device = select_device(args.device, gpu=0)
    except UserError as error:
        raise SystemExit(f"error: {error}") from None
    sizes = dict(QUICK_SIZES if args.quick else FULL_SIZES)
    if not args.quick and device.type == "cuda":
        sizes["steps"] = FULL_STEPS_CUDA
    pick = {key: default if getattr(args, key) is None else getattr(args, key) for key, default in sizes.items()}
    if args.eval_batch_size is None:
        args.eval_batch_size = default_eval_batch_size(device, IMAGE_SIZE)
    if args.batch_size < 1 or args.eval_batch_size < 1 or pick["n"] < args.batch_size:
        raise SystemExit(f"--batch_size and --eval_batch_size must be >= 1 and --n ({pick['n']}) "
                         f"at least --batch_size ({args.batch_size})")
    if pick["steps"] < 0 or min(pick["repeats"], pick["eval_n"], args.workers) < 1:
        raise SystemExit("--steps must be >= 0; --repeats, --eval_n and --workers >= 1")
    if args.compile and device.type != "cuda":
        print("--compile is used on CUDA only; running eagerly", file=sys.stderr)
    return BenchConfig(n=pick["n"], steps=pick["steps"], batch_size=args.batch_size,
                       eval_batch_size=args.eval_batch_size, repeats=pick["repeats"], eval_n=pick["eval_n"],
                       workers=args.workers, device=device, compile=args.compile and device.type == "cuda",
                       seed=args.seed, quick=args.quick,
                       out=args.out or os.path.join(REPO, "bench", "RESULTS_streamed.md" if args.streamed
                                                    else "RESULTS.md"))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return f"CPU: {line.split(':', 1)[1].strip()} ({os.cpu_count()} logical cores)"
    except OSError:
        pass
    return f"CPU: {platform.processor() or platform.machine()} ({os.cpu_count()} logical cores)"


# ============================================================================ timing
class Clock:
    """Wall time of a callable; on CUDA between two events with the device synchronised
    first, so queued kernels are neither missed nor charged to the next measurement."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def timed(self, work: Callable[[], T]) -> Tuple[float, T]:
        """Seconds ``work()`` took, and what it returned."""
        if self.cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            result = work()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000.0, result
        start_time = time.perf_counter()
        result = work()
        return time.perf_counter() - start_time, result


@dataclass
class Workload:
    """What one path runs: an untimed warm-up, then ``trial`` once per repeat.
    ``trial`` returns the number of images it handled."""

    trial: Callable[[], int]
    warmup: Callable[[], object] = lambda: None
    close: Callable[[], object] = lambda: None


@dataclass
class Measurement:
    name: str
    images: int  # per trial
    seconds: List[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rates(self) -> List[float]:
        return [self.images / s for s in self.seconds]

    @property
    def median_rate(self) -> float:
        return self.images / self.median

    def epoch_seconds(self) -> float:
        """Median seconds per EPOCH_IMAGES images, linear in the images timed."""
        return self.median * EPOCH_IMAGES / self.images


def measure(name: str, workload: Workload, clock: Clock, repeats: int) -> Measurement:
    """Warm-up, then ``repeats`` timed trials; prints one progress line to stderr."""
    result = Measurement(name, images=0)
    try:
        workload.warmup()
        clock.sync()
        for _ in range(repeats):
            seconds, result.images = clock.timed(workload.trial)
            result.seconds.append(seconds)
    finally:
        workload.close()
    images = f" for {result.images} images" if result.images else ""
    print(f"  {name}: {result.median:.4f} s (median of {repeats}){images}", file=sys.stderr)
    return result


# ============================================================================ data and models
@dataclass
class Bench:
    """Everything the paths share: settings, clock, the synthetic data in both layouts."""

    config: BenchConfig
    clock: Clock
    train: ImageSet  # uint8 N x 3 x 32 x 32 and int64 labels, on the device (ours)
    test: ImageSet  # eval_n images for evaluation, on the device
    hwc: np.ndarray  # the same train images, N x 32 x 32 x 3 uint8 (torchvision CIFAR's layout)
    targets: List[int]  # the same labels as a Python list (torchvision CIFAR's ``targets``)

    @property
    def device(self) -> torch.device:
        return self.config.device


def make_bench(config: BenchConfig) -> Bench:
    generator = torch.Generator().manual_seed(config.seed)
    shape = (3, IMAGE_SIZE, IMAGE_SIZE)
    images = torch.randint(0, 256, (config.n, *shape), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (config.n,), generator=generator)
    test_images = torch.randint(0, 256, (config.eval_n, *shape), dtype=torch.uint8, generator=generator)
    test_labels = torch.randint(0, NUM_CLASSES, (config.eval_n,), generator=generator)
    hwc = images.permute(0, 2, 3, 1).contiguous().numpy()
    return Bench(config, Clock(config.device), ImageSet(images, labels).to(config.device),
                 ImageSet(test_images, test_labels).to(config.device), hwc, labels.tolist())


def new_model(bench: Bench, channels_last: bool = False) -> nn.Module:
    """ResNet-20s with the same initial weights every time."""
    torch.manual_seed(bench.config.seed)
    model = build_model(ARCH, NUM_CLASSES).to(bench.device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def forward_model(bench: Bench, model: nn.Module) -> nn.Module:
    """``model`` compiled when ``--compile`` (CUDA) was asked for, as the runners do.

    Compiled state of earlier rows is dropped first, so rows neither share compiled graphs
    nor run into the recompilation limit (and fall back to eager) as models accumulate."""
    if not bench.config.compile:
        return model
    torch.compiler.reset()
    return torch.compile(model)  # type: ignore[return-value]


def new_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return make_optimizer(model, LR, MOMENTUM, WEIGHT_DECAY)


def loop_settings(bench: Bench, precision: str, channels_last: bool) -> LoopSettings:
    return LoopSettings(batch_size=bench.config.batch_size, eval_batch_size=bench.config.eval_batch_size,
                        precision=precision, channels_last=channels_last, print_freq=10 ** 9, progress=False)


# ============================================================================ the published path
class CifarStyleDataset(Dataset):
    """Item access as torchvision's CIFAR10 does it: the uint8 HWC array of one image
    becomes a PIL image, then the transform runs on it."""

    def __init__(self, data: np.ndarray, targets: List[int], transform: Callable):
        self.data = data
        self.targets = targets
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        from PIL import Image
        return self.transform(Image.fromarray(self.data[index])), self.targets[index]


class WithIndex(Dataset):
    """Adds the example's index to each item, so a DataLoader batch can write records."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int, int]:
        image, target = self.dataset[index]
        return image, target, index


def published_transform() -> Callable:
    from torchvision import transforms
    return transforms.Compose([transforms.RandomCrop(IMAGE_SIZE, padding=CROP_PADDING),
                               transforms.RandomHorizontalFlip(), transforms.ToTensor()])


def published_dataset(bench: Bench) -> CifarStyleDataset:
    return CifarStyleDataset(bench.hwc, bench.targets, published_transform())


class RunningMean:
    """A running average as the published AverageMeter keeps it."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def update(self, value: float, n: int) -> None:
        self.total += value * n
        self.count += n


def top1_percent(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy in percent through ``topk``, as the published ``accuracy()`` computes it."""
    predicted = logits.topk(1, dim=1).indices.t()
    return predicted.eq(targets.view(1, -1)).flatten().float().sum().mul(100.0 / targets.numel())


def published_batch(dataset: CifarStyleDataset, batch_indices: np.ndarray,
                    device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """One batch as the published ``train()`` builds it: one ``__getitem__`` per example in
    the main process, ``torch.stack``, and the labels picked from ``np.array(targets)``
    (the whole label list converted again at every step)."""
    images = torch.stack([dataset[index][0] for index in batch_indices])
    targets = torch.LongTensor(np.array(dataset.targets)[batch_indices].tolist())
    return images.to(device), targets.to(device)


def published_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                   targets: torch.Tensor, batch_indices: np.ndarray, records: np.ndarray,
                   loss_meter: RunningMean, accuracy_meter: RunningMean) -> None:
    """The published step: forward, backward, SGD step; the per-example record written one
    element at a time; loss and accuracy read back with ``.item()`` for the meters."""
    logits = model(images)
    loss = F.cross_entropy(logits, targets)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    hits = logits.detach().argmax(dim=1) == targets
    for j, index in enumerate(batch_indices):
        records[index, 0] = hits[j]
    accuracy = top1_percent(logits.detach().float(), targets)
    loss_meter.update(loss.float().item(), images.shape[0])
    accuracy_meter.update(accuracy.item(), images.shape[0])


def published_records(n: int) -> np.ndarray:
    """The published per-epoch record: float64, one row per example, -1 = untrained."""
    return -np.ones((n, 1))


def permuted_batches(n: int, batch_size: int, batches: int, rng: np.random.Generator) -> List[np.ndarray]:
    """The first ``batches`` batches of a fresh permutation of ``range(n)``."""
    order = rng.permutation(n)
    return [order[b * batch_size:(b + 1) * batch_size] for b in range(batches)]


def path_a_published_train(bench: Bench) -> Workload:
    """(a) The published loop: main-process PIL transforms, per-element records, ``.item()``."""
    config, device = bench.config, bench.device
    dataset = published_dataset(bench)
    model = new_model(bench)
    optimizer = new_optimizer(model)
    model.train()
    rng = np.random.default_rng(config.seed)

    def run(batches: int) -> int:
        records = published_records(config.n)
        loss_meter, accuracy_meter = RunningMean(), RunningMean()
        images_seen = 0
        for batch_indices in permuted_batches(config.n, config.batch_size, batches, rng):
            images, targets = published_batch(dataset, batch_indices, device)
            published_step(model, optimizer, images, targets, batch_indices, records, loss_meter, accuracy_meter)
            images_seen += len(batch_indices)
        return images_seen

    return Workload(trial=lambda: run(config.published_batches_per_trial), warmup=lambda: run(1))


def path_b_dataloader_train(bench: Bench) -> Workload:
    """(b) The same Dataset and step behind a shuffling ``DataLoader`` with worker processes.

    One loader iterator serves the warm-up and every repeat (its ``RandomSampler``, the
    sampler ``shuffle=True`` builds, draws as many samples as all of them need, in fresh
    permutations), so worker start-up is not charged to the timed steps: over a real epoch
    it is amortised. The warm-up takes more batches than the workers prefetch, so the timed
    steps start from the steady state, not from a queue filled while nothing was timed."""
    config, device = bench.config, bench.device
    cuda = device.type == "cuda"
    dataset = WithIndex(published_dataset(bench))
    warmup_batches = config.workers * LOADER_PREFETCH_FACTOR + 1
    batches_needed = warmup_batches + config.repeats * config.published_batches_per_trial
    sampler = RandomSampler(dataset, num_samples=batches_needed * config.batch_size,
                            generator=torch.Generator().manual_seed(config.seed))
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler,
                        num_workers=config.workers, prefetch_factor=LOADER_PREFETCH_FACTOR, pin_memory=cuda)
    model = new_model(bench)
    optimizer = new_optimizer(model)
    model.train()
    stream: Optional[Iterator] = None

    def run(batches: int) -> int:
        nonlocal stream
        if stream is None:
            stream = iter(loader)
        records = published_records(config.n)
        loss_meter, accuracy_meter = RunningMean(), RunningMean()
        images_seen = 0
        for images, targets, indices in itertools.islice(stream, batches):
            images, targets = images.to(device, non_blocking=cuda), targets.to(device, non_blocking=cuda)
            published_step(model, optimizer, images, targets, indices.numpy(), records, loss_meter, accuracy_meter)
            images_seen += int(targets.shape[0])
        return images_seen

    def close() -> None:
        nonlocal stream
        stream = None  # the last reference to the loader's iterator: its workers stop here

    return Workload(trial=lambda: run(config.published_batches_per_trial), warmup=lambda: run(warmup_batches),
                    close=close)


def path_a_published_data(bench: Bench) -> Workload:
    """(a) data alone: the published float batches (and labels) on the device, no model."""
    config, device = bench.config, bench.device
    dataset = published_dataset(bench)
    rng = np.random.default_rng(config.seed)

    def run(batches: int) -> int:
        images_seen = 0
        for batch_indices in permuted_batches(config.n, config.batch_size, batches, rng):
            images, _ = published_batch(dataset, batch_indices, device)
            images_seen += int(images.shape[0])
        return images_seen

    return Workload(trial=lambda: run(config.published_batches_per_trial), warmup=lambda: run(1))


# ============================================================================ our path
def warmup_count(total: int, batch_size: int) -> int:
    """Examples for a warm-up that meets every batch shape of a run over ``total`` examples:
    one full batch plus the final, smaller one if there is one (so ``--compile`` compiles
    both before the timing starts)."""
    return min(total, batch_size + total % batch_size)


def trial_indices(bench: Bench, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` distinct dataset indices in random order, on the device."""
    return torch.randperm(bench.config.n, generator=generator, device=bench.device)[:count]


def path_c_ours_train(bench: Bench, precision: str, channels_last: bool) -> Workload:
    """(c) ``training.train_epoch`` on the in-memory uint8 ImageSet, records on."""
    config, device = bench.config, bench.device
    model = new_model(bench, channels_last)
    optimizer = new_optimizer(model)
    runnable = forward_model(bench, model)
    settings = loop_settings(bench, precision, channels_last)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    statistics = prac.RoundStatistics.empty(1, config.n, device)

    def run(count: int) -> int:
        set_float32_math(precision)
        indices = trial_indices(bench, count, generator)
        stats = train_epoch(runnable, optimizer, bench.train, indices, generator, settings,
                            crop_padding=CROP_PADDING, on_batch=statistics.batch_hook(0))
        return stats.examples

    total = config.images_per_trial
    return Workload(trial=lambda: run(total), warmup=lambda: run(warmup_count(total, config.batch_size)))


def path_c_ours_data(bench: Bench) -> Workload:
    """(c) data alone: the batches ``train_epoch`` feeds the model (float, on the device)."""
    config, device = bench.config, bench.device
    generator = torch.Generator(device=device).manual_seed(config.seed)

    def run(count: int) -> int:
        order = trial_indices(bench, count, generator)
        for begin in range(0, count, config.batch_size):
            batch = order[begin:begin + config.batch_size]
            to_model_input(random_crop_flip(bench.train.images[batch], CROP_PADDING, generator), False)
            bench.train.labels[batch]  # noqa: B018 (the labels are part of the batch)
        return count

    return Workload(trial=lambda: run(config.images_per_trial), warmup=lambda: run(config.batch_size))


def path_ours_eval(bench: Bench, precision: str, channels_last: bool) -> Workload:
    """``training.evaluate`` on the ``--eval_n`` test images."""
    model = new_model(bench, channels_last)
    runnable = forward_model(bench, model)
    settings = loop_settings(bench, precision, channels_last)
    warm = warmup_count(len(bench.test), settings.eval_batch_size)
    warm_set = ImageSet(bench.test.images[:warm], bench.test.labels[:warm])

    def run(data: ImageSet) -> int:
        set_float32_math(precision)
        evaluate(runnable, data, settings)
        return len(data)

    return Workload(trial=lambda: run(bench.test), warmup=lambda: run(warm_set))


# ============================================================================ bookkeeping
def epoch_batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device) -> List[torch.Tensor]:
    """One epoch over ``range(n)`` in batches, on ``device``."""
    return list(torch.randperm(n, generator=generator, device=device).split(batch_size))


def random_hits(batches: Sequence[torch.Tensor], generator: torch.Generator) -> List[torch.Tensor]:
    """A boolean 'predicted right' per example of each batch, on the batches' device."""
    return [torch.rand(b.numel(), generator=generator, device=b.device) < 0.5 for b in batches]


def records_write_published(bench: Bench) -> Workload:
    """The published record write of one epoch over ``--n`` examples: a float64 numpy array
    written one element at a time from the step's device tensor."""
    config, device = bench.config, bench.device
    generator = torch.Generator(device=device).manual_seed(config.seed)
    batches = epoch_batches(config.n, config.batch_size, generator, device)
    host_batches = [b.cpu().numpy() for b in batches]
    hits = random_hits(batches, generator)

    def run() -> int:
        records = published_records(config.n)
        for batch_indices, acc in zip(host_batches, hits):
            for j, index in enumerate(batch_indices):
                records[index, 0] = acc[j]
        return config.n

    return Workload(trial=run)  # no warm-up: it would only repeat the same Python loop


def records_write_ours(bench: Bench) -> Workload:
    """Our record write of one epoch over ``--n`` examples: the batch hook of
    ``prac.CorrectnessRecorder`` (one indexed write per batch into the int8 records on the
    device), as ``train_epoch`` calls it."""
    config, device = bench.config, bench.device
    generator = torch.Generator(device=device).manual_seed(config.seed)
    batches = epoch_batches(config.n, config.batch_size, generator, device)
    logits = [torch.randn(b.numel(), 10, generator=generator, device=device) for b in batches]
    targets = [torch.randint(0, 10, (b.numel(),), generator=generator, device=device) for b in batches]
    hook = prac.RoundStatistics.empty(1, config.n, device).batch_hook(0)

    def run() -> int:
        for batch, batch_logits, batch_targets in zip(batches, logits, targets):
            hook(batch, batch_logits, batch_targets)
        return config.n

    return Workload(trial=run, warmup=run)


def forgetting_workload(bench: Bench) -> Workload:
    """``prac.forgetting_events`` on the round's records as the PrAC runner passes them:
    the epochs x N int8 tensor on the device, transposed to N x epochs and copied to host."""
    config, device = bench.config, bench.device
    generator = torch.Generator(device=device).manual_seed(config.seed)
    records = torch.randint(0, 2, (RECORD_EPOCHS, config.n), generator=generator, device=device).to(torch.int8)
    records[:, ::10] = -1  # some examples untrained in this round

    def run() -> int:
        prac.forgetting_events(records.t().cpu().numpy())
        return config.n

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
@dataclass
class Results:
    train_a: Measurement
    train_b: Measurement
    train_fp32: Measurement
    train_bf16: Measurement
    data_a: Measurement
    data_c: Measurement
    eval_fp32: Measurement
    eval_bf16: Measurement
    write_published: Measurement
    write_ours: Measurement
    forgetting: Measurement
    early_bird: Measurement


def run_all(bench: Bench) -> Results:
    clock, repeats = bench.clock, bench.config.repeats
    print(f"timing on {device_name(bench.device)}, {torch.get_num_threads()} threads", file=sys.stderr)
    set_float32_math("fp32")  # the published paths too: fp32 is IEEE fp32 (TF32 off) in every row
    return Results(
        train_a=measure("(a) published train", path_a_published_train(bench), clock, repeats),
        train_b=measure("(b) DataLoader train", path_b_dataloader_train(bench), clock, repeats),
        train_fp32=measure("(c) ours train fp32", path_c_ours_train(bench, "fp32", False), clock, repeats),
        train_bf16=measure("(c) ours train bf16", path_c_ours_train(bench, "bf16", True), clock, repeats),
        data_a=measure("(a) published data", path_a_published_data(bench), clock, repeats),
        data_c=measure("(c) ours data", path_c_ours_data(bench), clock, repeats),
        eval_fp32=measure("eval fp32", path_ours_eval(bench, "fp32", False), clock, repeats),
        eval_bf16=measure("eval bf16", path_ours_eval(bench, "bf16", True), clock, repeats),
        write_published=measure("records write, published", records_write_published(bench), clock, repeats),
        write_ours=measure("records write, ours", records_write_ours(bench), clock, repeats),
        forgetting=measure("forgetting_events", forgetting_workload(bench), clock, repeats),
        early_bird=measure("candidate_mask + mask_distance", early_bird_workload(bench), clock, repeats),
    )


def _spread(values: Sequence[float], fmt: str) -> str:
    return f"{format(min(values), fmt)}–{format(max(values), fmt)}"


def throughput_row(label: str, m: Measurement, base: Optional[Measurement], epoch: bool = True) -> str:
    ratio = f"{m.median_rate / base.median_rate:.2f}x" if base is not None else "—"
    seconds = f"{m.epoch_seconds():.1f}" if epoch else "—"
    return (f"| {label} | {m.median_rate:,.0f} | {_spread(m.rates, ',.0f')} | {seconds} | {ratio} |")


def bookkeeping_row(label: str, when: str, m: Measurement, per_epoch_examples: Optional[int],
                    epoch_seconds: float) -> str:
    """Seconds scaled from ``--n`` examples to EPOCH_IMAGES when the work is per example."""
    scale = EPOCH_IMAGES / per_epoch_examples if per_epoch_examples else 1.0
    seconds = [s * scale for s in m.seconds]
    median = statistics.median(seconds)
    return (f"| {label} | {when} | {median:.4f} | {_spread(seconds, '.4f')} | "
            f"{100.0 * median / epoch_seconds:.3g}% |")


def render(bench: Bench, results: Results) -> str:
    """The markdown report: settings, throughput table, bookkeeping table, notes."""
    config = bench.config
    r = results
    timed = (f"whole epochs of {config.n} images" if config.images_per_trial == config.n
             else f"{config.batches_per_trial} batches of {config.batch_size}")
    extrapolated = " (extrapolated)" if config.extrapolated else ""
    n_scaled = config.n != EPOCH_IMAGES
    compile_note = "on" if config.compile else "off"
    lines = [
        f"# Training throughput: published PrAC-LTH path vs ours{' (quick mode)' if config.quick else ''}",
        "",
        f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- device: {device_name(bench.device)}",
        f"- torch {torch.__version__}, torchvision {_torchvision_version()}, numpy {np.__version__}, "
        f"Python {platform.python_version()}",
        f"- threads: torch.get_num_threads() = {torch.get_num_threads()} "
        f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}); DataLoader workers: {config.workers}",
        f"- repeats: {config.repeats} per row (median, spread = min–max), after an untimed warm-up",
        f"- model: ResNet-20s, {NUM_CLASSES} classes; data: {config.n} synthetic uint8 3x32x32 images, "
        f"random labels, in memory; eval on {config.eval_n} images; torch.compile: {compile_note}",
        "- fp32 rows are IEEE fp32 (TF32 off for matmuls and cuDNN convolutions, as --precision fp32)",
        f"- training and data rows time {timed} per repeat"
        + (f" and extrapolate to a {EPOCH_IMAGES:,}-image epoch" if config.extrapolated else "")
        + (f"; the published paths (a), (b) time {config.published_batches_per_trial} batches and extrapolate"
           if config.published_batches_per_trial != config.batches_per_trial else ""),
        "",
        f"| Path | images/s | spread | s per {EPOCH_IMAGES // 1000}k-image epoch{extrapolated} | vs (a) |",
        "|---|---:|---:|---:|---:|",
        throughput_row("(a) published: PIL transforms per example, main process, per-element records",
                       r.train_a, r.train_a),
        throughput_row(f"(b) DataLoader, {config.workers} workers, same PIL transforms and step",
                       r.train_b, r.train_a),
        throughput_row("(c) ours: train_epoch, uint8 ImageSet, records on, fp32", r.train_fp32, r.train_a),
        throughput_row("(c) ours: train_epoch, bf16 + channels_last", r.train_bf16, r.train_a),
        throughput_row("data path alone, (a) published", r.data_a, r.data_a),
        throughput_row("data path alone, (c) ours", r.data_c, r.data_a),
        throughput_row(f"evaluate, {config.eval_n} images, fp32", r.eval_fp32, None, epoch=False),
        throughput_row(f"evaluate, {config.eval_n} images, bf16 + channels_last", r.eval_bf16, None, epoch=False),
        "",
        "Training rows compare with (a) training, data-path rows with (a)'s data path. (a) also rebuilds "
        "`np.array(targets)` from the label list at every step and calls `.item()` twice, as the published "
        "`train()` does; (b) is timed after worker start-up, with the prefetch queue in its steady state; "
        "the data-path rows end with float batches (and labels) on the device.",
        "",
        f"| Bookkeeping | when | seconds{' (scaled to 45k examples)' if n_scaled else ''} | spread | "
        "% of our fp32 epoch |",
        "|---|---|---:|---:|---:|",
    ]
    epoch_seconds = r.train_fp32.epoch_seconds()
    lines += [
        bookkeeping_row("records write, published (per-element loop into numpy)", "every epoch",
                        r.write_published, config.n, epoch_seconds),
        bookkeeping_row("records write, ours (one indexed write per batch)", "every epoch",
                        r.write_ours, config.n, epoch_seconds),
        bookkeeping_row(f"prac.forgetting_events, N x {RECORD_EPOCHS} int8 (as the runner passes it)",
                        "once per round", r.forgetting, config.n, epoch_seconds),
        bookkeeping_row("pruner.candidate_mask + mask_distance, dense ResNet-20s", "every epoch (Early-Bird)",
                        r.early_bird, None, epoch_seconds),
        "",
        f"Percentages are of our fp32 epoch ({epoch_seconds:.1f} s per {EPOCH_IMAGES:,} images above).",
        "",
    ]
    return "\n".join(lines)


# ============================================================================ --streamed
def write_jpeg_tree(root: str, n: int, seed: int) -> str:
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
    return root


def device_generator(device: torch.device, seed: int) -> torch.Generator:
    """A seeded generator on ``device``: a random op takes the generator of its tensors'
    device, so a CPU generator crashes every draw the loop makes on CUDA."""
    return torch.Generator(device=device).manual_seed(seed)


def streamed_data_workload(train: object, count: int, seed: int) -> Workload:
    """One pass of ``count`` random indices through the loop's batch seam, ending with float
    batches on the device (as ``train_epoch`` feeds the model)."""
    from training import _train_batches  # the seam itself, so both paths are timed as trained

    generator = device_generator(train.device, seed)
    padding = max(1, images_side(train) // 8)

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
    optimizer = new_optimizer(model)
    settings = LoopSettings(batch_size=STREAM_BATCH, eval_batch_size=STREAM_BATCH, print_freq=10 ** 9,
                            progress=False)
    generator = device_generator(train.device, seed)

    def run(images: int) -> int:
        indices = torch.randperm(len(train), generator=generator, device=train.device)[:images]
        return train_epoch(model, optimizer, train, indices, generator, settings).examples

    return Workload(trial=lambda: run(count), warmup=lambda: run(min(count, STREAM_BATCH)))


def images_side(train: object) -> int:
    return train.image_size if hasattr(train, "image_size") else int(train.images.shape[-1])


def run_streamed(config: BenchConfig, stream_n: int, size: int, train_steps: int) -> str:
    import tempfile

    import dataset

    rows = []
    clock = Clock(config.device)
    count = min(train_steps * STREAM_BATCH, stream_n)
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
        for label, train in kinds:
            workload = streamed_data_workload(train, stream_n, config.seed)
            rows.append((f"data path alone, {label}", measure(label, workload, clock, config.repeats)))
        for label, train in kinds:
            workload = streamed_train_workload(train, count, config.seed)
            rows.append((f"train_epoch, ResNet-18, {label}", measure(label, workload, clock, config.repeats)))
    lines = [
        f"# Streamed JPEGs vs in-memory images{' (quick mode)' if config.quick else ''}",
        "",
        f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- device: {device_name(config.device)}; {os.cpu_count()} CPU cores",
        f"- torch {torch.__version__}, torchvision {_torchvision_version()}, numpy {np.__version__}, "
        f"Python {platform.python_version()}",
        f"- threads: torch.get_num_threads() = {torch.get_num_threads()} "
        f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}); DataLoader workers use one each",
        f"- data: {stream_n} JPEG files of {STREAM_JPEG[0]}x{STREAM_JPEG[1]} (quality 90) in an ImageFolder, "
        f"images of {size}x{size}, batches of {STREAM_BATCH}; {config.repeats} repeats (median, min–max)",
        f"- data rows pass all {stream_n} images; train rows {count} "
        f"({STREAM_ARCH}, {STREAM_CLASSES} classes, fp32)",
        "",
        "| Path | images/s | spread | vs in memory |",
        "|---|---:|---:|---:|",
    ]
    bases = {"data": rows[0][1], "train": rows[len(kinds)][1]}
    for label, m in rows:
        base = bases["data" if label.startswith("data") else "train"]
        lines.append(f"| {label} | {m.median_rate:,.1f} | {_spread(m.rates, ',.1f')} | "
                     f"{m.median_rate / base.median_rate:.2f}x |")
    lines += ["", "The record gather across ranks is measured apart, by bench/bench_gather.py under torchrun.", ""]
    return "\n".join(lines)


def _torchvision_version() -> str:
    try:
        import torchvision
        return torchvision.__version__
    except Exception as error:  # torchvision absent or broken: report, do not fail here
        return f"unavailable ({type(error).__name__})"


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    config = resolve_config(args)
    started = time.perf_counter()
    if args.streamed:
        sizes = STREAM_QUICK if args.quick else STREAM_SIZES
        report = run_streamed(config, args.stream_n or sizes["n"], args.stream_size, sizes["train_steps"])
    else:
        bench = make_bench(config)
        report = render(bench, run_all(bench))
    print(report)
    out_dir = os.path.dirname(os.path.abspath(config.out))
    os.makedirs(out_dir, exist_ok=True)
    with open(config.out, "w") as handle:
        handle.write(report)
    print(f"wrote {config.out} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
