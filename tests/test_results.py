"""The replicated result quoted in docs/results.md and the README is what report.py computes
from the committed tables."""
import os
import re
import subprocess
import sys
from typing import Any

from tests.conftest import REPO
from tests.helpers import read_csv as rows

RESULT = os.path.join(REPO, "results", "fashion-mnist-sweep-2026-11-30")


def flat(path: str) -> str:
    with open(path) as handle:
        return re.sub(r"\s+", " ", handle.read())


def signed(value: float) -> str:
    return f"{value:+.2f}".replace("-", "−")


def test_readme_verdict_is_recomputed_from_results(tmp_path: Any) -> None:
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, os.path.join(REPO, "report.py"), RESULT, "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    readme, results = flat(os.path.join(REPO, "README.md")), flat(os.path.join(REPO, "docs", "results.md"))
    verdict = {(row["method"], row["reference"]): row for row in rows(str(out / "verdict.csv"))}
    assert set(verdict) == {("prac", "imp"), ("random", "imp"), ("random", "prac")}
    for row in verdict.values():
        assert row["metric"] == "retrained" and row["paired"] == "True" and row["n"] == "3"
        low, high = signed(float(row["ci95_low"])), signed(float(row["ci95_high"]))
        line = f"{signed(float(row['difference_mean']))} points (95% CI {low} to {high})"
        assert line.replace("+", "", 1) in results or line in results, line
        if row["method"] == "prac":  # the README's one-paragraph result quotes PrAC vs IMP
            assert line.replace("+", "", 1) in readme or line in readme, line
    aggregate = {(row["method"], row["round"]): row for row in rows(str(out / "aggregate.csv"))}
    for method, label in (("imp", "IMP"), ("prac", "PrAC"), ("random", "random subset")):
        final = aggregate[(method, "3")]
        cell = f"{float(final['retrained_acc_mean']):.2f} ± {float(final['retrained_acc_std']):.2f}"
        assert f"| {label} | {cell} |" in results, cell
