"""Writers of small data sets in the real on-disk formats, for tests and benchmarks.

Images are learnable (each class has its own colour and stripe pattern plus noise), so a
few epochs give accuracies away from chance and PrAC sets that are not trivial.
"""
import gzip
import os
import pickle
from typing import Tuple

import numpy as np


def class_images(n: int, num_classes: int, size: int, channels: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """uint8 images N x C x H x W whose class shows in colour and stripe frequency."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=n)
    palette = rng.integers(40, 216, size=(num_classes, channels))
    rows = np.arange(size)
    stripes = ((rows[None, :] * (1 + labels[:, None] % 4)) // 4 % 2) * 40  # N x H
    images = palette[labels][:, :, None, None] + stripes[:, None, :, None]
    images = images + rng.normal(0, 30, size=(n, channels, size, size))
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


def write_cifar10(root: str, n_train: int = 200, n_test: int = 100, seed: int = 0) -> str:
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    images, labels = class_images(n_train + n_test, 10, 32, 3, seed)
    batches = np.array_split(np.arange(n_train), 5)
    for i, part in enumerate(batches, start=1):
        entry = {"batch_label": f"training batch {i} of 5", "labels": labels[part].tolist(),
                 "data": images[part].reshape(len(part), -1), "filenames": [f"{j}.png" for j in part]}
        with open(os.path.join(folder, f"data_batch_{i}"), "wb") as handle:
            pickle.dump(entry, handle)
    test = np.arange(n_train, n_train + n_test)
    with open(os.path.join(folder, "test_batch"), "wb") as handle:
        pickle.dump({"batch_label": "testing batch 1 of 1", "labels": labels[test].tolist(),
                     "data": images[test].reshape(n_test, -1)}, handle)
    return root


def write_cifar100(root: str, n_train: int = 200, n_test: int = 100, seed: int = 1) -> str:
    folder = os.path.join(root, "cifar-100-python")
    os.makedirs(folder, exist_ok=True)
    images, labels = class_images(n_train + n_test, 100, 32, 3, seed)
    for name, part in (("train", np.arange(n_train)), ("test", np.arange(n_train, n_train + n_test))):
        entry = {"fine_labels": labels[part].tolist(), "coarse_labels": (labels[part] // 5).tolist(),
                 "data": images[part].reshape(len(part), -1)}
        with open(os.path.join(folder, name), "wb") as handle:
            pickle.dump(entry, handle)
    return root


def _write_idx(path: str, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def write_fashion_mnist(root: str, n_train: int = 200, n_test: int = 100, gz: bool = True, seed: int = 2) -> str:
    os.makedirs(root, exist_ok=True)
    images, labels = class_images(n_train + n_test, 10, 28, 1, seed)
    suffix = ".gz" if gz else ""
    _write_idx(os.path.join(root, "train-images-idx3-ubyte" + suffix), images[:n_train, 0])
    _write_idx(os.path.join(root, "train-labels-idx1-ubyte" + suffix), labels[:n_train])
    _write_idx(os.path.join(root, "t10k-images-idx3-ubyte" + suffix), images[n_train:, 0])
    _write_idx(os.path.join(root, "t10k-labels-idx1-ubyte" + suffix), labels[n_train:])
    return root


def write_tiny_imagenet(root: str, classes: int = 4, per_class: int = 10, n_val: int = 12, seed: int = 3) -> str:
    """tiny-imagenet-200 as distributed: train/<wnid>/images/*.JPEG, val/images + annotations."""
    from PIL import Image

    base = os.path.join(root, "tiny-imagenet-200")
    wnids = [f"n{1000 + i:08d}" for i in range(classes)]
    images, labels = class_images(classes * per_class + n_val, classes, 64, 3, seed)
    for i, wnid in enumerate(wnids):
        folder = os.path.join(base, "train", wnid, "images")
        os.makedirs(folder, exist_ok=True)
        chosen = np.flatnonzero(labels[: classes * per_class] == i)
        for j, index in enumerate(chosen):
            Image.fromarray(images[index].transpose(1, 2, 0)).save(
                os.path.join(folder, f"{wnid}_{j}.JPEG"), quality=95)
    os.makedirs(os.path.join(base, "val", "images"), exist_ok=True)
    with open(os.path.join(base, "val", "val_annotations.txt"), "w") as handle:
        for j in range(n_val):
            index = classes * per_class + j
            name = f"val_{j}.JPEG"
            Image.fromarray(images[index].transpose(1, 2, 0)).save(os.path.join(base, "val", "images", name),
                                                                   quality=95)
            handle.write(f"{name}\t{wnids[labels[index]]}\t0\t0\t63\t63\n")
    with open(os.path.join(base, "wnids.txt"), "w") as handle:
        handle.write("\n".join(wnids) + "\n")
    return root


def write_image_tree(root: str, layout: str = "folder", classes: int = 3, per_class: int = 8, test_per_class: int = 4,
                     size: int = 40, seed: int = 4) -> str:
    """An ImageFolder tree of real JPEG files: train/<class>/*.JPEG and, by ``layout``,
    test/<class>/ (``folder``) or val/<wnid>/ (``imagenet``, ILSVRC-2012 as usually unpacked).
    Images are ``size`` px wide and ``size * 3 // 4`` high, so crops meet a non-square image."""
    from PIL import Image

    names = [f"n{1440000 + i:08d}" for i in range(classes)] if layout == "imagenet" else \
        [f"class_{chr(ord('a') + i)}" for i in range(classes)]
    test_folder = "val" if layout == "imagenet" else "test"
    total = classes * (per_class + test_per_class)
    labels = np.repeat(np.arange(classes), per_class + test_per_class)
    images, _ = class_images(total, classes, size, 3, seed)
    rng = np.random.default_rng(seed)
    palette = rng.integers(40, 216, size=(classes, 3))
    for i, name in enumerate(names):
        for part, count, offset in (("train", per_class, 0), (test_folder, test_per_class, per_class)):
            folder = os.path.join(root, part, name)
            os.makedirs(folder, exist_ok=True)
            for j in range(count):
                index = i * (per_class + test_per_class) + offset + j
                image = images[index, :, : size * 3 // 4].astype(np.int16)
                image = image - image.mean(axis=(1, 2), keepdims=True) + palette[labels[index]][:, None, None]
                Image.fromarray(np.clip(image, 0, 255).astype(np.uint8).transpose(1, 2, 0)).save(
                    os.path.join(folder, f"{name}_{j}.JPEG"), quality=90)
    return root
