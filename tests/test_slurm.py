"""sweep.py --launcher slurm against a real SLURM scheduler (``bash .ci/slurm.sh start`` starts a
single-node one; CI's .ci/run does). Skipped, with the reason printed, when ``sinfo`` gets no answer.

The reference is the same tiny sweep run by the local launcher with one thread per run; each
SLURM job gets one CPU, hence one thread, so the two must agree bit for bit.
"""
import json
import os
import subprocess
import time
from typing import Any, Dict, List

import pytest

from checkpoint import load_checkpoint
from tests import conftest
from tests.helpers import (
    GRID_VALUES,
    assert_grid_reported,
    assert_same_run,
    assert_same_table,
    run_sweep,
    sweep_status,
    tiny_sweep_inputs,
)

pytestmark = pytest.mark.slurm

METHODS = ["imp", "prac"]
SEEDS = [0, 1]
SWEEP_ARGS = ["--methods", ",".join(METHODS), "--seeds", ",".join(map(str, SEEDS))]
# As many local runs at once as cores: one thread each whatever the machine, as each SLURM job
# (1 CPU) gets; a seeded run is identical only with the same thread count.
LOCAL_JOBS = max(2, os.cpu_count() or 1)
# Report files whose content does not name a folder (report.md and runs.csv name the runs' paths).
REPORT_TABLES = ["aggregate.csv", "verdict.csv"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    return tiny_sweep_inputs(tmp_path_factory.mktemp("slurm_inputs"), conftest.DEVICE)


@pytest.fixture(scope="module")
def local_sweep(inputs: Dict[str, Any]) -> str:
    """The reference: 2 methods x 2 seeds, one thread each."""
    out = str(inputs["root"] / "local")
    result = run_sweep([*SWEEP_ARGS, "--out", out, "--jobs", str(LOCAL_JOBS)], inputs["flags"])
    assert result.returncode == 0, result.stdout + result.stderr
    return out


@pytest.fixture(scope="module")
def slurm_sweep(inputs: Dict[str, Any]) -> Dict[str, Any]:
    out = str(inputs["root"] / "slurm")
    started = time.time()
    result = run_sweep([*SWEEP_ARGS, "--out", out, "--launcher", "slurm", "--wait", "--time", "30:00",
                        "--mem", "2G"], inputs["flags"])
    assert result.returncode == 0, result.stdout + result.stderr
    return {"out": out, "stdout": result.stdout, "flags": inputs["flags"], "seconds": time.time() - started}


def run_names(out: str) -> List[str]:
    return [f"{method}-seed{seed}" for method in METHODS for seed in SEEDS]


def job_id(out: str, name: str) -> str:
    with open(os.path.join(out, "jobs", f"{name}.json")) as handle:
        return str(json.load(handle)["job_id"])


def queue(job_ids: List[str]) -> Dict[str, str]:
    """squeue's state of each of these jobs that it still lists."""
    result = subprocess.run(["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", "%i %T"],
                            capture_output=True, text=True)
    return dict(line.split() for line in result.stdout.splitlines() if line.strip())


def wait_for(condition: Any, seconds: float, what: str) -> None:
    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.2)


def assert_same_retraining(dir_a: str, dir_b: str) -> None:
    a = load_checkpoint(os.path.join(dir_a, "checkpoint.pth.tar"))
    b = load_checkpoint(os.path.join(dir_b, "checkpoint.pth.tar"))
    for key, value in a["state_dict"].items():
        assert (value == b["state_dict"][key]).all(), key
    assert a["result"] == b["result"]
    assert_same_table(os.path.join(dir_a, "epochs.csv"), os.path.join(dir_b, "epochs.csv"))


@pytest.mark.full
def test_a_sweep_through_slurm_equals_the_local_one(local_sweep: str, slurm_sweep: Dict[str, Any]) -> None:
    """Every run is a SLURM job running the script's own command; the runs, the retrained
    tickets and the report's tables equal those of the local launcher."""
    out = slurm_sweep["out"]
    assert "8 runs submitted, 0 already queued or running, 0 finished" in slurm_sweep["stdout"]
    for name in run_names(out):
        assert_same_run(os.path.join(local_sweep, "runs", name), os.path.join(out, "runs", name))
        assert_same_retraining(os.path.join(local_sweep, "retrain", f"{name}-final"),
                               os.path.join(out, "retrain", f"{name}-final"))
        with open(os.path.join(out, "logs", f"{name}.log")) as handle:
            command, job = handle.readline(), handle.readline()
        assert command.startswith("$ ") and f"--save_dir {os.path.join(out, 'runs', name)}" in command
        assert job.startswith(f"# slurm job {job_id(out, name)} on ")
        for folder in (local_sweep, out):
            with open(os.path.join(folder, "runs", name, "args.json")) as handle:
                assert json.load(handle)["threads"] == 1
    for table in REPORT_TABLES:
        with open(os.path.join(local_sweep, "report", table)) as a, open(os.path.join(out, "report", table)) as b:
            assert a.read() == b.read(), table


@pytest.mark.full
def test_status_lists_every_slurm_run_done(slurm_sweep: Dict[str, Any], local_sweep: str) -> None:
    for out in (slurm_sweep["out"], local_sweep):
        rows = sweep_status(out)
        assert len(rows) == 8 and all(state == "done" for state, _ in rows.values()), rows
    # a relaunch of the finished sweep submits nothing and writes the report again
    os.remove(os.path.join(slurm_sweep["out"], "report", "aggregate.csv"))
    again = run_sweep([*SWEEP_ARGS, "--out", slurm_sweep["out"], "--launcher", "slurm"], slurm_sweep["flags"])
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 runs submitted, 0 already queued or running, 8 finished" in again.stdout
    assert os.path.exists(os.path.join(slurm_sweep["out"], "report", "aggregate.csv"))


