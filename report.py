"""Report on lottery-ticket runs: per setting and method, mean ± std over seeds, a verdict
against IMP with paired 95% intervals, the ticket's controls, tables and plots.

    python report.py DIR [DIR ...] [--retrain DIR ...] [--out OUT_DIR] [--name LABEL ...]

Every folder with an args.json at any depth under a DIR is a run (a sweep folder, a folder of
sweeps, run folders). Each run says what it is: main_imp.py is imp, main_PrAC_imp.py its
--select rule, main_train.py a retrained ticket (or its reinit / random-mask control, or a dense
run) matched to its search run and round through the ticket record in its args.json. Runs
are grouped by their whole setting and compared only within it (reporting/grouping.py); one
run is the n = 1 case.

Writes report.md, aggregate.csv (per setting, method and round: n, mean, std), verdict.csv
(each method against IMP, random against PrAC: the accuracy difference with a paired 95%
t-interval and the cost in % of the reference's training steps), controls.csv (ticket vs reinit
vs random mask), runs.csv (every run's values per round) and accuracy_vs_weights.png,
accuracy_vs_steps.png, set_size.png (suffixed -1, -2, ... per setting when there are several).
--out (default DIR/report for one folder of runs, else report/ beside the first run) is
replaced whole by each call; the tables are printed after the files are written, and a reader
that stops early (``| head``) ends the program quietly.
"""
import argparse
import os
import shutil
import sys
import tempfile
from typing import Callable, List, Optional, Sequence

from durable import TEMP_PREFIX, current_umask
from paths import RunPaths
from reporting.build import REPORT_MARKDOWN, Report, build_report, write_report
from utils import UserError, run_cli

REPORT_FOLDER = "report"


def replace_folder(out_dir: str, write: Callable[[str], List[str]]) -> List[str]:
    """Runs ``write`` on a fresh temporary folder beside ``out_dir`` and then swaps it in,
    so ``out_dir`` holds exactly this call's files. A folder that holds files but no
    report.md is not a report and is refused, never deleted."""
    out = os.path.abspath(out_dir)
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise UserError(f"--out {out_dir} is a file, not a folder")
        if os.listdir(out) and not os.path.isfile(os.path.join(out, REPORT_MARKDOWN)):
            raise UserError(f"--out {out_dir} holds files but no {REPORT_MARKDOWN}: it is not a report "
                            "folder, and the report replaces its folder whole; pick another --out")
    parent = os.path.dirname(out)
    try:
        os.makedirs(parent, exist_ok=True)
        temp = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.path.basename(out)}-", dir=parent)
    except OSError as error:
        raise UserError(f"--out {out_dir} cannot be created ({error})") from None
    old = temp + ".old"
    try:
        written = write(temp)
        os.chmod(temp, 0o777 & ~current_umask())  # mkdtemp's 0700 would hide the report
        if os.path.exists(out):
            os.rename(out, old)
        os.rename(temp, out)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return [os.path.join(out, os.path.relpath(path, temp)) for path in written]


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Tables and plots of lottery-ticket runs (main_imp.py, main_PrAC_imp.py, main_train.py): "
                    "grouped by setting and method as each run's args.json says, mean ± std over seeds, a "
                    "verdict against IMP and the controls of each ticket.")
    parser.add_argument("runs", nargs="+", metavar="DIR",
                        help="run folders, or folders holding runs at any depth (e.g. a sweep folder)")
    parser.add_argument("--retrain", nargs="+", default=[], metavar="DIR",
                        help="more main_train.py run folders, or folders of them (those under DIR are found too)")
    parser.add_argument("--out", default=None, metavar="OUT_DIR",
                        help="output folder, replaced whole by each call (default: DIR/report for one folder "
                             "of runs, else report/ beside the first run)")
    parser.add_argument("--name", nargs="+", default=None, metavar="LABEL", help="one label per run folder")
    # Kept so that older commands still run: there is one report now, of which one seed is the n = 1 case.
    parser.add_argument("--replicates", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--per_run", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def default_out(first: str) -> str:
    """DIR/report for a folder of runs (a sweep), else report/ beside the run."""
    if os.path.isdir(first) and not os.path.isfile(RunPaths(first).run_info):
        return os.path.join(first, REPORT_FOLDER)
    return os.path.join(os.path.dirname(os.path.abspath(first)), REPORT_FOLDER)


def main(argv: Optional[Sequence[str]] = None) -> Report:
    """The command line: builds the report, writes it (replacing --out whole), then prints
    the tables and the file paths."""
    args = parse_args(argv)
    report = build_report(args.runs, args.retrain, args.name)
    report.files = replace_folder(args.out or default_out(args.runs[0]), lambda folder: write_report(report, folder))
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"{report.markdown}\n\nreport: {report.files[0]}")
    for path in report.files[1:]:
        print(f"{'plot' if path.endswith('.png') else 'table'}: {path}")
    sys.stdout.flush()  # a closed pipe (report.py | head) shows here, inside the caller's handler
    return report


if __name__ == "__main__":
    try:
        run_cli(main)
    except BrokenPipeError:  # a reader that stopped early (| head): the files were written before any print
        # Python flushes stdout again at exit; point it at /dev/null so that flush is quiet too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
