"""Python side of tools/gpu_check.sh: checks before anything runs, the small Fashion-MNIST
copy of ``--scale small``, and the one summary of the parts found in the output folder.

    python tools/gpu_check.py preflight --device cuda
    python tools/gpu_check.py data DIR
    python tools/gpu_check.py subset DIR TARGET_DIR SPLIT_FILE --train 2000 --test 500
    python tools/gpu_check.py search FOLDER FLAGS...   # IMP and PrAC at once, then report.py
    python tools/gpu_check.py summary OUT_DIR --device cuda --parts tests,bench,compile,search

Nothing here installs or downloads: a problem is one line and exit code 2.
"""
import argparse
import datetime
import importlib
import os
import platform
import re
import subprocess
import sys
from typing import List, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

RUNTIME_MODULES = ("torch", "torchvision", "numpy", "matplotlib", "tqdm", "PIL", "pytest")
PYTEST_SUMMARY = re.compile(r"\b\d+ (passed|failed|skipped|errors?|deselected)\b.* in [\d.]+s")
TIMED_OUT = (124, 137)  # timeout's exit codes: the part ran past its limit
MOST_LINES = 40


def fail(message: str) -> None:
    print(f"gpu_check: {message}", file=sys.stderr)
    sys.exit(2)


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"[:200]


def preflight(device: str) -> None:
    """Every module imports (any error, e.g. a torchvision built for another torch, counts),
    torch is recent enough, and CUDA is there when it is asked for."""
    problems = []
    for name in RUNTIME_MODULES:
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 - a broken install raises anything, not only ImportError
            problems.append(f"{name} ({first_line(error)})")
    if problems:
        fail(f"{sys.executable} cannot import {', '.join(problems)}")
    import torch

    from utils import UserError, check_torch_version
    try:
        check_torch_version()
    except UserError as error:
        fail(f"{sys.executable}: {error}")
    if device == "cuda" and not torch.cuda.is_available():
        fail(f"{sys.executable}: torch {torch.__version__} sees no CUDA device (built with CUDA "
             f"{torch.version.cuda})")


def check_data(folder: str) -> int:
    """Fashion-MNIST's four idx files are readable in ``folder``; returns the train images."""
    from dataset import load_fashion_mnist
    from utils import UserError
    try:
        train, test = load_fashion_mnist(folder, download=False, fallback=False)
    except UserError as error:
        fail(f"no Fashion-MNIST in {folder}: {error}")
    print(f"Fashion-MNIST in {folder}: {len(train)} train, {len(test)} test images")
    return len(train)


def write_subset(folder: str, target: str, split_file: str, train: int, test: int) -> None:
    """The first ``train`` / ``test`` images (or all there are) in the idx.gz layout, and a
    shuffled split of them."""
    import numpy as np

    from tools.demo import write_demo_data
    from tools.make_split_files import make_split
    train = min(train, check_data(folder))
    write_demo_data(folder, target, train, test)
    np.save(split_file, make_split(train, shuffle=True))


def search(folder: str, flags: Sequence[str]) -> int:
    """main_imp.py and main_PrAC_imp.py with the same ``flags`` at once (ResNet-20s at batch
    128 leaves most of a GPU idle), into ``folder``/imp and /prac, then report.py on both."""
    runs = {name: subprocess.Popen([sys.executable, os.path.join(REPO, script), *flags, "--save_dir",
                                    os.path.join(folder, name)],
                                   stdout=open(os.path.join(folder, f"{name}.log"), "w"), stderr=subprocess.STDOUT)
            for name, script in (("imp", "main_imp.py"), ("prac", "main_PrAC_imp.py"))}
    codes = {name: run.wait() for name, run in runs.items()}
    print(", ".join(f"{name}: exit code {code}" for name, code in codes.items()), flush=True)
    if any(codes.values()):
        return 1
    return subprocess.call([sys.executable, os.path.join(REPO, "report.py"), os.path.join(folder, "imp"),
                            os.path.join(folder, "prac"), "--name", "IMP", "PrAC", "--out",
                            os.path.join(folder, "report")])


