"""Data sets held in memory as uint8 tensors or streamed from image files, split files, and
batched augmentation.

A data set that fits in memory (CIFAR: 150 MB, Tiny-ImageNet: 1.2 GB, Fashion-MNIST: 47 MB
as uint8) is read once from its published on-disk format into one uint8 tensor on the
training device; a batch is an index slice of a permutation of the round's index tensor,
augmented for the whole batch with tensor ops. Trees of image files (``imagenet``,
``folder``) too large for that are streamed (:mod:`streamed`): DataLoader workers decode
each batch of dataset indices.
"""
import gzip
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from streamed import IMAGE_EXTENSIONS, StreamedImageSet, decode_image
from utils import LOG, UserError

DEFAULT_DATA_DIR = "../data"  # the published --data default
FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
SHIPPED_SPLIT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "npy_files")
VALIDATION_FRACTION_DENOMINATOR = 10  # the last 1/10 of the split file validates


@dataclass(frozen=True)
class DatasetInfo:
    num_classes: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    image_size: int
    crop_padding: int


DATASETS = {
    "cifar10": DatasetInfo(10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 32, 4),
    "cifar100": DatasetInfo(100, (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762), 32, 4),
    "tiny-imagenet": DatasetInfo(200, (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262), 64, 4),
    "fashionmnist": DatasetInfo(10, (0.2860,) * 3, (0.3530,) * 3, 28, 4),
    # Trees of image files; a folder's classes are its train/ subfolders (0 until read).
    "imagenet": DatasetInfo(1000, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 224, 224 // 8),
    "folder": DatasetInfo(0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 224, 224 // 8),
}
# The test folder of each image tree (the train folder is train/ in both layouts).
IMAGE_TREES = {"imagenet": "val", "folder": "test"}
DATA_MODES = ("auto", "memory", "stream")
# auto keeps a folder in memory when its uint8 images take at most this share of the RAM.
MEMORY_SHARE = 4
# Image trees are stored by class: without a split file their split is a permutation fixed
# by this seed (identity order would validate on the last classes only).
TREE_SPLIT_SEED = 0


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8, N x C x H x W (C is 1 for grey images, 3 otherwise)
    labels: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device) -> "ImageSet":
        return ImageSet(self.images.to(device), self.labels.to(device))


AnyImageSet = Union[ImageSet, StreamedImageSet]


@dataclass
class Data:
    """A data set with its split: ``split[:train_number]`` trains, the rest validates."""

    name: str
    info: DatasetInfo
    train: AnyImageSet
    test: AnyImageSet
    split: np.ndarray
    train_number: int
    source: str = ""  # the folder the images were actually read from
    mode: str = "memory"  # or "stream"

    @property
    def train_indices(self) -> np.ndarray:
        return self.split[: self.train_number]

    @property
    def val_indices(self) -> np.ndarray:
        return self.split[self.train_number:]

    def to(self, device: torch.device) -> "Data":
        return replace(self, train=self.train.to(device), test=self.test.to(device))


def train_number_for(train_size: int) -> int:
    """Training examples in a split: 45,000 of CIFAR's 50,000; 90% of any train set."""
    return train_size - train_size // VALIDATION_FRACTION_DENOMINATOR


# ----------------------------------------------------------------------------- split files
def load_npy(path: str, what: str) -> np.ndarray:
    """``np.load`` without pickle: an object array (loading it could run code) is refused, with its own message."""
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        if isinstance(error, ValueError) and "allow_pickle" in str(error):
            raise UserError(f"{what} {path} holds Python objects (an object array), which are refused "
                            "because loading them can run code; save a plain integer array, e.g. "
                            "np.save(path, indices.astype(np.int64))") from None
        raise UserError(f"{what} {path} is not a readable .npy array ({error})") from None


def load_split(split_file: Optional[str], train_size: int, dataset: str) -> np.ndarray:
    """Loads and checks a split file: a permutation of ``range(train_size)``."""
    if split_file is None:
        return np.arange(train_size, dtype=np.int64)
    split = load_npy(split_file, "--split_file")
    if split.ndim != 1 or not np.issubdtype(split.dtype, np.integer):
        raise UserError(f"--split_file {split_file} must be a 1-D integer array, "
                        f"got shape {split.shape} of {split.dtype}")
    if split.shape[0] != train_size:
        raise UserError(f"--split_file {split_file} has {split.shape[0]} entries but the {dataset} "
                        f"train set has {train_size} images; use the split file of this data set "
                        f"(python tools/make_split_files.py --size {train_size} --out FILE makes one)")
    if not np.array_equal(np.sort(split), np.arange(train_size)):
        raise UserError(f"--split_file {split_file} is not a permutation of 0..{train_size - 1} "
                        "(repeated or out-of-range indices)")
    return split.astype(np.int64)


def shipped_split(name: str, train_size: int) -> np.ndarray:
    """Without --split_file: the data set's split file in npy_files/, as the published loaders
    fall back to it (tiny-imagenet's train set is stored by class, so an identity order would
    validate on the last classes and never train them); identity order when none fits."""
    path = os.path.join(SHIPPED_SPLIT_DIR, f"{name}-train-val.npy")
    if os.path.exists(path):
        split = np.load(path, allow_pickle=False)
        if split.shape == (train_size,):
            LOG.info(f"split: {path} (no --split_file given)")
            return load_split(path, train_size, name)
        LOG.info(f"split: identity order; the shipped {path} has {split.shape[0]} entries but this "
                 f"{name} train set has {train_size} images")
    return np.arange(train_size, dtype=np.int64)


# ----------------------------------------------------------------------------- loading
def load_data(name: str, root: str, split_file: Optional[str] = None, download: bool = True, *,
              mode: str = "auto", image_size: Optional[int] = None, workers: int = 0) -> Data:
    """Reads ``name`` from ``root`` in its published layout (downloading when absent and
    possible) and applies the split file. ``mode`` (memory, stream, auto), ``image_size`` and
    ``workers`` concern the image trees (imagenet, folder); the others are always held in memory."""
    if name not in DATASETS:
        raise UserError(f"unknown --dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if name in IMAGE_TREES:
        return _load_image_tree(name, root, split_file, mode, image_size, workers)
    if mode == "stream":
        raise UserError(f"--data_mode stream reads trees of image files (--dataset {' or '.join(IMAGE_TREES)}); "
                        f"{name} is held in memory")
    readers: Dict[str, Callable[[str, bool], Tuple[ImageSet, ImageSet, str]]] = {
        "cifar10": partial(_read_cifar, "cifar10"), "cifar100": partial(_read_cifar, "cifar100"),
        "tiny-imagenet": _read_tiny_imagenet, "fashionmnist": _read_fashion_mnist}
    train, test, source = readers[name](root, download)
    for part, images in (("train", train), ("test", test)):
        check_labels(images.labels, DATASETS[name].num_classes, f"{name} {part} set in {source}")
    split = load_split(split_file, len(train), name) if split_file else shipped_split(name, len(train))
    return Data(name, DATASETS[name], train, test, split, train_number_for(len(train)), source)


def check_labels(labels: torch.Tensor, num_classes: int, what: str) -> None:
    """Refuses labels outside ``0..num_classes-1`` (they would fail mid-training)."""
    outside = int(((labels < 0) | (labels >= num_classes)).sum())
    if outside:
        raise UserError(f"the {what} has labels outside 0..{num_classes - 1} ({outside} of {labels.numel()}, "
                        f"from {int(labels.min())} to {int(labels.max())}); is it this data set, unmodified?")


def _download_with_torchvision(name: str, root: str) -> None:
    """Downloads through torchvision, which verifies the checksums of what it fetches."""
    try:
        import torchvision.datasets as tv_datasets
    except Exception as error:  # torchvision absent or built for another torch
        raise UserError(f"{name} is not in {root} and torchvision cannot download it ({error})") from None
    dataset_class = {"cifar10": tv_datasets.CIFAR10, "cifar100": tv_datasets.CIFAR100,
                     "fashionmnist": tv_datasets.FashionMNIST}[name]
    try:
        os.makedirs(root, exist_ok=True)
        for train in (True, False):
            dataset_class(root, train=train, download=True)
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"{name} is not in {root} and could not be downloaded ({reason[:200]}); "
                        "put the data set there (see README: data sets) or pass --data DIR") from None


def _find_dir(root: str, folder: str, marker: str) -> Optional[str]:
    """``root/folder`` or ``root`` itself, whichever holds ``marker`` (the first; None if neither)."""
    candidates = (os.path.join(root, folder), root)
    return next((path for path in candidates if os.path.exists(os.path.join(path, marker))), None)


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a class or function (``module.name``) that CIFAR data never needs."""


_LATIN1_NAMES = ("latin1", "latin_1", "iso8859_1", "iso_8859_1", "l1")


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, limited to latin-1."""
    if str(encoding).lower().replace("-", "_") not in _LATIN1_NAMES or not isinstance(text, str):
        raise pickle.UnpicklingError(f"bytes encoded as {encoding!r}, not latin-1")
    return text.encode("latin1")


def _cifar_pickle_globals() -> Dict[Tuple[str, str], Any]:
    """Everything a CIFAR batch file may name: numpy's array and dtype reconstruction (under
    the module names numpy 1 and numpy 2 write) and the latin-1 bytes of protocol 2."""
    core = np._core if hasattr(np, "_core") else np.core  # numpy 2 / numpy 1
    allowed: Dict[Tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                           ("_codecs", "encode"): _latin1_encode}
    for module in ("numpy.core", "numpy._core"):
        allowed[(f"{module}.multiarray", "_reconstruct")] = core.multiarray._reconstruct
        allowed[(f"{module}.multiarray", "scalar")] = core.multiarray.scalar
        allowed[(f"{module}.numeric", "_frombuffer")] = core.numeric._frombuffer
    return allowed


class CifarUnpickler(pickle.Unpickler):
    """Reads CIFAR's pickled batches without executing code: dicts, lists, strings, bytes and
    numbers need no globals, and the only globals admitted rebuild numpy arrays. Anything
    else (``os.system``, a class) raises RefusedGlobal before it is called."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _cifar_pickle_globals().get((module, name))
        if allowed is None:
            raise RefusedGlobal(f"{module}.{name}")
        return allowed


def _unpickle(path: str) -> dict:
    try:
        with open(path, "rb") as handle:
            entry = CifarUnpickler(handle, encoding="latin1").load()
    except RefusedGlobal as refused:
        raise UserError(f"{path} carries code or objects ({refused}), not only CIFAR data; refused to load it. "
                        "Replace it with the file from the published archive") from None
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, AttributeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path} is not a readable CIFAR batch ({reason[:160]})") from None
    if not isinstance(entry, dict):
        raise UserError(f"{path} is not a CIFAR batch: it holds a {type(entry).__name__}, not a dict")
    return entry


def _cifar_images(entries: Sequence[dict], label_key: str, path: str) -> ImageSet:
    try:
        images = np.concatenate([np.asarray(e["data"], dtype=np.uint8).reshape(-1, 3, 32, 32) for e in entries])
        labels = np.concatenate([np.asarray(e[label_key], dtype=np.int64) for e in entries])
    except (KeyError, ValueError) as error:
        raise UserError(f"{path} does not hold CIFAR data ({error})") from None
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels))


# The published archives: folder, train batch files, test batch file, label key.
CIFAR_LAYOUTS = {"cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "labels"),
                 "cifar100": ("cifar-100-python", ["train"], "test", "fine_labels")}


def _read_cifar(name: str, root: str, download: bool) -> Tuple[ImageSet, ImageSet, str]:
    folder, train_files, test_file, label_key = CIFAR_LAYOUTS[name]
    base = _find_dir(root, folder, test_file)
    if base is None and download:
        _download_with_torchvision(name, root)
        base = _find_dir(root, folder, test_file)
    if base is None:
        raise UserError(f"{name} not found: expected {os.path.join(root, folder)}/ with "
                        f"{', '.join(train_files)} and {test_file}; pass --data DIR")
    missing = [f for f in train_files if not os.path.exists(os.path.join(base, f))]
    if missing:
        raise UserError(f"{name} in {base} is incomplete: {', '.join(missing)} missing")
    train = _cifar_images([_unpickle(os.path.join(base, f)) for f in train_files], label_key, base)
    test = _cifar_images([_unpickle(os.path.join(base, test_file))], label_key, base)
    return train, test, base


def load_cifar10(root: str, download: bool = True) -> Tuple[ImageSet, ImageSet]:
    return _read_cifar("cifar10", root, download)[:2]


def load_cifar100(root: str, download: bool = True) -> Tuple[ImageSet, ImageSet]:
    return _read_cifar("cifar100", root, download)[:2]


def _read_idx(path: str) -> np.ndarray:
    """Reads an idx file (gzipped or not): big-endian dims after a 4-byte magic."""
    opener: Callable = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise UserError(f"{path} is not a readable idx file ({error})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not an unsigned-byte idx file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise UserError(f"{path} is truncated: {data.size} bytes of data for dims {dims}")
    return data.reshape(dims)


FASHION_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
                 "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def _idx_files_in(folder: str) -> Tuple[Dict[str, str], List[str]]:
    """The Fashion-MNIST files found in ``folder`` (each gzipped or not) and the names missing."""
    found, missing = {}, []
    for key, stem in FASHION_FILES.items():
        for candidate in (stem, stem + ".gz"):
            if os.path.isfile(os.path.join(folder, candidate)):
                found[key] = os.path.join(folder, candidate)
                break
        else:
            missing.append(stem)
    return found, missing


def _locate_fashion_mnist(root: str, download: bool, fallback: Optional[bool] = None) -> Tuple[Dict[str, str], str]:
    """The idx files to read and their folder, found as :func:`load_fashion_mnist` says.
    ``fallback`` holds by default for the default ``--data`` alone: a folder the user named
    must hold the data set, so the files read are the files named."""
    torchvision_layout = os.path.join(root, "FashionMNIST", "raw")
    layouts = [root, torchvision_layout]
    for folder in layouts:
        files, missing = _idx_files_in(folder)
        if not missing:
            return files, folder
    if fallback is None:
        fallback = os.path.normpath(root) == os.path.normpath(DEFAULT_DATA_DIR)
    if not fallback:
        if not os.path.isdir(root):
            raise UserError(f"--data {root} does not exist; it should hold the fashionmnist files "
                            f"{', '.join(FASHION_FILES.values())} (.gz or not)")
        # name what is missing from the layout that holds most of the files
        fullest = max(layouts, key=lambda folder: len(_idx_files_in(folder)[0]))
        missing = _idx_files_in(fullest)[1]
        raise UserError(f"--data {root} does not hold fashionmnist: {fullest} lacks {', '.join(missing)} "
                        "(.gz or not)")
    files, missing = _idx_files_in(FASHION_MNIST_SYSTEM_DIR)
    if not missing:
        LOG.info(f"fashionmnist is not in --data {root}; reading Debian's copy in {FASHION_MNIST_SYSTEM_DIR}")
        return files, FASHION_MNIST_SYSTEM_DIR
    if download:
        _download_with_torchvision("fashionmnist", root)
        files, missing = _idx_files_in(torchvision_layout)
        if not missing:
            return files, torchvision_layout
    raise UserError(f"fashionmnist not found in {root}: expected {', '.join(FASHION_FILES.values())} "
                    "(.gz or not); on Debian: apt-get install dataset-fashion-mnist")


def _read_fashion_mnist(root: str, download: bool, fallback: Optional[bool] = None) -> Tuple[ImageSet, ImageSet, str]:
    files, folder = _locate_fashion_mnist(root, download, fallback)
    sets = []
    for part in ("train", "test"):
        images, labels = _read_idx(files[f"{part}_images"]), _read_idx(files[f"{part}_labels"])
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise UserError(f"fashionmnist {part} files disagree: images {images.shape}, labels {labels.shape}")
        sets.append(ImageSet(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))))
    return sets[0], sets[1], folder


def load_fashion_mnist(root: str, download: bool = True, fallback: Optional[bool] = None) -> Tuple[ImageSet, ImageSet]:
    """Idx files directly in ``root`` (Debian's layout) or in torchvision's
    ``root/FashionMNIST/raw``; with ``fallback`` (default: only when ``root`` is the default
    ``--data``), else Debian's system copy, else downloaded into ``root``."""
    return _read_fashion_mnist(root, download, fallback)[:2]


def _decode_all(paths: Sequence[str], size: int, decode: Callable[[str, int], np.ndarray]) -> torch.Tensor:
    """uint8 N x 3 x size x size: ``decode(path, size)`` (3 x size x size) of every path."""
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    # PIL releases the GIL while decoding, so threads help here.
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        for i, array in enumerate(pool.map(lambda path: decode(path, size), paths)):
            out[i] = array
    return torch.from_numpy(out)


def _decode_exact(path: str, size: int) -> np.ndarray:
    """An image that is size x size already (tiny-imagenet's), as uint8 3 x size x size."""
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if array.shape[:2] != (size, size):
        raise UserError(f"{path} is {array.shape[1]}x{array.shape[0]}, expected {size}x{size}")
    return array.transpose(2, 0, 1)


def load_tiny_imagenet(root: str, download: bool = True) -> Tuple[ImageSet, ImageSet]:
    """tiny-imagenet-200 as distributed: ``train/<wnid>/images/*.JPEG`` and ``val/images``
    with ``val/val_annotations.txt``. Train images are ordered by sorted wnid, then file name."""
    return _read_tiny_imagenet(root, download)[:2]


def _read_tiny_imagenet(root: str, download: bool) -> Tuple[ImageSet, ImageSet, str]:
    base = _find_dir(root, "tiny-imagenet-200", "train")
    if base is None:
        raise UserError(f"tiny-imagenet not found: expected {os.path.join(root, 'tiny-imagenet-200')}/ "
                        "with train/ and val/ as distributed (it cannot be downloaded automatically)")
    train_dir = os.path.join(base, "train")
    wnids = _class_folders(train_dir)
    class_of = {wnid: i for i, wnid in enumerate(wnids)}
    train_paths, train_labels = [], []
    for wnid in wnids:
        image_dir = os.path.join(train_dir, wnid, "images")
        if not os.path.isdir(image_dir):
            image_dir = os.path.join(train_dir, wnid)
        names = sorted(n for n in os.listdir(image_dir) if n.lower().endswith((".jpeg", ".jpg", ".png")))
        train_paths += [os.path.join(image_dir, n) for n in names]
        train_labels += [class_of[wnid]] * len(names)
    annotations = os.path.join(base, "val", "val_annotations.txt")
    if not os.path.exists(annotations):
        raise UserError(f"tiny-imagenet in {base} lacks val/val_annotations.txt (the layout as distributed)")
    with open(annotations) as handle:
        rows = [parts for parts in map(str.split, handle) if len(parts) >= 2]  # file name, wnid, box
    unknown = [parts[1] for parts in rows if parts[1] not in class_of]
    if unknown:
        raise UserError(f"{annotations} names class {unknown[0]} that train/ does not have")
    val_entries = sorted((parts[0], class_of[parts[1]]) for parts in rows)
    val_paths = [os.path.join(base, "val", "images", name) for name, _ in val_entries]
    LOG.info(f"decoding {len(train_paths)} + {len(val_paths)} tiny-imagenet images ...")
    size = DATASETS["tiny-imagenet"].image_size
    train = ImageSet(_decode_all(train_paths, size, _decode_exact), torch.tensor(train_labels, dtype=torch.int64))
    test = ImageSet(_decode_all(val_paths, size, _decode_exact),
                    torch.tensor([label for _, label in val_entries], dtype=torch.int64))
    return train, test, base


def _image_files(folder: str, classes: Dict[str, int], what: str) -> Tuple[List[str], List[int]]:
    """Image files under ``folder/<class>/`` (any depth), ordered by class, then path, as
    torchvision's ImageFolder orders them."""
    paths: List[str] = []
    labels: List[int] = []
    for name in sorted(classes):
        found = []
        for directory, subdirs, files in os.walk(os.path.join(folder, name), followlinks=True):
            subdirs.sort()
            found += [os.path.join(directory, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
        paths += found
        labels += [classes[name]] * len(found)
    if not paths:
        raise UserError(f"{what} {folder} holds no image files ({', '.join(IMAGE_EXTENSIONS)}) in class folders")
    return paths, labels


def _class_folders(folder: str) -> List[str]:
    return sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))


def _load_image_tree(name: str, root: str, split_file: Optional[str], mode: str,
                     image_size: Optional[int], workers: int) -> Data:
    """``root/train/<class>/*`` and ``root/<val|test>/<class>/*``: classes are the train
    folder's subfolders in sorted order (ImageFolder's labels); the test folder may lack
    classes but not add any."""
    test_folder = IMAGE_TREES[name]
    train_dir, test_dir = os.path.join(root, "train"), os.path.join(root, test_folder)
    for folder in (train_dir, test_dir):
        if not os.path.isdir(folder):
            raise UserError(f"--dataset {name} expects {root}/train/<class>/ and {root}/{test_folder}/<class>/ "
                            f"holding image files; {folder} is not a folder (see README: data sets)")
    class_names = _class_folders(train_dir)
    classes = {c: i for i, c in enumerate(class_names)}
    unknown = [c for c in _class_folders(test_dir) if c not in classes]
    if unknown:
        raise UserError(f"{test_dir} has class folders that train/ lacks: {', '.join(unknown[:5])}")
    base = DATASETS[name]
    num_classes = base.num_classes or len(class_names)
    if len(class_names) > num_classes:
        raise UserError(f"{train_dir} has {len(class_names)} class folders; {name} has {num_classes} classes")
    size = image_size if image_size is not None else base.image_size
    info = DatasetInfo(num_classes, base.mean, base.std, size, max(1, size // 8))
    train_paths, train_labels = _image_files(train_dir, classes, f"--dataset {name}: the train folder")
    test_paths, test_labels = _image_files(test_dir, classes, f"--dataset {name}: the test folder")
    mode = resolve_mode(name, mode, len(train_paths) + len(test_paths), size)
    sets = []
    for paths, labels in ((train_paths, train_labels), (test_paths, test_labels)):
        label_tensor = torch.tensor(labels, dtype=torch.int64)
        if mode == "stream":
            sets.append(StreamedImageSet(paths, label_tensor, size, workers))
        else:
            LOG.info(f"decoding {len(paths)} {name} images at {size}x{size} into memory ...")
            sets.append(ImageSet(_decode_all(paths, size, partial(decode_image, rng=None)), label_tensor))
    if split_file:
        split = load_split(split_file, len(train_paths), name)
    else:
        split = np.random.default_rng(TREE_SPLIT_SEED).permutation(len(train_paths)).astype(np.int64)
        LOG.info(f"split: a permutation seeded {TREE_SPLIT_SEED} (no --split_file given; {name} is stored by class)")
    return Data(name, info, sets[0], sets[1], split, train_number_for(len(train_paths)), root, mode)


def resolve_mode(name: str, mode: str, count: int, size: int) -> str:
    """auto: imagenet streams; a folder stays in memory when its uint8 images take at most
    1/MEMORY_SHARE of the RAM. A forced memory mode that cannot fit is refused."""
    needed = count * 3 * size * size
    try:
        available: Optional[int] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no such value, or no sysconf at all (Windows)
        available = None
    if mode == "auto":
        if name == "imagenet":
            return "stream"
        return "memory" if available is not None and needed * MEMORY_SHARE <= available else "stream"
    if mode == "memory" and available is not None and needed > available:
        raise UserError(f"--data_mode memory: {count} images at {size}x{size} take {needed / 2 ** 30:.1f} GiB as "
                        f"uint8, more than this machine's {available / 2 ** 30:.1f} GiB; use --data_mode stream")
    return mode


def load_index_file(path: str, data: Data, what: str = "--train_subset") -> np.ndarray:
    """Loads a saved set of dataset indices and checks it holds training examples only."""
    indices = load_npy(path, what)
    if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer) or indices.size == 0:
        raise UserError(f"{what} {path} must be a non-empty 1-D integer array of dataset indices")
    if indices.min() < 0 or indices.max() >= len(data.train):
        raise UserError(f"{what} {path} has indices outside 0..{len(data.train) - 1}")
    outside = int(np.isin(indices, data.train_indices, invert=True).sum())
    if outside:
        raise UserError(f"{what} {path} holds {outside} validation indices of this split; "
                        "validation examples never train")
    return np.unique(indices.astype(np.int64))


# ----------------------------------------------------------------------------- batches
def random_crop_flip(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip for a whole uint8 batch: the
    distribution of torchvision's ``RandomCrop(size, padding)`` then ``RandomHorizontalFlip()``,
    every one of the (2p+1)^2 offsets and both flips equally likely, independently per image."""
    batch, channels, height, width = images.shape
    device = images.device
    offsets = torch.randint(0, 2 * padding + 1, (2, batch), generator=generator, device=device)
    flips = torch.rand(batch, generator=generator, device=device) < 0.5
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = offsets[0][:, None] + torch.arange(height, device=device)
    cols = offsets[1][:, None] + torch.arange(width, device=device)
    cols = torch.where(flips[:, None], cols.flip(1), cols)  # a flip reads the columns backwards
    # Two gathers (rows, then columns) beat one 4-index advanced-indexing gather by ~1.5x.
    crops = padded.gather(2, rows[:, None, :, None].expand(batch, channels, height, width + 2 * padding))
    return crops.gather(3, cols[:, None, None, :].expand(batch, channels, height, width))


def to_model_input(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """uint8 batch -> float in [0, 1] with 3 channels (grey images are repeated)."""
    x = images.float().div_(255)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
