"""Writes the split files in npy_files/: a permutation of each train set's indices.

The last 10% of a split file validates and the rest trains. CIFAR and Fashion-MNIST keep
the data set's order (identity, as the published cifar split files do); Tiny-ImageNet,
whose train folder is ordered by class, uses a fixed-seed permutation so that the
validation part covers every class. Deterministic: re-running writes identical files.

    python tools/make_split_files.py                      # all four data sets
    python tools/make_split_files.py --size 200 --shuffle --out my-split.npy
"""
import argparse
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

TINY_IMAGENET_SPLIT_SEED = 2021
# name: (train-set size, shuffled?)
SPLITS: Dict[str, Tuple[int, bool]] = {
    "cifar10": (50000, False),
    "cifar100": (50000, False),
    "fashionmnist": (60000, False),
    "tiny-imagenet": (100000, True),
}


def make_split(size: int, shuffle: bool, seed: int = TINY_IMAGENET_SPLIT_SEED) -> np.ndarray:
    if shuffle:
        return np.random.default_rng(seed).permutation(size).astype(np.int64)
    return np.arange(size, dtype=np.int64)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=None, help="write one split of this size to --out")
    parser.add_argument("--shuffle", action="store_true", help="with --size: a fixed-seed permutation")
    parser.add_argument("--seed", type=int, default=TINY_IMAGENET_SPLIT_SEED)
    parser.add_argument("--out", type=str, default=None, help="with --size: output file")
    parser.add_argument("--dir", type=str, default=os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "npy_files"), help="folder of the standard split files")
    args = parser.parse_args(argv)
    if args.size is not None:
        if not args.out:
            parser.error("--size needs --out")
        np.save(args.out, make_split(args.size, args.shuffle, args.seed))
        print(f"wrote {args.out}")
        return
    os.makedirs(args.dir, exist_ok=True)
    for name, (size, shuffle) in SPLITS.items():
        path = os.path.join(args.dir, f"{name}-train-val.npy")
        np.save(path, make_split(size, shuffle))
        print(f"wrote {path} ({size} indices, {'shuffled' if shuffle else 'identity'})")


if __name__ == "__main__":
    main()
