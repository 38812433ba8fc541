"""Demo: IMP, PrAC and the random-subset baseline, two seeds each, on real Fashion-MNIST,
offline, on a CPU in minutes, ending with the verdict.

Writes a demo-size copy of Fashion-MNIST (the first --train_images training and
--test_images test images, in the idx format the loaders read) and a fixed split file,
then runs sweep.py on it: every method x seed with the same flags, their final tickets
retrained with main_train.py, and report.py's verdict. The sweep prints every command.
With larger settings the same tool makes the README's larger result.
"""
import argparse
import gzip
import os
import shlex
import subprocess
import sys
import time
from typing import Optional, Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from dataset import load_fashion_mnist  # noqa: E402
from tools.make_split_files import make_split  # noqa: E402
from utils import UserError  # noqa: E402


def write_idx(path: str, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_demo_data(source: str, target: str, train_images: int, test_images: int) -> None:
    """The first images of Fashion-MNIST's train and test sets, in the idx.gz layout.

    ``source`` may lack them: Debian's copy is then read, or they are downloaded into it.
    """
    train, test = load_fashion_mnist(source, fallback=True)
    os.makedirs(target, exist_ok=True)
    write_idx(os.path.join(target, "train-images-idx3-ubyte.gz"), train.images[:train_images, 0].numpy())
    write_idx(os.path.join(target, "train-labels-idx1-ubyte.gz"), train.labels[:train_images].numpy())
    write_idx(os.path.join(target, "t10k-images-idx3-ubyte.gz"), test.images[:test_images, 0].numpy())
    write_idx(os.path.join(target, "t10k-labels-idx1-ubyte.gz"), test.labels[:test_images].numpy())


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fashion_dir", default="data/fashionmnist",
                        help="where Fashion-MNIST is or is downloaded to (Debian's copy is found too)")
    parser.add_argument("--out", default="demo_runs", help="folder for data, runs and report")
    parser.add_argument("--train_images", type=int, default=2000)
    parser.add_argument("--test_images", type=int, default=1000)
    parser.add_argument("--methods", default="imp,prac,random")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--rounds", type=int, default=3, help="--pruning_times of every search")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--decreasing_lr", default="8,12")
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    parser.add_argument("--arch", default="res20s", help="any --arch of the scripts, e.g. cifar_resnet_8_32")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--lr", default="0.1")
    parser.add_argument("--retrain", default=None, choices=("final", "all", "none"),
                        help="sweep.py --retrain (default: its own)")
    parser.add_argument("--controls", default=None, help="sweep.py --controls, e.g. reinit,random_mask")
    parser.add_argument("--jobs", type=int, default=None, help="sweep.py --jobs (default: its own)")
    args = parser.parse_args(argv)

    started = time.time()
    data_dir = os.path.join(args.out, "data", "fashionmnist-demo")
    split_file = os.path.join(args.out, "data", "fashionmnist-demo-train-val.npy")
    try:
        write_demo_data(args.fashion_dir, data_dir, args.train_images, args.test_images)
    except UserError as error:
        sys.exit(f"error: {error}")
    if not os.path.exists(split_file):  # a relaunch keeps the split its runs were made with
        np.save(split_file, make_split(args.train_images, shuffle=True))
    print(f"demo: {args.train_images} Fashion-MNIST training images (90% train, 10% validation), "
          f"{args.test_images} test images; {args.arch}, batch {args.batch_size}, lr {args.lr}, {args.precision}; "
          f"{args.rounds} rounds x {args.epochs} epochs; methods {args.methods}; seeds {args.seeds}", flush=True)

    flags = ["--data", data_dir, "--dataset", "fashionmnist", "--arch", args.arch, "--split_file", split_file,
             "--batch_size", str(args.batch_size), "--lr", args.lr, "--epochs", str(args.epochs),
             "--decreasing_lr", args.decreasing_lr, "--precision", args.precision,
             "--pruning_times", str(args.rounds), "--prune_type", "rewind_lt", "--rewind_epoch", "1",
             "--no_progress", "--print_freq", "1000"]
    sweep = [sys.executable, "sweep.py", "--methods", args.methods, "--seeds", args.seeds,
             "--out", os.path.join(args.out, "sweep"), *(["--jobs", str(args.jobs)] if args.jobs else []),
             *(["--retrain", args.retrain] if args.retrain else []),
             *(["--controls", args.controls] if args.controls else []),
             "--", *flags]
    print("\n$ " + " ".join(shlex.quote(part) for part in sweep), flush=True)
    code = subprocess.run(sweep, cwd=REPO).returncode
    if code != 0:
        sys.exit(code)
    print(f"\ndemo finished in {(time.time() - started) / 60:.1f} minutes; report and plots in "
          f"{os.path.join(args.out, 'sweep', 'report')}/ (relaunch the same command to resume or add seeds)")


if __name__ == "__main__":
    main()
