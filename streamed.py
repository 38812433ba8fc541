"""Image files decoded by DataLoader workers: the path for data sets too large for memory
(``--dataset imagenet``, a big ``--dataset folder``).

A :class:`StreamedImageSet` stands where an in-memory :class:`dataset.ImageSet` stands:
``len()``, ``labels`` (on the training device) and ``device``. The training loop still draws
the epoch's permutation of the round's dataset indices itself; the set only turns a batch of
dataset indices into a batch of uint8 images, decoded and augmented in worker processes,
and every batch comes back with the dataset indices it holds. So per-example records,
subsets and predictions work on dataset indices exactly as in memory.

Reproducibility: each example's random crop and flip are drawn from a generator seeded by
(the epoch's seed, its dataset index), never from a worker's own random state, so a seeded
run gives the same images, and the same numbers, with any ``--workers`` (0 included).
"""
import math
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from utils import UserError

EVAL_RESIZE_RATIO = 256 / 224  # evaluation: resize the shorter side to 256, centre crop 224 (scaled)
CROP_SCALE = (0.08, 1.0)       # RandomResizedCrop's defaults (torchvision, the ImageNet recipe)
CROP_RATIO = (3 / 4, 4 / 3)
CROP_TRIES = 10
EVAL_SEED = -1                 # the epoch seed that asks for the evaluation transform
PREFETCH_BATCHES = 4           # batches each worker decodes ahead
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CPU = torch.device("cpu")

Item = Tuple[int, int]  # (dataset index, epoch seed or EVAL_SEED)


def resized_crop_box(width: int, height: int, rng: np.random.Generator) -> Tuple[int, int, int, int]:
    """(left, top, crop width, crop height) drawn as torchvision's RandomResizedCrop draws
    them: area 8-100% of the image, aspect 3/4-4/3 (log-uniform), ten tries, then the
    largest centred crop of an allowed aspect."""
    area = width * height
    log_low, log_high = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for _ in range(CROP_TRIES):
        target_area = area * rng.uniform(*CROP_SCALE)
        aspect = math.exp(rng.uniform(log_low, log_high))
        crop_w = int(round(math.sqrt(target_area * aspect)))
        crop_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            return left, top, crop_w, crop_h
    ratio = width / height
    if ratio < CROP_RATIO[0]:
        crop_w, crop_h = width, int(round(width / CROP_RATIO[0]))
    elif ratio > CROP_RATIO[1]:
        crop_w, crop_h = int(round(height * CROP_RATIO[1])), height
    else:
        crop_w, crop_h = width, height
    return (width - crop_w) // 2, (height - crop_h) // 2, crop_w, crop_h


def decode_image(path: str, size: int, rng: Optional[np.random.Generator]) -> np.ndarray:
    """One image file as uint8 C x size x size. ``rng`` given: the training transform (random
    resized crop, random horizontal flip). ``rng`` None: the evaluation transform (shorter side
    resized to size * 256/224, centre crop of ``size``). Crop and resize are one PIL resize with a source box."""
    from PIL import Image

    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    except (OSError, ValueError) as error:  # PIL's UnidentifiedImageError is an OSError
        raise UserError(f"{path} is not a readable image ({error})") from None
    width, height = image.size
    if rng is None:
        side = min(width, height) * size / int(size * EVAL_RESIZE_RATIO)  # the centre crop, in source pixels
        left, top, crop_w, crop_h = (width - side) / 2, (height - side) / 2, side, side
    else:
        left, top, crop_w, crop_h = resized_crop_box(width, height, rng)
    out = image.resize((size, size), Image.BILINEAR, box=(left, top, left + crop_w, top + crop_h))
    if rng is not None and rng.random() < 0.5:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return np.ascontiguousarray(np.asarray(out, dtype=np.uint8).transpose(2, 0, 1))


class ImageFiles(Dataset):
    """``dataset[(index, epoch_seed)]`` -> (uint8 image, index); decoded where it is asked for."""

    def __init__(self, paths: Sequence[str], size: int):
        self.paths = list(paths)
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: Item) -> Tuple[torch.Tensor, int]:
        index, epoch_seed = item
        rng = None if epoch_seed == EVAL_SEED else np.random.default_rng([epoch_seed, index])
        return torch.from_numpy(decode_image(self.paths[index], self.size, rng)), index


class StreamedImageSet:
    """Image files with their labels; batches are decoded by ``workers`` DataLoader workers."""

    def __init__(self, paths: Sequence[str], labels: torch.Tensor, image_size: int, workers: int,
                 device: torch.device = CPU):
        self.paths = list(paths)
        self.labels = labels
        self.image_size = image_size
        self.workers = workers
        self.device = device
        # The loader's batch sampler: the batches of the current pass, refilled before each pass,
        # so one loader (and its persistent workers) serves every epoch and evaluation.
        self._plan: List[List[Item]] = []
        self._loader: Optional[DataLoader] = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device) -> "StreamedImageSet":
        return StreamedImageSet(self.paths, self.labels.to(device), self.image_size, self.workers, device)

    def _batches(self, batches: List[List[Item]]) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """(images, dataset indices) on the device, batch by batch in the given order."""
        if self._loader is None:
            self._loader = DataLoader(ImageFiles(self.paths, self.image_size), batch_sampler=self._plan,
                                      num_workers=self.workers, pin_memory=self.device.type == "cuda",
                                      persistent_workers=self.workers > 0,
                                      prefetch_factor=PREFETCH_BATCHES if self.workers > 0 else None)
        self._plan[:] = batches
        for images, indices in self._loader:
            yield (images.to(self.device, non_blocking=True), indices.to(self.device, non_blocking=True))

    def train_batches(self, order: torch.Tensor, batch_size: int, epoch_seed: int,
                      share: Optional[Callable[[int], slice]] = None) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """(dataset indices, augmented uint8 images) for consecutive ``batch_size`` slices of ``order``.
        ``share(n)``: the positions of each batch of ``n`` to decode and yield (a rank's slice
        under torchrun); a batch whose share is empty comes as an empty one."""
        listed = order.tolist()
        whole = [listed[begin:begin + batch_size] for begin in range(0, len(listed), batch_size)]
        batches = whole if share is None else [batch[share(len(batch))] for batch in whole]
        decoded = self._batches([[(index, epoch_seed) for index in batch] for batch in batches if batch])
        for batch in batches:
            if batch:
                images, indices = next(decoded)
                yield indices, images
            else:
                yield (torch.empty(0, dtype=torch.int64, device=self.device),
                       torch.empty((0, 3, self.image_size, self.image_size), dtype=torch.uint8, device=self.device))
        next(decoded, None)  # nothing is left: this finishes the loader's pass

    def eval_batches(self, indices: Optional[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
        """Unaugmented uint8 images of ``indices`` (all, in order, when None), batch by batch."""
        listed = list(range(len(self))) if indices is None else indices.tolist()
        plan = [[(index, EVAL_SEED) for index in listed[begin:begin + batch_size]]
                for begin in range(0, len(listed), batch_size)]
        yield from (images for images, _ in self._batches(plan))