@pytest.mark.full
def test_a_scancelled_job_is_finished_by_the_relaunch_exactly(inputs: Dict[str, Any], local_sweep: str) -> None:
    """scancel the search mid-run (after its first checkpoint): its retraining leaves the queue
    with it, --status shows both failed with the log, and relaunching resubmits both; the
    search resumes from its newest checkpoint and ends as the uninterrupted run did."""
    out = str(inputs["root"] / "scancelled")
    args = ["--methods", "prac", "--seeds", "1", "--out", out, "--launcher", "slurm"]
    first = run_sweep(args, inputs["flags"])
    assert first.returncode == 0, first.stdout + first.stderr
    assert "2 runs submitted" in first.stdout and "sweep.py --status" in first.stdout
    search, retrain = job_id(out, "prac-seed1"), job_id(out, "prac-seed1-retrain-final")
    checkpoint = os.path.join(out, "runs", "prac-seed1", "0checkpoint.pth.tar")
    wait_for(lambda: os.path.exists(checkpoint), 300, f"{checkpoint} written")
    subprocess.run(["scancel", search], check=True)
    wait_for(lambda: queue([search, retrain]).get(search) == "CANCELLED"
             and queue([search, retrain]).get(retrain) == "CANCELLED", 120, "both jobs cancelled")
    assert not os.path.exists(os.path.join(out, "runs", "prac-seed1", "final_ticket.pth.tar"))  # killed mid-run
    rows = sweep_status(out)
    log = os.path.join(out, "logs", "prac-seed1.log")
    assert rows["prac-seed1"][0] == "failed" and rows["prac-seed1"][1].endswith(f"; log {log}"), rows
    assert f"slurm job {search}" in rows["prac-seed1"][1]
    assert rows["prac-seed1-retrain-final"][0] == "failed"

    again = run_sweep([*args, "--wait"], inputs["flags"])
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resubmit prac-seed1 (it failed: " in again.stdout and "2 runs submitted" in again.stdout
    with open(log) as handle:
        attempts = [line for line in handle if line.startswith("$ ")]
    assert len(attempts) == 2 and not attempts[0].rstrip().endswith("--resume")
    assert attempts[1].rstrip().endswith("--resume")
    assert_same_run(os.path.join(local_sweep, "runs", "prac-seed1"), os.path.join(out, "runs", "prac-seed1"))
    assert_same_retraining(os.path.join(local_sweep, "retrain", "prac-seed1-final"),
                           os.path.join(out, "retrain", "prac-seed1-final"))


def test_a_relaunch_while_jobs_are_queued_submits_nothing_twice(tmp_path: Any) -> None:
    """Held jobs (--sbatch=--hold) stay queued; the relaunch finds them and submits nothing.
    No training runs: the jobs are cancelled while held."""
    out = str(tmp_path / "held")
    args = ["--methods", "imp,prac", "--seeds", "0", "--out", out, "--launcher", "slurm", "--sbatch=--hold",
            "--sbatch", "comment=prac-lth-test", "--time", "10:00", "--mem", "500M"]
    flags = ["--lr", "0.1", "--epochs", "1", "--data", str(tmp_path / "no_data")]
    names = ["imp-seed0", "imp-seed0-retrain-final", "prac-seed0", "prac-seed0-retrain-final"]
    first = run_sweep(args, flags)
    assert first.returncode == 0, first.stdout + first.stderr
    ids = [job_id(out, name) for name in names]
    try:
        assert "4 runs submitted, 0 already queued or running" in first.stdout
        with open(os.path.join(out, "jobs", "prac-seed0-retrain-final.sbatch")) as handle:
            script = handle.read()
        for line in ["#SBATCH --hold", "#SBATCH --comment=prac-lth-test", "#SBATCH --time=10:00",
                     "#SBATCH --mem=500M", "#SBATCH --cpus-per-task=1"]:
            assert line + "\n" in script
        assert f"after {ids[2]}" in first.stdout  # the retraining waits for its search
        again = run_sweep(args, flags)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "0 runs submitted, 4 already queued or running, 0 finished" in again.stdout
        assert [job_id(out, name) for name in names] == ids
        assert set(queue(ids).values()) == {"PENDING"}
        rows = sweep_status(out)
        assert [rows[name][0] for name in names] == ["queued"] * 4
        assert rows["prac-seed0"][1] == f"slurm job {ids[2]} (JobHeldUser)"
    finally:
        subprocess.run(["scancel", *ids])


def test_sbatch_refusing_a_job_is_one_line(tmp_path: Any) -> None:
    result = run_sweep(["--methods", "prac", "--seeds", "0", "--out", str(tmp_path / "s"), "--launcher", "slurm",
                        "--time", "soon", "--retrain", "none"], ["--epochs", "1"])
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "sbatch refused prac-seed0: " in result.stderr, result.stderr


@pytest.mark.full
def test_a_grid_through_slurm_reports_each_setting_apart(inputs: Dict[str, Any]) -> None:
    out = str(inputs["root"] / "grid")
    result = run_sweep(["--methods", "imp,prac", "--seeds", "0", "--out", out, "--retrain", "none",
                        "--launcher", "slurm", "--wait", "--grid", f"weight_decay={','.join(GRID_VALUES)}"],
                       inputs["flags"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 runs submitted" in result.stdout
    assert_grid_reported(out, inputs["flags"])
    rows = sweep_status(out)
    assert len(rows) == 4 and all(state == "done" for state, _ in rows.values())