# ----------------------------------------------------------------------------- summary
def read(path: str) -> Optional[str]:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def environment_lines(device: str) -> List[str]:
    import numpy
    import torch
    import torchvision
    gpu = "none (--device cpu)"
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = (f"{torch.cuda.get_device_name(0)} ({props.total_memory / 2**30:.0f} GiB, compute capability "
               f"{props.major}.{props.minor}), {torch.cuda.device_count()} visible")
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return [f"device: {device}; GPU: {gpu}",
            f"torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {cudnn}), torchvision "
            f"{torchvision.__version__}, numpy {numpy.__version__}, Python {platform.python_version()} "
            f"({sys.executable})",
            f"host: {platform.node()}, {os.cpu_count()} logical CPUs"]


def part_lines(out: str, name: str) -> List[str]:
    """Exit code and wall time of a part, then what it measured."""
    rc_text = read(os.path.join(out, f"{name}.rc"))
    if rc_text is None:
        return ["not run"]
    rc = int(rc_text)
    seconds = (read(os.path.join(out, f"{name}.seconds")) or "?").strip()
    state = "stopped at its time limit" if rc in TIMED_OUT else f"exit code {rc}"
    lines = [f"{state}, {seconds} s wall: {(read(os.path.join(out, f'{name}.command')) or '').strip()}"]
    log = read(os.path.join(out, f"{name}.log")) or ""
    if name == "tests":
        results = [line.strip("= ") for line in log.splitlines() if PYTEST_SUMMARY.search(line)]
        if not results:  # stopped before pytest's last line: count the tests' own lines (-v)
            counts = {word: sum(f" {word}" in line for line in log.splitlines()) for word in ("PASSED", "FAILED")}
            results = [f"{counts['PASSED']} passed, {counts['FAILED']} failed before the stop"]
        lines += results[-1:] + [line for line in log.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    elif name in ("bench", "compile"):
        report = read(os.path.join(out, f"{name}.md")) or ""
        lines += [line for line in report.splitlines() if line.startswith(("- ", "|"))]
    else:
        lines += (read(os.path.join(out, "search", "settings")) or "").splitlines()
        lines += [line for line in log.splitlines() if line.strip() and not line.startswith(("report:", "plot:",
                                                                                              "table:"))]
    if rc != 0:
        lines += ["last lines of the log:", *log.splitlines()[-5:]]
    return lines[:MOST_LINES] + ([f"... see {out}/{name}.log"] if len(lines) > MOST_LINES else [])


def summary(out: str, device: str, parts: Sequence[str]) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = [(f"gpu_check summary, {now}", environment_lines(device))]
    sections += [(name, part_lines(out, name)) for name in parts]
    return "\n".join(line for title, lines in sections for line in (f"== {title}", *lines, "")) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("preflight").add_argument("--device", choices=("cpu", "cuda"), required=True)
    commands.add_parser("data").add_argument("folder")
    subset = commands.add_parser("subset")
    for name in ("folder", "target", "split_file"):
        subset.add_argument(name)
    subset.add_argument("--train", type=int, required=True)
    subset.add_argument("--test", type=int, required=True)
    searching = commands.add_parser("search")
    searching.add_argument("folder")
    searching.add_argument("flags", nargs=argparse.REMAINDER)
    report = commands.add_parser("summary")
    report.add_argument("out")
    report.add_argument("--device", choices=("cpu", "cuda"), required=True)
    report.add_argument("--parts", default="tests,bench,compile,search")
    args = parser.parse_args(argv)
    if args.command == "preflight":
        preflight(args.device)
    elif args.command == "data":
        check_data(args.folder)
    elif args.command == "subset":
        write_subset(args.folder, args.target, args.split_file, args.train, args.test)
    elif args.command == "search":
        sys.exit(search(args.folder, args.flags))
    else:
        parts = [p for p in args.parts.split(",") if p]
        text = summary(args.out, args.device, parts)
        with open(os.path.join(args.out, "summary.txt"), "w") as handle:
            handle.write(text)
        print(text, end="")
        failed = [p for p in parts if (read(os.path.join(args.out, f"{p}.rc")) or "0").strip() != "0"]
        if failed:
            print(f"gpu_check: failed: {', '.join(failed)} (logs in {args.out}/)", file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
