"""Demo: vanilla IMP vs PrAC IMP on real Fashion-MNIST, offline, on a CPU in minutes.

Both searches run with the same seed and schedule on a demo-size copy of Fashion-MNIST
(the first --train_images training and --test_images test images, written in the idx
format the loaders read), then every pruned ticket of both is retrained with
main_train.py, and report.py prints the comparison. Every step is one of the
user-facing scripts, run as a user would run it; the commands are printed.
"""
import argparse
import gzip
import os
import shlex
import subprocess
import sys
import time
from typing import List, Optional, Sequence

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


def run(command: List[str]) -> None:
    print("\n$ " + " ".join(shlex.quote(part) for part in command), flush=True)
    if subprocess.run(command, cwd=REPO).returncode != 0:
        sys.exit(f"error: the demo stopped because this step failed: {' '.join(command[1:3])} ...")


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fashion_dir", default="data/fashionmnist",
                        help="where Fashion-MNIST is or is downloaded to (Debian's copy is found too)")
    parser.add_argument("--out", default="demo_runs", help="folder for data, runs and report")
    parser.add_argument("--train_images", type=int, default=6000)
    parser.add_argument("--test_images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4, help="--pruning_times of both searches")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--decreasing_lr", default="4,6")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    args = parser.parse_args(argv)

    started = time.time()
    data_dir = os.path.join(args.out, "data", "fashionmnist-demo")
    split_file = os.path.join(args.out, "data", "fashionmnist-demo-train-val.npy")
    try:
        write_demo_data(args.fashion_dir, data_dir, args.train_images, args.test_images)
    except UserError as error:
        sys.exit(f"error: {error}")
    np.save(split_file, make_split(args.train_images, shuffle=True))
    print(f"demo: {args.train_images} Fashion-MNIST training images (90% train, 10% validation), "
          f"{args.test_images} test images; ResNet-20s; {args.rounds} rounds x {args.epochs} epochs; "
          f"seed {args.seed}")

    python = sys.executable
    common = ["--data", data_dir, "--dataset", "fashionmnist", "--arch", "res20s", "--split_file", split_file,
              "--batch_size", "128", "--lr", "0.1", "--epochs", str(args.epochs),
              "--decreasing_lr", args.decreasing_lr, "--seed", str(args.seed), "--precision", args.precision,
              "--print_freq", "1000"]
    search = ["--pruning_times", str(args.rounds), "--prune_type", "rewind_lt", "--rewind_epoch", "0"]
    runs = {"imp": os.path.join(args.out, "imp"), "prac": os.path.join(args.out, "prac")}
    for path in list(runs.values()):
        if os.path.exists(path):
            sys.exit(f"error: {path} exists from an earlier demo; remove {args.out}/ or pass --out DIR")
    run([python, "main_imp.py", *common, *search, "--save_dir", runs["imp"]])
    run([python, "main_PrAC_imp.py", *common, *search, "--save_dir", runs["prac"]])

    retrain_dirs = []
    for name, run_dir in runs.items():
        tickets = [f"{k}checkpoint.pth.tar" for k in range(1, args.rounds)] + ["final_ticket.pth.tar"]
        for ticket in tickets:
            ticket_path = os.path.join(run_dir, ticket)
            save_dir = os.path.join(args.out, f"{name}_retrain", ticket.split(".")[0])
            run([python, "main_train.py", *common, "--init_dir", ticket_path, "--mask_dir", ticket_path,
                 "--save_dir", save_dir])
            retrain_dirs.append(save_dir)

    report_dir = os.path.join(args.out, "report")
    run([python, "report.py", runs["imp"], runs["prac"], "--name", "IMP", "PrAC",
         "--retrain", *retrain_dirs, "--out", report_dir])
    print(f"\ndemo finished in {(time.time() - started) / 60:.1f} minutes; report and plots in {report_dir}/")


if __name__ == "__main__":
    main()
