"""Data sets read from their published on-disk formats, split files, and augmentation."""
import os
import pickle
import shutil
import struct
from typing import Any, Dict, Tuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dataset
from tests import datasets_on_disk
from tests.conftest import TINY_TEST, TINY_TRAIN
from tests.helpers import Payload, one_line
from utils import UserError


def expected_images(n: int, classes: int, size: int, channels: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    return datasets_on_disk.class_images(n, classes, size, channels, seed)

def no_system_fashion(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """This machine may have Debian's copy of Fashion-MNIST; hide it."""
    monkeypatch.setattr(dataset, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "no-system-copy"))


def forbid_download(monkeypatch: pytest.MonkeyPatch) -> list:
    calls = []

    def refuse(name: str, root: str) -> None:
        calls.append((name, root))
        raise UserError(f"{name} is not in {root} and could not be downloaded (offline)")

    monkeypatch.setattr(dataset, "_download_with_torchvision", refuse)
    return calls


# ----------------------------------------------------------------------------- CIFAR
def check_cifar(train: dataset.ImageSet, test: dataset.ImageSet, classes: int, seed: int) -> None:
    images, labels = expected_images(TINY_TRAIN + TINY_TEST, classes, 32, 3, seed)
    assert train.images.shape == (TINY_TRAIN, 3, 32, 32)
    assert test.images.shape == (TINY_TEST, 3, 32, 32)
    assert train.images.dtype == torch.uint8 and test.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and test.labels.dtype == torch.int64
    assert train.labels.shape == (TINY_TRAIN,) and test.labels.shape == (TINY_TEST,)
    # batches are concatenated in order data_batch_1..5, pixels in CIFAR's channel-major layout
    assert np.array_equal(train.images.numpy(), images[:TINY_TRAIN])
    assert np.array_equal(train.labels.numpy(), labels[:TINY_TRAIN])
    assert np.array_equal(test.images.numpy(), images[TINY_TRAIN:])
    assert np.array_equal(test.labels.numpy(), labels[TINY_TRAIN:])


def test_cifar10_reads_batches_in_root(cifar10_dir: str) -> None:
    train, test = dataset.load_cifar10(cifar10_dir, download=False)
    check_cifar(train, test, 10, seed=0)


def test_cifar10_reads_when_data_points_at_batches_folder(cifar10_dir: str) -> None:
    train, test = dataset.load_cifar10(os.path.join(cifar10_dir, "cifar-10-batches-py"), download=False)
    check_cifar(train, test, 10, seed=0)


def test_cifar100_reads_fine_labels(cifar100_dir: str) -> None:
    train, test = dataset.load_cifar100(cifar100_dir, download=False)
    check_cifar(train, test, 100, seed=1)


def test_load_data_cifar10(cifar10_dir: str) -> None:
    data = dataset.load_data("cifar10", cifar10_dir, download=False)
    assert data.name == "cifar10"
    assert data.info.num_classes == 10
    assert data.train_number == 180
    assert len(data.train) == TINY_TRAIN and len(data.test) == TINY_TEST
    assert np.array_equal(data.split, np.arange(TINY_TRAIN))
    assert np.array_equal(data.train_indices, np.arange(180))
    assert np.array_equal(data.val_indices, np.arange(180, TINY_TRAIN))


def test_validation_is_the_last_tenth_in_split_order(cifar10_dir: str, shuffled_split: str) -> None:
    data = dataset.load_data("cifar10", cifar10_dir, split_file=shuffled_split, download=False)
    split = np.load(shuffled_split)
    assert np.array_equal(data.split, split)
    assert np.array_equal(data.train_indices, split[:180])
    assert np.array_equal(data.val_indices, split[180:])
    assert len(set(data.train_indices) & set(data.val_indices)) == 0
    assert sorted(np.concatenate([data.train_indices, data.val_indices])) == list(range(TINY_TRAIN))


def test_cifar_incomplete_folder_raises_user_error(tmp_path, cifar10_dir: str) -> None:
    root = tmp_path / "partial"
    shutil.copytree(cifar10_dir, root)
    os.remove(root / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(UserError) as info:
        dataset.load_cifar10(str(root), download=False)
    assert one_line(info.value)


def test_cifar_corrupt_batch_raises_user_error(tmp_path, cifar10_dir: str) -> None:
    root = tmp_path / "corrupt"
    shutil.copytree(cifar10_dir, root)
    (root / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"not a pickle")
    with pytest.raises(UserError):
        dataset.load_cifar10(str(root), download=False)


# ----------------------------------------------------------------------------- CIFAR pickles, safely
def _py2_str(text: bytes) -> bytes:
    """A Python 2 ``str`` as cPickle writes it (SHORT_BINSTRING / BINSTRING)."""
    if len(text) < 256:
        return b"U" + bytes([len(text)]) + text
    return b"T" + struct.pack("<i", len(text)) + text


def _py2_int(value: int) -> bytes:
    return b"K" + bytes([value]) if 0 <= value < 256 else b"J" + struct.pack("<i", value)


def py2_cifar_pickle(entry: Dict[str, Any]) -> bytes:
    """A batch as the published CIFAR archive holds it: written by Python 2's cPickle
    (protocol 2), keys and pixel bytes as py2 ``str``, the pixels a numpy 1 uint8 array named
    through ``numpy.core.multiarray._reconstruct``, labels a list of ints."""
    out = [b"\x80\x02}("]
    for key, value in entry.items():
        out.append(_py2_str(key.encode()))
        if isinstance(value, np.ndarray):
            assert value.dtype == np.uint8 and value.ndim == 2
            out += [b"cnumpy.core.multiarray\n_reconstruct\n", b"cnumpy\nndarray\n", _py2_int(0), b"\x85",
                    _py2_str(b"b"), b"\x87R",
                    b"(", _py2_int(1), _py2_int(value.shape[0]), _py2_int(value.shape[1]), b"\x86",
                    b"cnumpy\ndtype\n", _py2_str(b"u1"), _py2_int(0), _py2_int(1), b"\x87R",
                    b"(", _py2_int(3), _py2_str(b"|"), b"NNN", _py2_int(-1), _py2_int(-1), _py2_int(0), b"tb",
                    b"\x89", _py2_str(value.tobytes()), b"tb"]
        elif isinstance(value, list):
            out.append(b"](")
            out += [_py2_int(v) if isinstance(v, int) else _py2_str(v.encode()) for v in value]
            out.append(b"e")
        else:
            out.append(_py2_str(value.encode()))
    out.append(b"u.")
    return b"".join(out)


def write_cifar10_with(root: str, write_batch) -> str:
    """The tiny CIFAR-10 set with each batch written by ``write_batch(entry) -> bytes``."""
    images, labels = expected_images(TINY_TRAIN + TINY_TEST, 10, 32, 3, 0)
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    parts = np.array_split(np.arange(TINY_TRAIN), 5) + [np.arange(TINY_TRAIN, TINY_TRAIN + TINY_TEST)]
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, part in zip(names, parts):
        entry = {"batch_label": name, "labels": labels[part].tolist(),
                 "data": images[part].reshape(len(part), -1), "filenames": [f"{j}.png" for j in part]}
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(write_batch(entry))
    return root


def test_py2_pickle_helper_writes_what_plain_pickle_reads() -> None:
    """The hand-made Python 2 pickle is right: the unrestricted loader reads it as CIFAR."""
    data = np.arange(2 * 3072, dtype=np.uint64).astype(np.uint8).reshape(2, 3072)
    entry = pickle.loads(py2_cifar_pickle({"data": data, "labels": [3, 7], "batch_label": "b"}),
                         encoding="latin1")
    assert np.array_equal(entry["data"], data) and entry["labels"] == [3, 7] and entry["batch_label"] == "b"


@pytest.mark.parametrize("writer", ["python2", "protocol2", "protocol4", "protocol5"])
def test_cifar_batches_of_every_era_load_through_the_safe_unpickler(tmp_path, writer: str) -> None:
    write = {"python2": py2_cifar_pickle,
             "protocol2": lambda entry: pickle.dumps(entry, protocol=2),
             "protocol4": lambda entry: pickle.dumps(entry, protocol=4),
             "protocol5": lambda entry: pickle.dumps(entry, protocol=5)}[writer]
    root = write_cifar10_with(str(tmp_path), write)
    train, test = dataset.load_cifar10(root, download=False)
    check_cifar(train, test, 10, seed=0)

@pytest.mark.parametrize("protocol", [2, 4])
def test_poisoned_cifar_batch_is_refused_without_running_it(tmp_path, cifar10_dir: str, protocol: int) -> None:
    root = tmp_path / "poisoned"
    shutil.copytree(cifar10_dir, root)
    marker = tmp_path / "payload_ran"
    batch = root / "cifar-10-batches-py" / "data_batch_1"
    entry = {"data": np.zeros((2, 3072), dtype=np.uint8), "labels": [0, 1], "payload": Payload(str(marker))}
    batch.write_bytes(pickle.dumps(entry, protocol=protocol))
    with pytest.raises(UserError) as info:
        dataset.load_data("cifar10", str(root), download=False)
    assert not marker.exists(), "the pickle's payload ran"
    assert one_line(info.value)
    assert "carries code or objects" in str(info.value) and "system" in str(info.value)
    assert str(batch) in str(info.value)


@pytest.mark.parametrize("forbidden", [("builtins", "eval"), ("numpy", "load"), ("numpy.core.multiarray", "array"),
                                       ("collections", "OrderedDict"), ("__main__", "Payload")])
def test_cifar_unpickler_admits_only_array_reconstruction(forbidden: Tuple[str, str], tmp_path) -> None:
    module, name = forbidden
    path = tmp_path / "batch"
    path.write_bytes(b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R.")
    with pytest.raises(UserError, match="carries code or objects"):
        dataset._unpickle(str(path))


def test_cifar_unpickler_limits_codecs_to_latin1(tmp_path) -> None:
    path = tmp_path / "batch"
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R.")
    with pytest.raises(UserError, match="not a readable CIFAR batch"):
        dataset._unpickle(str(path))


def test_cifar_batch_that_is_not_a_dict_is_refused(tmp_path) -> None:
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(UserError, match="not a CIFAR batch"):
        dataset._unpickle(str(path))


# ----------------------------------------------------------------------------- labels
def rewrite_cifar_labels(root, folder: str, name: str, key: str, change) -> None:
    path = os.path.join(root, folder, name)
    with open(path, "rb") as handle:
        entry = pickle.load(handle)
    entry[key] = change(entry[key])
    with open(path, "wb") as handle:
        pickle.dump(entry, handle)


@pytest.mark.parametrize("name, folder, batch, key, bad", [
    ("cifar10", "cifar-10-batches-py", "data_batch_2", "labels", 10),
    ("cifar10", "cifar-10-batches-py", "test_batch", "labels", -1),
    ("cifar100", "cifar-100-python", "train", "fine_labels", 100),
])
def test_labels_out_of_range_are_refused_at_load_time(tmp_path, cifar10_dir: str, cifar100_dir: str, name: str,
                                                      folder: str, batch: str, key: str, bad: int) -> None:
    root = tmp_path / "data"
    shutil.copytree(cifar10_dir if name == "cifar10" else cifar100_dir, root)
    rewrite_cifar_labels(root, folder, batch, key, lambda labels: [bad] + labels[1:])
    with pytest.raises(UserError) as info:
        dataset.load_data(name, str(root), download=False)
    assert one_line(info.value)
    assert "labels outside" in str(info.value) and str(bad) in str(info.value)


def test_fashion_labels_out_of_range_are_refused(tmp_path) -> None:
    root = tmp_path / "data"
    datasets_on_disk.write_fashion_mnist(str(root), 50, 20, gz=False)
    path = root / "t10k-labels-idx1-ubyte"
    raw = bytearray(path.read_bytes())
    raw[-1] = 12
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError, match="labels outside 0..9"):
        dataset.load_data("fashionmnist", str(root), download=False)


def test_tiny_imagenet_with_more_classes_than_the_data_set_is_refused(tiny_imagenet_dir: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny test set has 4 classes; a 'tiny-imagenet' of 3 classes cannot label them."""
    info = dataset.DATASETS["tiny-imagenet"]
    monkeypatch.setitem(dataset.DATASETS, "tiny-imagenet",
                        dataset.DatasetInfo(3, info.mean, info.std, info.image_size, info.crop_padding))
    with pytest.raises(UserError, match="labels outside 0..2"):
        dataset.load_data("tiny-imagenet", tiny_imagenet_dir)


def test_check_labels_accepts_every_class() -> None:
    dataset.check_labels(torch.arange(10), 10, "set")
    dataset.check_labels(torch.zeros(0, dtype=torch.int64), 10, "empty set")


def test_data_source_names_the_folder_read(cifar10_dir: str) -> None:
    data = dataset.load_data("cifar10", cifar10_dir, download=False)
    assert data.source == os.path.join(cifar10_dir, "cifar-10-batches-py")
    assert data.to(torch.device("cpu")).source == data.source


# ----------------------------------------------------------------------------- .npy inputs
def test_object_arrays_are_refused_with_their_own_message(tmp_path, cifar10_dir: str) -> None:
    path = str(tmp_path / "objects.npy")
    np.save(path, np.array([{"a": 1}, 2], dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match="holds Python objects") as info:
        dataset.load_data("cifar10", cifar10_dir, split_file=path, download=False)
    assert one_line(info.value) and "--split_file" in str(info.value)
    data = dataset.load_data("cifar10", cifar10_dir, download=False)
    with pytest.raises(UserError, match="--train_subset .* holds Python objects"):
        dataset.load_index_file(path, data)


# ----------------------------------------------------------------------------- Fashion-MNIST
def check_fashion(train: dataset.ImageSet, test: dataset.ImageSet, n_train: int, n_test: int, seed: int) -> None:
    images, labels = expected_images(n_train + n_test, 10, 28, 1, seed)
    assert train.images.shape == (n_train, 1, 28, 28)
    assert test.images.shape == (n_test, 1, 28, 28)
    assert train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and test.labels.dtype == torch.int64
    assert np.array_equal(train.images.numpy(), images[:n_train])
    assert np.array_equal(train.labels.numpy(), labels[:n_train])
    assert np.array_equal(test.images.numpy(), images[n_train:])
    assert np.array_equal(test.labels.numpy(), labels[n_train:])


def test_fashion_gz_in_root(fashion_dir: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    no_system_fashion(monkeypatch, tmp_path)
    train, test = dataset.load_fashion_mnist(fashion_dir, download=False)
    check_fashion(train, test, TINY_TRAIN, TINY_TEST, seed=2)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("layout", ["root", "torchvision"])
def test_fashion_layouts(tmp_path, monkeypatch: pytest.MonkeyPatch, gz: bool, layout: str) -> None:
    no_system_fashion(monkeypatch, tmp_path)
    root = tmp_path / "data"
    folder = root if layout == "root" else root / "FashionMNIST" / "raw"
    datasets_on_disk.write_fashion_mnist(str(folder), 50, 20, gz=gz, seed=5)
    names = os.listdir(folder)
    assert all(n.endswith(".gz") == gz for n in names)
    forbid_download(monkeypatch)
    train, test = dataset.load_fashion_mnist(str(root))
    check_fashion(train, test, 50, 20, seed=5)
    data = dataset.load_data("fashionmnist", str(root))
    assert data.train_number == 45
    assert data.info.num_classes == 10


def test_fashion_truncated_file_raises_user_error(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_system_fashion(monkeypatch, tmp_path)
    root = tmp_path / "data"
    datasets_on_disk.write_fashion_mnist(str(root), 50, 20, gz=False)
    path = root / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(UserError) as info:
        dataset.load_fashion_mnist(str(root), download=False)
    assert one_line(info.value)


def test_fashion_explicit_data_that_does_not_exist_is_an_error(tmp_path, fashion_dir: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian's copy (here: a complete set) never stands in for a folder the user named."""
    monkeypatch.setattr(dataset, "FASHION_MNIST_SYSTEM_DIR", fashion_dir)
    calls = forbid_download(monkeypatch)
    root = str(tmp_path / "typo")
    with pytest.raises(UserError) as info:
        dataset.load_data("fashionmnist", root)
    assert one_line(info.value) and f"--data {root} does not exist" in str(info.value)
    assert calls == []


def test_fashion_explicit_data_lacking_a_file_names_it(tmp_path, fashion_dir: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataset, "FASHION_MNIST_SYSTEM_DIR", fashion_dir)
    calls = forbid_download(monkeypatch)
    root = tmp_path / "partial"
    datasets_on_disk.write_fashion_mnist(str(root), 50, 20)
    os.remove(root / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(UserError) as info:
        dataset.load_data("fashionmnist", str(root))
    message = str(info.value)
    assert one_line(info.value) and str(root) in message
    assert "t10k-labels-idx1-ubyte" in message and "train-images" not in message
    assert calls == []


def test_fashion_default_data_falls_back_to_debian_and_says_so(tmp_path, fashion_dir: str,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    default = str(tmp_path / "default-data")
    monkeypatch.setattr(dataset, "DEFAULT_DATA_DIR", default)
    monkeypatch.setattr(dataset, "FASHION_MNIST_SYSTEM_DIR", fashion_dir)
    forbid_download(monkeypatch)
    with caplog.at_level("INFO", logger="prac_lth"):
        import logging
        logging.getLogger("prac_lth").propagate = True
        data = dataset.load_data("fashionmnist", default)
    assert data.source == fashion_dir
    assert fashion_dir in caplog.text
    check_fashion(data.train, data.test, TINY_TRAIN, TINY_TEST, seed=2)


def test_fashion_fallback_can_be_asked_for_by_tools(tmp_path, fashion_dir: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """tools/demo.py asks for Debian's copy (or a download) behind its own folder option."""
    monkeypatch.setattr(dataset, "FASHION_MNIST_SYSTEM_DIR", fashion_dir)
    train, test = dataset.load_fashion_mnist(str(tmp_path / "absent"), fallback=True)
    check_fashion(train, test, TINY_TRAIN, TINY_TEST, seed=2)
    with pytest.raises(UserError, match="does not exist"):
        dataset.load_fashion_mnist(str(tmp_path / "absent"))


def test_fashion_source_is_the_folder_read(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_system_fashion(monkeypatch, tmp_path)
    root = tmp_path / "data"
    datasets_on_disk.write_fashion_mnist(str(root / "FashionMNIST" / "raw"), 50, 20)
    assert dataset.load_data("fashionmnist", str(root)).source == str(root / "FashionMNIST" / "raw")


# ----------------------------------------------------------------------------- Tiny-ImageNet
def decode(path: str) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)


Files = Dict[str, Tuple[np.ndarray, int]]


def tiny_files(root: str) -> Tuple[Dict[str, int], Files, Files]:
    """class index per wnid (sorted wnids), and {file: (pixels, label)} for train and val."""
    base = os.path.join(root, "tiny-imagenet-200")
    wnids = sorted(os.listdir(os.path.join(base, "train")))
    class_of = {w: i for i, w in enumerate(wnids)}
    train = {}
    for wnid in wnids:
        folder = os.path.join(base, "train", wnid, "images")
        for name in os.listdir(folder):
            train[name] = (decode(os.path.join(folder, name)), class_of[wnid])
    val = {}
    with open(os.path.join(base, "val", "val_annotations.txt")) as handle:
        for line in handle:
            name, wnid = line.split("\t")[:2]
            val[name] = (decode(os.path.join(base, "val", "images", name)), class_of[wnid])
    return class_of, train, val


def match_files(images: torch.Tensor, labels: torch.Tensor, files: Dict[str, Tuple[np.ndarray, int]]) -> None:
    """Every loaded image is exactly one file's pixels, with that file's label, each file once."""
    assert images.shape[0] == len(files)
    used = set()
    for image, label in zip(images.numpy(), labels.tolist()):
        matches = [name for name, (pixels, _) in files.items() if np.array_equal(pixels, image)]
        assert len(matches) == 1
        assert matches[0] not in used
        used.add(matches[0])
        assert label == files[matches[0]][1], matches[0]


def test_tiny_imagenet_as_distributed(tiny_imagenet_dir: str) -> None:
    class_of, train_files, val_files = tiny_files(tiny_imagenet_dir)
    train, test = dataset.load_tiny_imagenet(tiny_imagenet_dir, download=False)
    assert train.images.shape == (len(train_files), 3, 64, 64) == (40, 3, 64, 64)
    assert test.images.shape == (len(val_files), 3, 64, 64) == (12, 3, 64, 64)
    assert train.images.dtype == torch.uint8 and test.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and test.labels.dtype == torch.int64
    match_files(train.images, train.labels, train_files)
    match_files(test.images, test.labels, val_files)  # val labels come from val_annotations.txt
    assert set(train.labels.tolist()) <= set(class_of.values())


def test_tiny_imagenet_load_data(tiny_imagenet_dir: str) -> None:
    data = dataset.load_data("tiny-imagenet", tiny_imagenet_dir, download=False)
    assert data.info.num_classes == 200
    assert data.train_number == 36
    assert len(data.val_indices) == 4
    # the order is deterministic: loading twice gives the same tensors
    again = dataset.load_data("tiny-imagenet", os.path.join(tiny_imagenet_dir, "tiny-imagenet-200"))
    assert torch.equal(data.train.images, again.train.images)
    assert torch.equal(data.train.labels, again.train.labels)


def test_tiny_imagenet_missing_annotations(tmp_path, tiny_imagenet_dir: str) -> None:
    root = tmp_path / "tiny"
    shutil.copytree(tiny_imagenet_dir, root)
    os.remove(root / "tiny-imagenet-200" / "val" / "val_annotations.txt")
    with pytest.raises(UserError) as info:
        dataset.load_tiny_imagenet(str(root))
    assert one_line(info.value)


# ----------------------------------------------------------------------------- missing data
@pytest.mark.parametrize("name", ["cifar10", "cifar100", "fashionmnist", "tiny-imagenet"])
def test_missing_data_without_download_raises_user_error(tmp_path, monkeypatch: pytest.MonkeyPatch,
                                                          name: str) -> None:
    no_system_fashion(monkeypatch, tmp_path)
    calls = forbid_download(monkeypatch)
    with pytest.raises(UserError) as info:
        dataset.load_data(name, str(tmp_path / "nothing"), download=False)
    assert one_line(info.value)
    assert calls == []  # download=False never tries


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "fashionmnist"])
def test_missing_data_when_download_fails_raises_user_error(tmp_path, monkeypatch: pytest.MonkeyPatch,
                                                            name: str) -> None:
    no_system_fashion(monkeypatch, tmp_path)
    calls = forbid_download(monkeypatch)
    root = str(tmp_path / "nothing")
    if name == "fashionmnist":  # it downloads into the default --data only
        monkeypatch.setattr(dataset, "DEFAULT_DATA_DIR", root)
    with pytest.raises(UserError) as info:
        dataset.load_data(name, root)
    assert one_line(info.value)
    assert calls == [(name, root)]


def test_missing_cifar_is_downloaded_then_read(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_download(name: str, root: str) -> None:
        assert name == "cifar10"
        datasets_on_disk.write_cifar10(root, TINY_TRAIN, TINY_TEST, seed=0)

    monkeypatch.setattr(dataset, "_download_with_torchvision", fake_download)
    data = dataset.load_data("cifar10", str(tmp_path / "fresh"))
    check_cifar(data.train, data.test, 10, seed=0)


def test_unknown_dataset_raises_user_error(cifar10_dir: str) -> None:
    with pytest.raises(UserError):
        dataset.load_data("mnist", cifar10_dir)


# ----------------------------------------------------------------------------- splits
@pytest.mark.parametrize("size, expected", [(50000, 45000), (100000, 90000), (60000, 54000), (200, 180), (40, 36)])
def test_train_number(size: int, expected: int) -> None:
    assert dataset.train_number_for(size) == expected


def test_load_split_identity_when_none() -> None:
    split = dataset.load_split(None, 17, "cifar10")
    assert np.array_equal(split, np.arange(17))
    assert split.dtype == np.int64


def test_load_split_reads_a_permutation(tmp_path) -> None:
    path = str(tmp_path / "ok.npy")
    perm = np.random.default_rng(0).permutation(30).astype(np.int32)
    np.save(path, perm)
    split = dataset.load_split(path, 30, "cifar10")
    assert np.array_equal(split, perm)
    assert split.dtype == np.int64


@pytest.mark.parametrize("bad", [
    np.arange(29),                                   # wrong length
    np.arange(31),                                   # wrong length
    np.concatenate([np.arange(29), [0]]),            # repeated index: not a permutation
    np.concatenate([np.arange(1, 30), [30]]),        # out of range
    np.arange(30).reshape(5, 6),                     # 2-D
    np.arange(30, dtype=np.float64),                 # not integers
])
def test_load_split_rejects_bad_files(tmp_path, bad: np.ndarray) -> None:
    path = str(tmp_path / "bad.npy")
    np.save(path, bad)
    with pytest.raises(UserError) as info:
        dataset.load_split(path, 30, "cifar10")
    assert one_line(info.value)


def test_load_split_rejects_unreadable_file(tmp_path) -> None:
    path = tmp_path / "garbage.npy"
    path.write_bytes(b"garbage")
    with pytest.raises(UserError):
        dataset.load_split(str(path), 30, "cifar10")
    with pytest.raises(UserError):
        dataset.load_split(str(tmp_path / "absent.npy"), 30, "cifar10")


def test_load_data_rejects_a_split_of_another_size(cifar10_dir: str, tmp_path) -> None:
    path = str(tmp_path / "big.npy")
    np.save(path, np.arange(50000))
    with pytest.raises(UserError):
        dataset.load_data("cifar10", cifar10_dir, split_file=path, download=False)


def test_load_index_file(cifar10_dir: str, shuffled_split: str, tmp_path) -> None:
    data = dataset.load_data("cifar10", cifar10_dir, split_file=shuffled_split, download=False)
    good = str(tmp_path / "good.npy")
    chosen = data.train_indices[[5, 3, 3, 100]]
    np.save(good, chosen)
    assert np.array_equal(dataset.load_index_file(good, data), np.unique(chosen))

    bad = str(tmp_path / "bad.npy")
    np.save(bad, np.concatenate([data.train_indices[:10], data.val_indices[:1]]))
    with pytest.raises(UserError) as info:
        dataset.load_index_file(bad, data)
    assert one_line(info.value)

    for name, array in (("range.npy", np.array([TINY_TRAIN])), ("empty.npy", np.array([], dtype=np.int64)),
                        ("twod.npy", data.train_indices[:4].reshape(2, 2))):
        np.save(str(tmp_path / name), array)
        with pytest.raises(UserError):
            dataset.load_index_file(str(tmp_path / name), data)


# ----------------------------------------------------------------------------- augmentation
def coded_images(n: int, size: int, seed: int) -> torch.Tensor:
    """n x 5 x size x size uint8: 3 random channels, then row+1 and col+1 position codes."""
    gen = torch.Generator().manual_seed(seed)
    content = torch.randint(1, 256, (n, 3, size, size), generator=gen, dtype=torch.uint8)
    rows = (torch.arange(size) + 1).view(1, 1, size, 1).expand(n, 1, size, size)
    cols = (torch.arange(size) + 1).view(1, 1, 1, size).expand(n, 1, size, size)
    return torch.cat([content, rows.to(torch.uint8), cols.to(torch.uint8)], dim=1).contiguous()


def crop_parameters(crops: torch.Tensor, padding: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reads (row offset, col offset, flipped) of each crop from the position-code channels."""
    size = crops.shape[-1]
    row_code = crops[:, 3].long()
    col_code = crops[:, 4].long()
    row_offset = row_code[:, padding, :].amax(dim=1) - 1            # output row p = source row offset
    left = col_code[:, :, padding].amax(dim=1)
    right = col_code[:, :, size - 1 - padding].amax(dim=1)
    flipped = left > right
    col_offset = torch.minimum(left, right) - 1
    return row_offset, col_offset, flipped


def reference_crop(images: torch.Tensor, padding: int, row: int, col: int, flip: bool) -> torch.Tensor:
    size_h, size_w = images.shape[-2:]
    padded = F.pad(images, (padding,) * 4)  # zeros
    out = padded[:, :, row:row + size_h, col:col + size_w]
    return out.flip(-1) if flip else out


@pytest.mark.parametrize("padding, size", [(4, 12), (2, 7)])
def test_random_crop_flip_is_uniform_and_exact(padding: int, size: int, device: torch.device) -> None:
    draws = 20000
    images = coded_images(draws, size, seed=1).to(device)
    gen = torch.Generator(device=device).manual_seed(123)
    crops = dataset.random_crop_flip(images, padding, gen)
    assert crops.shape == images.shape and crops.dtype == torch.uint8

    rows, cols, flips = crop_parameters(crops, padding)
    span = 2 * padding + 1
    assert int(rows.min()) >= 0 and int(rows.max()) <= 2 * padding
    assert int(cols.min()) >= 0 and int(cols.max()) <= 2 * padding

    # every crop is exactly the zero-padded, cropped and (maybe) flipped source image
    for r in range(span):
        for c in range(span):
            for f in (False, True):
                chosen = (rows == r) & (cols == c) & (flips == f)
                if chosen.any():
                    expected = reference_crop(images[chosen], padding, r, c, f)
                    assert torch.equal(crops[chosen].contiguous(), expected.contiguous()), (r, c, f)

    # all (2p+1)^2 offsets x 2 flips occur, about equally often (chi-square, 1e-6-ish level)
    cell = (rows * span + cols) * 2 + flips.long()
    counts = torch.bincount(cell, minlength=span * span * 2).double()
    cells = span * span * 2
    assert int((counts == 0).sum()) == 0
    expected = draws / cells
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    dof = cells - 1
    assert chi2 < dof + 7 * (2 * dof) ** 0.5, chi2
    # the marginals too: flips ~ 1/2, each row and column offset ~ 1/(2p+1)
    assert abs(float(flips.double().mean()) - 0.5) < 5 * (0.25 / draws) ** 0.5
    for offsets in (rows, cols):
        freq = torch.bincount(offsets, minlength=span).double() / draws
        sd = ((1 / span) * (1 - 1 / span) / draws) ** 0.5
        assert float((freq - 1 / span).abs().max()) < 5 * sd


def test_random_crop_flip_is_independent_per_image(device: torch.device) -> None:
    images = coded_images(4000, 12, seed=2).to(device)
    crops = dataset.random_crop_flip(images, 4, torch.Generator(device=device).manual_seed(0))
    rows, cols, flips = crop_parameters(crops, 4)
    # row and column offsets are not tied together and flips do not depend on the offset
    assert float((rows == cols).double().mean()) < 0.2
    assert abs(float(flips[rows < 4].double().mean()) - float(flips[rows >= 4].double().mean())) < 0.06


def test_random_crop_flip_is_reproducible_with_a_seeded_generator(device: torch.device) -> None:
    images = coded_images(64, 32, seed=3)[:, :3].contiguous().to(device)
    a = dataset.random_crop_flip(images, 4, torch.Generator(device=device).manual_seed(7))
    b = dataset.random_crop_flip(images, 4, torch.Generator(device=device).manual_seed(7))
    c = dataset.random_crop_flip(images, 4, torch.Generator(device=device).manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == (64, 3, 32, 32)


def test_random_crop_flip_grey_images(device: torch.device) -> None:
    images = coded_images(16, 28, seed=4)[:, :1].contiguous().to(device)
    crops = dataset.random_crop_flip(images, 4, torch.Generator(device=device).manual_seed(0))
    assert crops.shape == (16, 1, 28, 28) and crops.dtype == torch.uint8


# ----------------------------------------------------------------------------- model input
@pytest.mark.parametrize("channels_last", [False, True])
def test_to_model_input_colour(channels_last: bool) -> None:
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    images[0, 0, 0, 0] = 0
    images[0, 0, 0, 1] = 255
    x = dataset.to_model_input(images, channels_last)
    assert x.dtype == torch.float32
    assert x.shape == (4, 3, 8, 8)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert float(x[0, 0, 0, 0]) == 0.0 and float(x[0, 0, 0, 1]) == 1.0
    assert torch.allclose(x, images.float() / 255)
    if channels_last:
        assert x.is_contiguous(memory_format=torch.channels_last)
    else:
        assert x.is_contiguous()


def test_to_model_input_repeats_grey_to_three_channels() -> None:
    images = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    x = dataset.to_model_input(images, False)
    assert x.shape == (5, 3, 28, 28)
    for c in range(3):
        assert torch.allclose(x[:, c], images[:, 0].float() / 255)


def test_augmented_batch_feeds_a_model(cifar10_dir: str, device: torch.device) -> None:
    from models import build_model
    data = dataset.load_data("cifar10", cifar10_dir, download=False).to(device)
    batch = data.train.images[torch.as_tensor(data.train_indices[:8], device=device)]
    crops = dataset.random_crop_flip(batch, data.info.crop_padding, torch.Generator(device=device).manual_seed(0))
    x = dataset.to_model_input(crops, True)
    model = build_model("res20s", data.info.num_classes, data.info.mean, data.info.std).to(device).eval()
    with torch.no_grad():
        assert model(x).shape == (8, 10)


def test_dataset_statistics_match_spec() -> None:
    infos = dataset.DATASETS
    assert infos["cifar10"].mean == pytest.approx((0.4914, 0.4822, 0.4465))
    assert infos["cifar10"].std == pytest.approx((0.2470, 0.2435, 0.2616))
    assert infos["cifar100"].mean == pytest.approx((0.5071, 0.4866, 0.4409))
    assert infos["cifar100"].std == pytest.approx((0.2673, 0.2564, 0.2762))
    assert infos["tiny-imagenet"].mean == pytest.approx((0.4802, 0.4481, 0.3975))
    assert infos["tiny-imagenet"].std == pytest.approx((0.2302, 0.2265, 0.2262))
    assert infos["fashionmnist"].mean == pytest.approx((0.2860,) * 3)
    assert infos["fashionmnist"].std == pytest.approx((0.3530,) * 3)
    names = ("cifar10", "cifar100", "tiny-imagenet", "fashionmnist")
    assert [infos[n].num_classes for n in names] == [10, 100, 200, 10]
    assert [infos[n].image_size for n in names] == [32, 32, 64, 28]
    assert all(infos[n].crop_padding == 4 for n in names)
    # image trees: ImageNet's statistics and 224 px; a folder's classes come from its tree
    assert (infos["imagenet"].num_classes, infos["imagenet"].image_size) == (1000, 224)
    assert infos["folder"].mean == pytest.approx((0.485, 0.456, 0.406))
