"""Streamed image trees (--dataset folder / imagenet): layouts, batches that carry their
dataset indices in the in-memory path's order, augmentation independent of --workers, and
every script end to end, seeded-reproducible and resumable, on tiny trees of real JPEGs."""
import os
from typing import Any, Dict, List

import numpy as np
import pytest
import torch

import dataset
import main_imp
import main_PrAC_imp
import main_train
from checkpoint import load_checkpoint
from models import build_model
from tests import datasets_on_disk
from tests.helpers import (
    CLASSES,
    PER_CLASS,
    SIZE,
    TEST_PER_CLASS,
    TRAIN_NUMBER,
    TRAIN_SIZE,
    argv_for,
    assert_same_run,
    resume,
    run_with_snapshots,
    tree_args,
)
from training import LoopSettings, evaluate, predict, train_epoch
from utils import UserError


@pytest.fixture(scope="module")
def folder_tree(tmp_path_factory: pytest.TempPathFactory) -> str:
    return datasets_on_disk.write_image_tree(str(tmp_path_factory.mktemp("folder")), "folder",
                                             CLASSES, PER_CLASS, TEST_PER_CLASS)


@pytest.fixture(scope="module")
def imagenet_tree(tmp_path_factory: pytest.TempPathFactory) -> str:
    return datasets_on_disk.write_image_tree(str(tmp_path_factory.mktemp("imagenet")), "imagenet",
                                             CLASSES, PER_CLASS, TEST_PER_CLASS)


@pytest.fixture(scope="module")
def tree_split(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("tree_split") / "split.npy")
    np.save(path, np.random.default_rng(5).permutation(TRAIN_SIZE))
    return path


def streamed(root: str, name: str = "folder", workers: int = 0) -> dataset.Data:
    return dataset.load_data(name, root, mode="stream", image_size=SIZE, workers=workers)


# ============================================================================ layouts
def test_folder_layout(folder_tree: str) -> None:
    data = streamed(folder_tree)
    assert data.mode == "stream" and data.info.num_classes == CLASSES and data.info.image_size == SIZE
    assert len(data.train) == TRAIN_SIZE and len(data.test) == CLASSES * TEST_PER_CLASS
    # classes in sorted folder order, files by class then name (ImageFolder's labels)
    assert data.train.labels.tolist() == np.repeat(np.arange(CLASSES), PER_CLASS).tolist()
    assert os.path.basename(os.path.dirname(data.train.paths[PER_CLASS])) == "class_b"
    # stored by class: without a split file the split is a fixed permutation, not identity
    assert sorted(data.split.tolist()) == list(range(TRAIN_SIZE)) and data.train_number == TRAIN_NUMBER
    assert not np.array_equal(data.split, np.arange(TRAIN_SIZE))
    assert np.array_equal(streamed(folder_tree).split, data.split)


def test_imagenet_layout_streams_by_default(imagenet_tree: str, tree_split: str) -> None:
    data = dataset.load_data("imagenet", imagenet_tree, tree_split, image_size=SIZE)
    assert data.mode == "stream" and data.info.num_classes == 1000
    assert np.array_equal(data.split, np.load(tree_split))
    assert len(data.test) == CLASSES * TEST_PER_CLASS
    assert all(os.sep + "val" + os.sep in path for path in data.test.paths)


def test_auto_keeps_a_small_folder_in_memory_with_the_evaluation_images(folder_tree: str) -> None:
    data = dataset.load_data("folder", folder_tree, image_size=SIZE)
    assert data.mode == "memory" and data.train.images.shape == (TRAIN_SIZE, 3, SIZE, SIZE)
    assert torch.equal(data.train.images, torch.cat(list(streamed(folder_tree).train.eval_batches(None, 10))))


@pytest.mark.parametrize("problem", ["no_test_folder", "extra_test_class", "stream_cifar", "bad_image"])
def test_bad_trees_are_one_line(folder_tree: str, cifar10_dir: str, tmp_path: Any, problem: str) -> None:
    root = str(tmp_path / "tree")
    datasets_on_disk.write_image_tree(root, "folder", 2, 2, 1)
    if problem == "no_test_folder":
        os.rename(os.path.join(root, "test"), os.path.join(root, "val"))
        match = "expects .*/test/<class>/"
    elif problem == "extra_test_class":
        os.makedirs(os.path.join(root, "test", "zebra"))
        match = "class folders that train/ lacks: zebra"
    elif problem == "stream_cifar":
        with pytest.raises(UserError, match="--data_mode stream reads trees of image files"):
            dataset.load_data("cifar10", cifar10_dir, download=False, mode="stream")
        return
    else:
        with open(os.path.join(root, "train", "class_a", "class_a_0.JPEG"), "wb") as handle:
            handle.write(b"not a jpeg")
        data = streamed(root)
        with pytest.raises(UserError, match="class_a_0.JPEG is not a readable image"):
            list(data.train.eval_batches(None, 4))
        return
    with pytest.raises(UserError, match=match):
        streamed(root)


# ============================================================================ batches
def test_batches_carry_their_indices_and_do_not_depend_on_workers(folder_tree: str, device: torch.device) -> None:
    """On the session's device: on CUDA the workers' batches come through pinned memory."""
    order = torch.as_tensor(np.random.default_rng(0).permutation(TRAIN_SIZE), device=device)
    alone = list(streamed(folder_tree, workers=0).to(device).train.train_batches(order, 5, epoch_seed=7))
    workers = list(streamed(folder_tree, workers=2).to(device).train.train_batches(order, 5, epoch_seed=7))
    assert torch.cat([indices for indices, _ in alone]).tolist() == order.tolist()
    assert {images.device for _, images in alone + workers} == {order.device}
    for (indices_a, images_a), (indices_b, images_b) in zip(alone, workers):
        assert torch.equal(indices_a, indices_b) and torch.equal(images_a, images_b)
    assert alone[0][1].shape == (5, 3, SIZE, SIZE) and alone[0][1].dtype == torch.uint8
    other_epoch = list(streamed(folder_tree).train.train_batches(order, 5, epoch_seed=8))
    assert not torch.equal(alone[0][1], other_epoch[0][1])


