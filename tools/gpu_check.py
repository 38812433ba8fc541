"""Python side of tools/gpu_check.sh: checks before anything runs, the small Fashion-MNIST
copy of ``--scale small``, and the one summary of every part found in the output folder.

    python tools/gpu_check.py preflight --device cuda [--need pytest]
    python tools/gpu_check.py data DIR
    python tools/gpu_check.py subset DIR TARGET_DIR SPLIT_FILE --train 2000 --test 500
    python tools/gpu_check.py summary OUT_DIR --device cuda

Nothing here installs or downloads: a missing module or file is one line and exit code 2.
"""
import argparse
import datetime
import importlib
import os
import platform
import re
import sys
from typing import List, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

RUNTIME_MODULES = ("torch", "torchvision", "numpy", "matplotlib", "tqdm", "PIL")
PYTEST_SUMMARY = re.compile(r"\b\d+ (passed|failed|skipped|errors?|deselected)\b.* in [\d.]+s")
MOST_FAILURES_SHOWN = 20


def fail(message: str) -> None:
    print(f"gpu_check: {message}", file=sys.stderr)
    sys.exit(2)


def preflight(device: str, need: Sequence[str]) -> None:
    """Every module the parts import is there, and so is CUDA when it is asked for."""
    missing = []
    for name in (*RUNTIME_MODULES, *need):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        fail(f"{sys.executable} lacks {', '.join(missing)}; install them first (this script never installs)")
    import torch
    if device == "cuda" and not torch.cuda.is_available():
        fail(f"--device cuda, but torch {torch.__version__} ({sys.executable}) sees no CUDA device "
             f"(built with CUDA {torch.version.cuda}); use --device cpu or another PYTHON")


def check_data(folder: str) -> None:
    """Fashion-MNIST's four idx files are readable in ``folder`` (never downloaded)."""
    from dataset import load_fashion_mnist
    from utils import UserError
    try:
        train, test = load_fashion_mnist(folder, download=False, fallback=False)
    except UserError as error:
        fail(f"no Fashion-MNIST in {folder}: {error}")
    print(f"Fashion-MNIST in {folder}: {len(train)} train, {len(test)} test images")


def write_subset(folder: str, target: str, split_file: str, train: int, test: int) -> None:
    """The first ``train`` / ``test`` images in the idx.gz layout and a shuffled 90/10 split."""
    import numpy as np
    from tools.demo import write_demo_data
    from tools.make_split_files import make_split
    check_data(folder)
    write_demo_data(folder, target, train, test)
    np.save(split_file, make_split(train, shuffle=True))


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
    if device == "cuda" and torch.cuda.is_available():
        index = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        gpu = (f"{torch.cuda.get_device_name(index)} ({props.total_memory / 2**30:.0f} GiB, "
               f"compute capability {props.major}.{props.minor}), {torch.cuda.device_count()} visible")
    else:
        gpu = "none used (--device cpu)" if device == "cpu" else "none visible"
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return [f"device: {device}; GPU: {gpu}",
            f"torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {cudnn}), torchvision "
            f"{torchvision.__version__}, numpy {numpy.__version__}, Python {platform.python_version()} "
            f"({sys.executable})",
            f"host: {platform.node()}, {os.cpu_count()} logical CPUs"]


def tests_lines(out: str) -> List[str]:
    log = read(os.path.join(out, "tests", "pytest.log"))
    if log is None:
        return ["not run"]
    rc = (read(os.path.join(out, "tests", "rc")) or "?").strip()
    results = [line.strip("= ") for line in log.splitlines() if PYTEST_SUMMARY.search(line)]
    lines = [f"{results[-1] if results else 'no pytest summary line'} (exit code {rc})"]
    command = read(os.path.join(out, "tests", "command"))
    if command:
        lines.append(f"command: {command.strip()}")
    failed = [line for line in log.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    lines += failed[:MOST_FAILURES_SHOWN]
    if len(failed) > MOST_FAILURES_SHOWN:
        lines.append(f"... and {len(failed) - MOST_FAILURES_SHOWN} more in {out}/tests/pytest.log")
    return lines


def bench_lines(out: str, name: str) -> List[str]:
    """The settings lines and every table row of bench.py's report."""
    report = read(os.path.join(out, "bench", f"{name}.md"))
    rc = (read(os.path.join(out, "bench", f"{name}.rc")) or "?").strip()
    if report is None:
        return ["not run" if rc == "?" else f"failed (exit code {rc}); see {out}/bench/{name}.log"]
    keep = [line for line in report.splitlines() if line.startswith(("- ", "|"))]
    return [f"exit code {rc}", *keep]


def search_lines(out: str) -> List[str]:
    folder = os.path.join(out, "search")
    settings = read(os.path.join(folder, "settings"))
    if settings is None:
        return ["not run"]
    lines = [line for line in settings.splitlines() if line]
    for step in ("imp", "prac", "report"):
        rc = read(os.path.join(folder, f"{step}.rc"))
        seconds = read(os.path.join(folder, f"{step}.seconds"))
        if rc is not None:
            lines.append(f"{step}: exit code {rc.strip()}, {float(seconds or 'nan'):.0f} s wall")
    report = read(os.path.join(folder, "report.txt"))
    if report:
        lines += [line for line in report.splitlines() if not line.startswith(("report:", "plot:", "table:"))]
    return lines


def summary(out: str, device: str) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = [(f"gpu_check summary, {now}", environment_lines(device)),
                (f"tests (pytest --device {device})", tests_lines(out)),
                ("bench/bench.py, eager", bench_lines(out, "eager")),
                ("bench/bench.py --compile", bench_lines(out, "compile")),
                ("IMP vs PrAC search on Fashion-MNIST (report.py)", search_lines(out))]
    text = []
    for title, lines in sections:
        text += [f"== {title}", *lines, ""]
    return "\n".join(text)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("preflight")
    check.add_argument("--device", choices=("cpu", "cuda"), required=True)
    check.add_argument("--need", nargs="*", default=[])
    data = commands.add_parser("data")
    data.add_argument("folder")
    subset = commands.add_parser("subset")
    subset.add_argument("folder")
    subset.add_argument("target")
    subset.add_argument("split_file")
    subset.add_argument("--train", type=int, required=True)
    subset.add_argument("--test", type=int, required=True)
    report = commands.add_parser("summary")
    report.add_argument("out")
    report.add_argument("--device", choices=("cpu", "cuda"), required=True)
    args = parser.parse_args(argv)
    if args.command == "preflight":
        preflight(args.device, args.need)
    elif args.command == "data":
        check_data(args.folder)
    elif args.command == "subset":
        write_subset(args.folder, args.target, args.split_file, args.train, args.test)
    else:
        text = summary(args.out, args.device)
        with open(os.path.join(args.out, "summary.txt"), "w") as handle:
            handle.write(text)
        print(text, end="")


if __name__ == "__main__":
    main()
