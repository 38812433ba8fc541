"""Helpers shared by the test modules (fixtures live in conftest.py)."""
import contextlib
import csv
import importlib
import io
import os
import subprocess
import sys
from typing import Dict, List, Sequence

import utils

SCRIPT_MODULES = {"main_imp.py": "main_imp", "main_PrAC_imp.py": "main_PrAC_imp", "main_train.py": "main_train",
                  "sweep.py": "sweep", "report.py": "report"}


def read_csv(path: str) -> List[Dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def one_line(error: BaseException) -> bool:
    """An error message a user reads at a glance: not empty, one line."""
    text = str(error)
    return bool(text.strip()) and "\n" not in text


class Payload:
    """Unpickling this runs a shell command: what a poisoned file carries."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def run_in_process(script: str, argv: Sequence[str]) -> subprocess.CompletedProcess:
    """Runs a script's command line in this process, as ``python script argv`` would (its
    ``run_cli`` turns errors into one line and an exit code), and returns what a subprocess
    would: exit code, stdout and stderr. For errors raised before training; a Python
    process costs ~2 s of start-up here, this costs nothing."""
    module = importlib.import_module(SCRIPT_MODULES[script])
    stdout, stderr = io.StringIO(), io.StringIO()
    saved_argv, code = sys.argv, 0
    sys.argv = [script, *argv]
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                utils.run_cli(module.main)
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else 1
            finally:
                for handler in list(utils.LOG.handlers):  # the run's log file goes with it
                    handler.close()
                    utils.LOG.removeHandler(handler)
    finally:
        sys.argv = saved_argv
    return subprocess.CompletedProcess([script, *argv], code, stdout.getvalue(), stderr.getvalue())
