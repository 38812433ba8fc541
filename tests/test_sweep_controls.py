"""sweep.py --controls and the size-matched random (issue 17): the plan (jobs, their order
and flags) without running anything, and one tiny sweep end to end."""
import csv
import json
import os
import subprocess
import sys
from typing import Any, Dict, List

import numpy as np
import pytest

import sweep
from tests import conftest, datasets_on_disk
from tests.conftest import REPO
from utils import UserError

IMAGES = 200  # 180 train + 20 validation


@pytest.fixture(scope="module")
def flags(tmp_path_factory: pytest.TempPathFactory) -> List[str]:
    """Script flags of a tiny Fashion-MNIST sweep: 3 rounds of 2 epochs."""
    root = tmp_path_factory.mktemp("controls_inputs")
    data = datasets_on_disk.write_fashion_mnist(str(root / "fashion"), IMAGES, 60)
    split = str(root / "split.npy")
    np.save(split, np.random.default_rng(5).permutation(IMAGES))
    return ["--data", data, "--dataset", "fashionmnist", "--split_file", split, "--arch", "res20s",
            "--epochs", "2", "--decreasing_lr", "1", "--pruning_times", "3", "--lr", "0.1", "--batch_size", "64",
            "--no_progress", "--print_freq", "1000", "--device", conftest.DEVICE]


def run_sweep(args: List[str], flags: List[str]) -> subprocess.CompletedProcess:
    environment = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, os.path.join(REPO, "sweep.py"), *args, "--", *flags],
                          capture_output=True, text=True, cwd=REPO, env=environment, timeout=900)


def plan(methods: List[str], controls: List[str], retrain: str = "final", pruning_times: int = 3) -> List[sweep.Job]:
    planned = sweep.Sweep("/s", methods, [0, 1], ["--epochs", "1", "--lr", "0.1"], retrain, controls=controls)
    return sweep.plan_jobs(planned, pruning_times)


def value(argv: List[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_random_runs_after_the_prac_run_of_its_seed_and_reads_its_sizes() -> None:
    jobs = {job.name: job for job in plan(["random", "prac"], [])}
    for seed in (0, 1):
        random_job = jobs[f"random-seed{seed}"]
        assert random_job.after == f"prac-seed{seed}"
        assert value(random_job.argv, "--match_sizes") == os.path.join("/s", "runs", f"prac-seed{seed}")
        assert value(random_job.argv, "--select") == "random"
        assert jobs[f"prac-seed{seed}"].after is None and "--match_sizes" not in jobs[f"prac-seed{seed}"].argv
    with pytest.raises(UserError, match="add prac to --methods"):
        plan(["imp", "random"], [])


def test_controls_are_planned_beside_every_retrained_ticket() -> None:
    jobs = plan(["imp", "prac"], ["reinit", "random_mask"], retrain="all")
    names = [job.name for job in jobs]
    for method in ("imp", "prac"):
        for seed in (0, 1):
            for ticket in ("1", "2", "final"):
                run = f"{method}-seed{seed}"
                ticket_file = os.path.join("/s", "runs", run, "final_ticket.pth.tar" if ticket == "final"
                                           else f"{ticket}checkpoint.pth.tar")
                by_name = {job.name: job for job in jobs}
                ticket_job = by_name[f"{run}-retrain-{ticket}"]
                reinit = by_name[f"{run}-reinit-{ticket}"]
                random_mask = by_name[f"{run}-random_mask-{ticket}"]
                assert value(ticket_job.argv, "--init_dir") == ticket_file == value(ticket_job.argv, "--mask_dir")
                assert value(reinit.argv, "--mask_dir") == ticket_file and "--init_dir" not in reinit.argv
                assert "--random_mask" not in reinit.argv
                assert value(random_mask.argv, "--init_dir") == ticket_file == value(random_mask.argv, "--mask_dir")
                assert "--random_mask" in random_mask.argv
                for job in (reinit, random_mask):
                    assert job.script == "main_train.py" and job.after == run and job.needs_file == ticket_file
                    assert value(job.argv, "--seed") == str(seed)
                    assert names.index(job.name) > names.index(run)
                assert value(reinit.argv, "--save_dir") == os.path.join("/s", "retrain", f"{run}-{ticket}-reinit")
    assert len(jobs) == 2 * 2 * (1 + 3 * 3)
    assert len(plan(["imp"], [])) == 2 * 2  # no controls: as before


@pytest.mark.parametrize("text, message", [("reinit,bogus", "unknown control 'bogus'"),
                                           ("reinit,reinit", "names something twice")])
def test_bad_controls_are_one_line(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        sweep.parse_controls(text)


def test_controls_need_retraining() -> None:
    with pytest.raises(UserError, match="need --retrain final or all"):
        plan(["imp"], ["reinit"], retrain="none")


def test_sweep_flags_the_sweep_owns_are_refused() -> None:
    for flag in ("--match_sizes", "--random_mask"):
        with pytest.raises(UserError, match=f"{flag} is set by the sweep"):
            sweep.check_flags(["prac"], [flag, "x"] if flag == "--match_sizes" else [flag])


def read(folder: str) -> Dict[str, Any]:
    with open(os.path.join(folder, "args.json")) as handle:
        return json.load(handle)


@pytest.mark.full
def test_a_tiny_sweep_runs_size_matched_random_and_the_controls(flags: List[str], tmp_path: Any) -> None:
    out = str(tmp_path / "controls")
    result = run_sweep(["--methods", "random,prac", "--seeds", "0", "--out", out, "--jobs", "2",
                        "--controls", "reinit,random_mask"], flags)
    assert result.returncode == 0, result.stdout + result.stderr
    runs = os.path.join(out, "runs")
    split = np.load(value(flags, "--split_file"))
    validation = set(split[int(0.9 * split.size):].tolist())
    for k in range(3):  # round by round the PrAC run's size, never a validation example
        prac_set = np.load(os.path.join(runs, "prac-seed0", f"{k}prac_set.npy"))
        random_set = np.load(os.path.join(runs, "random-seed0", f"{k}prac_set.npy"))
        assert random_set.size == prac_set.size and not set(random_set.tolist()) & validation, k
    for method in ("prac", "random"):
        ticket = os.path.join(runs, f"{method}-seed0", "final_ticket.pth.tar")
        records = {control: read(os.path.join(out, "retrain", f"{method}-seed0-final{suffix}"))["ticket"]
                   for control, suffix in (("ticket", ""), ("reinit", "-reinit"), ("random_mask", "-random_mask"))}
        assert (records["ticket"]["reinit"], records["ticket"]["random_mask"]) == (False, False)
        assert (records["reinit"]["reinit"], records["reinit"]["random_mask"]) == (True, False)
        assert (records["random_mask"]["reinit"], records["random_mask"]["random_mask"]) == (False, True)
        assert all(r["mask_dir"] == ticket for r in records.values())
        for suffix in ("", "-reinit", "-random_mask"):
            assert os.path.exists(os.path.join(out, "retrain", f"{method}-seed0-final{suffix}", "layers.csv"))
    # the sweep's report puts each ticket beside its controls (report.py reads the ticket records)
    with open(os.path.join(out, "report", "controls.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows, result.stdout[-3000:]
