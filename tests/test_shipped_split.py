"""Without --split_file, a data set's shipped split file is used, as the published loaders
do; Tiny-ImageNet's train folder is stored by class, so identity order would validate on
its last classes and never train them (SPEC §1)."""
import os
from typing import Any

import numpy as np
import pytest

import dataset
from dataset import load_data


def test_tiny_imagenet_uses_the_shipped_permutation(tiny_imagenet_dir: str, tmp_path: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    permutation = np.random.default_rng(5).permutation(40)
    np.save(tmp_path / "tiny-imagenet-train-val.npy", permutation)
    monkeypatch.setattr(dataset, "SHIPPED_SPLIT_DIR", str(tmp_path))
    data = load_data("tiny-imagenet", tiny_imagenet_dir)
    assert np.array_equal(data.split, permutation)
    # the validation examples come from every part of the class-ordered train set
    validation_classes = set(data.train.labels[data.val_indices].tolist())
    assert len(validation_classes) > 1


def test_a_shipped_split_of_another_size_falls_back_to_identity(tiny_imagenet_dir: str, tmp_path: Any,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    np.save(tmp_path / "tiny-imagenet-train-val.npy", np.arange(100))
    monkeypatch.setattr(dataset, "SHIPPED_SPLIT_DIR", str(tmp_path))
    assert np.array_equal(load_data("tiny-imagenet", tiny_imagenet_dir).split, np.arange(40))


def test_the_repository_ships_a_permutation_for_every_data_set() -> None:
    """Every in-memory data set; image trees (imagenet, folder) use a seeded permutation."""
    for name in (n for n in dataset.DATASETS if n not in dataset.IMAGE_TREES):
        split = np.load(os.path.join(dataset.SHIPPED_SPLIT_DIR, f"{name}-train-val.npy"))
        assert np.array_equal(np.sort(split), np.arange(split.size)), name
    tiny = np.load(os.path.join(dataset.SHIPPED_SPLIT_DIR, "tiny-imagenet-train-val.npy"))
    assert not np.array_equal(tiny, np.arange(tiny.size))
