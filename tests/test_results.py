"""The replicated results quoted in docs/results.md and the README are what report.py computes
from the committed tables: the verdict, the per-method tickets, the controls and (for the
converged study) every round's final training accuracy."""
import os
import re
import subprocess
import sys
from typing import Any, Dict

import pytest

from tests.conftest import REPO
from tests.helpers import read_csv as rows

SHORT_ROUNDS = "fashion-mnist-sweep-2026-11-30"
CONVERGED = "fashion-mnist-converged-2026-12-02"
# Per result: the final ticket's round, the methods' labels in docs/results.md, and the random method.
RESULTS: Dict[str, Dict[str, Any]] = {
    SHORT_ROUNDS: {"final": "3", "random": "random",
                   "labels": {"imp": "IMP", "prac": "PrAC", "random": "random subset"}},
    CONVERGED: {"final": "4", "random": "random (size-matched)",
                "labels": {"imp": "IMP", "prac": "PrAC", "random (size-matched)": "random (size-matched)"}},
}


def flat(path: str) -> str:
    with open(path) as handle:
        return re.sub(r"\s+", " ", handle.read())


def signed(value: float) -> str:
    return f"{value:+.2f}".replace("-", "−")


def interval_text(mean: str, low: str, high: str) -> str:
    return f"{signed(float(mean))} points (95% CI {signed(float(low))} to {signed(float(high))})"


def quoted(line: str, text: str) -> bool:
    """A positive difference may be written with or without its plus sign."""
    return line in text or line.replace("+", "", 1) in text


@pytest.fixture(scope="module", params=sorted(RESULTS))
def result(request: Any, tmp_path_factory: Any) -> Dict[str, Any]:
    name = request.param
    out = tmp_path_factory.mktemp("report") / name
    done = subprocess.run([sys.executable, os.path.join(REPO, "report.py"), os.path.join(REPO, "results", name),
                           "--out", str(out)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    return {"name": name, "out": str(out), **RESULTS[name]}


def test_verdict_in_docs_and_readme_is_recomputed_from_results(result: Dict[str, Any]) -> None:
    readme, results = flat(os.path.join(REPO, "README.md")), flat(os.path.join(REPO, "docs", "results.md"))
    verdict = {(row["method"], row["reference"]): row for row in rows(os.path.join(result["out"], "verdict.csv"))}
    random = result["random"]
    assert set(verdict) == {("prac", "imp"), (random, "imp"), (random, "prac")}
    for row in verdict.values():
        assert row["metric"] == "retrained" and row["paired"] == "True" and row["n"] == "3"
        assert row["round"] == result["final"]
        line = interval_text(row["difference_mean"], row["ci95_low"], row["ci95_high"])
        assert quoted(line, results), line
        if row["method"] == "prac":  # the README's one-paragraph result quotes PrAC vs IMP
            assert quoted(line, readme), line
        number = re.escape(line.split(" points")[0]).replace(r"\+", r"\+?")
        reference = "IMP" if row["reference"] == "imp" else "PrAC"
        cost = rf"{number} points.{{0,40}} for {float(row['steps_percent_mean']):.0f}%( ± \d+%)? of {reference}'s"
        assert re.search(cost, results), cost
    aggregate = {(row["method"], row["round"]): row for row in rows(os.path.join(result["out"], "aggregate.csv"))}
    for method, label in result["labels"].items():
        final = aggregate[(method, result["final"])]
        cell = f"{float(final['retrained_acc_mean']):.2f} ± {float(final['retrained_acc_std']):.2f}"
        assert f"| {label} | {cell} |" in results, cell


def test_converged_study_controls_and_training_accuracies_are_the_committed_runs(tmp_path: Any) -> None:
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, os.path.join(REPO, "report.py"), os.path.join(REPO, "results", CONVERGED),
                           "--out", str(out)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    readme, results = flat(os.path.join(REPO, "README.md")), flat(os.path.join(REPO, "docs", "results.md"))
    labels = RESULTS[CONVERGED]["labels"]
    controls = {row["method"]: row for row in rows(str(out / "controls.csv"))}
    assert set(controls) == set(labels)
    for method, row in controls.items():
        assert (row["ticket_n"], row["reinit_n"], row["random_mask_n"]) == ("3", "3", "3")
        assert row["ticket_minus_reinit_paired"] == row["ticket_minus_random_mask_paired"] == "True"
        line = interval_text(row["ticket_minus_reinit_mean"], row["ticket_minus_reinit_ci95_low"],
                             row["ticket_minus_reinit_ci95_high"])
        assert quoted(line, results), (method, line)
        line = interval_text(row["ticket_minus_random_mask_mean"], row["ticket_minus_random_mask_ci95_low"],
                             row["ticket_minus_random_mask_ci95_high"])
        assert quoted(line, results), (method, line)
        cells = " | ".join(f"{float(row[f'{arm}_mean']):.2f} ± {float(row[f'{arm}_std']):.2f}"
                           for arm in ("ticket", "reinit", "random_mask"))
        assert f"| {labels[method]} | {cells} |" in results, cells
    # Every round's final training accuracy, per method and seed, as docs/results.md tabulates it.
    replicates = rows(str(out / "runs.csv"))
    for method, label in labels.items():
        for seed in ("0", "1", "2"):
            by_round = {row["round"]: row for row in replicates if row["method"] == method and row["seed"] == seed}
            cells = [f"{float(by_round[k]['search_train_acc']):.1f}" for k in "0123"]
            cells += [f"{float(by_round['4'][name]):.1f}" for name in ("retrained_train_acc", "reinit_train_acc",
                                                                    "random_mask_train_acc")]
            assert f"| {label} | {seed} | {' | '.join(cells)} |" in results, (method, seed, cells)
    low = min(float(r["search_train_acc"]) for r in replicates if r["round"] == "0")
    high = max(float(r["search_train_acc"]) for r in replicates if r["round"] == "0")
    assert f"dense round at {low:.1f}–{high:.1f}%" in readme and f"ended at {low:.1f}–{high:.1f}%" in results