def test_train_epoch_visits_the_in_memory_order(folder_tree: str, device: torch.device) -> None:
    """Same generator, same permutation: the streamed epoch trains the very batches of
    dataset indices the in-memory epoch trains, each training index once."""
    memory = dataset.load_data("folder", folder_tree, mode="memory", image_size=SIZE).to(device)
    stream = streamed(folder_tree).to(device)
    indices = torch.as_tensor(stream.train_indices, device=device)
    settings = LoopSettings(batch_size=8, eval_batch_size=8, progress=False)
    seen: Dict[str, List[List[int]]] = {}
    for name, data in (("memory", memory), ("stream", stream)):
        torch.manual_seed(0)
        model = build_model("res20s", CLASSES).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        batches: List[List[int]] = []
        train_epoch(model, optimizer, data.train, indices, torch.Generator(device=device).manual_seed(3), settings,
                    on_batch=lambda batch, logits, targets, out=batches: out.append(batch.tolist()))
        seen[name] = batches
        assert sorted(sum(batches, [])) == sorted(indices.tolist())
    assert seen["memory"] == seen["stream"]
    # unaugmented predictions and accuracy agree between the two paths
    model.eval()
    val = torch.as_tensor(stream.val_indices, device=device)
    assert torch.equal(predict(model, memory.train, settings, val), predict(model, stream.train, settings, val))
    assert evaluate(model, memory.test, settings) == evaluate(model, stream.test, settings)


# ============================================================================ scripts end to end
PRAC_EXTRA = ("--epochs", "2", "--pruning_times", "2", "--data_prune", "constent", "--data_rate", "0.2")


@pytest.fixture(scope="module")
def prac_stream_run(folder_tree: str, tree_split: str, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    root = tmp_path_factory.mktemp("prac_stream")
    save_dir = str(root / "run")
    argv = tree_args(folder_tree, save_dir, "--split_file", tree_split, *PRAC_EXTRA)
    os.makedirs(root / "snapshots")
    snapshots = run_with_snapshots(main_PrAC_imp.main, argv, save_dir, str(root / "snapshots"), [(0, 1), (1, 0)])
    return {"argv": argv, "save_dir": save_dir, "snapshots": snapshots, "root": root}


def test_prac_on_a_streamed_folder(prac_stream_run: Dict[str, Any], tree_split: str) -> None:
    save_dir = prac_stream_run["save_dir"]
    split = np.load(tree_split)
    checkpoint = load_checkpoint(os.path.join(save_dir, "1checkpoint.pth.tar"))
    assert checkpoint["state"] == 1
    prac_set = np.load(os.path.join(save_dir, "1prac_set.npy"))
    assert set(prac_set.tolist()) <= set(split[:TRAIN_NUMBER].tolist())
    assert prac_set.size == int(TRAIN_NUMBER * 0.8)


def test_streamed_seeded_run_is_the_same_with_workers(prac_stream_run: Dict[str, Any], tmp_path: Any) -> None:
    save_dir = str(tmp_path / "again")
    argv = argv_for(prac_stream_run["argv"], save_dir)
    argv[argv.index("--workers") + 1] = "2"
    main_PrAC_imp.main(argv)
    assert_same_run(prac_stream_run["save_dir"], save_dir)


@pytest.mark.parametrize("point", [(0, 1), (1, 0)])
def test_streamed_killed_run_resumes_exactly(prac_stream_run: Dict[str, Any], point: Any) -> None:
    folder = prac_stream_run["snapshots"][point]
    resume(main_PrAC_imp.main, argv_for(prac_stream_run["argv"], folder), folder, point[0])
    assert_same_run(prac_stream_run["save_dir"], folder)


def test_imp_and_retrain_on_streamed_trees(folder_tree: str, imagenet_tree: str, tmp_path: Any) -> None:
    imp_dir = str(tmp_path / "imp")
    main_imp.main(tree_args(folder_tree, imp_dir, "--epochs", "1", "--pruning_times", "2"))
    ticket = os.path.join(imp_dir, "1checkpoint.pth.tar")
    assert os.path.exists(ticket)
    retrain_dir = str(tmp_path / "retrain")
    main_train.main(tree_args(folder_tree, retrain_dir, "--epochs", "1", "--init_dir", ticket, "--mask_dir", ticket))
    assert os.path.exists(os.path.join(retrain_dir, "checkpoint.pth.tar"))
    # the ImageNet layout with its model: ResNet-18, 1000 classes (at 32 px here, one batch)
    imagenet_dir = str(tmp_path / "imagenet")
    argv = tree_args(imagenet_tree, imagenet_dir, "--epochs", "1", name="imagenet")
    argv[argv.index("res20s")] = "res18"
    argv[argv.index("--batch_size") + 1] = "32"
    main_train.main(argv)
    assert load_checkpoint(os.path.join(imagenet_dir, "checkpoint.pth.tar"))["state_dict"]["fc.weight"].shape[0] == 1000


def test_image_size_is_for_image_trees(cifar10_dir: str, tmp_path: Any) -> None:
    with pytest.raises(UserError, match="--image_size applies to --dataset imagenet and folder"):
        main_train.main(["--data", cifar10_dir, "--dataset", "cifar10", "--image_size", "32",
                         "--save_dir", str(tmp_path / "x")])
