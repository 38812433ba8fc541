"""sweep.py: methods x seeds as the scripts' own commands, retraining, relaunch and resume.

One small sweep (imp, prac x 2 seeds, final tickets retrained, two runs at a time)
is made once; the tests read its folder. Runs are subprocesses with one thread each.
"""
import json
import os
from typing import Any, Dict, List

import pytest

from checkpoint import load_checkpoint
from tests import conftest
from tests.helpers import (
    GRID_VALUES,
    arguments,
    assert_grid_reported,
    assert_same_run,
    run_in_process,
    run_sweep,
    sweep_status,
    tiny_sweep_inputs,
)

METHODS = ["imp", "prac"]  # random, size-matched to prac, is swept in test_sweep_controls.py
SEEDS = [0, 1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    return tiny_sweep_inputs(tmp_path_factory.mktemp("sweep_inputs"), conftest.DEVICE)


@pytest.fixture(scope="module")
def sweep(inputs: Dict[str, Any]) -> Dict[str, Any]:
    out = str(inputs["root"] / "sweep")
    result = run_sweep(["--methods", ",".join(METHODS), "--seeds", ",".join(map(str, SEEDS)), "--out", out,
                        "--jobs", "2", "--no_report"], inputs["flags"])
    assert result.returncode == 0, result.stdout + result.stderr
    return {"out": out, "stdout": result.stdout, "flags": inputs["flags"]}


def test_every_method_and_seed_runs_as_the_scripts_own_command(sweep: Dict[str, Any]) -> None:
    for method in METHODS:
        for seed in SEEDS:
            name = f"{method}-seed{seed}"
            info = arguments(os.path.join(sweep["out"], "runs", name))
            expected_script = "main_imp.py" if method == "imp" else "main_PrAC_imp.py"
            assert os.path.basename(info["script"]) == expected_script
            assert info["arguments"]["seed"] == seed
            if method != "imp":
                assert info["arguments"]["select"] == method
            with open(os.path.join(sweep["out"], "logs", f"{name}.log")) as handle:
                first = handle.readline()
            assert first.startswith("$ ") and expected_script in first and f"--seed {seed}" in first
            assert os.path.exists(os.path.join(sweep["out"], "runs", name, "final_ticket.pth.tar"))


def test_final_tickets_are_retrained_from_their_run(sweep: Dict[str, Any]) -> None:
    for method in METHODS:
        for seed in SEEDS:
            retrain_dir = os.path.join(sweep["out"], "retrain", f"{method}-seed{seed}-final")
            info = arguments(retrain_dir)
            ticket = os.path.join(sweep["out"], "runs", f"{method}-seed{seed}", "final_ticket.pth.tar")
            assert info["arguments"]["init_dir"] == ticket == info["arguments"]["mask_dir"]
            assert info["arguments"]["seed"] == seed
            # main_train.py got only its own flags (a search flag would have made it exit 2)
            assert "pruning_times" not in info["arguments"] or info["arguments"]["pruning_times"] == 16
            assert os.path.exists(os.path.join(retrain_dir, "rounds.csv")) or \
                os.path.exists(os.path.join(retrain_dir, "epochs.csv"))


def test_the_cores_are_split_among_parallel_runs(sweep: Dict[str, Any]) -> None:
    threads = arguments(os.path.join(sweep["out"], "runs", "imp-seed0"))["threads"]
    assert threads == max(1, (os.cpu_count() or 1) // 2)


def test_relaunch_skips_finished_runs(sweep: Dict[str, Any]) -> None:
    log = os.path.join(sweep["out"], "logs", "prac-seed1.log")
    before = os.path.getsize(log)
    result = run_sweep(["--methods", ",".join(METHODS), "--seeds", ",".join(map(str, SEEDS)), "--out", sweep["out"],
                        "--no_report"], sweep["flags"])
    assert result.returncode == 0, result.stderr
    runs = 2 * len(METHODS) * len(SEEDS)  # each search and its retrained final ticket
    assert f"{runs} of {runs} runs already finished" in result.stdout
    assert os.path.getsize(log) == before


def test_relaunch_with_other_flags_is_refused(sweep: Dict[str, Any]) -> None:
    flags = [*sweep["flags"], "--momentum", "0.5"]
    result = run_sweep(["--methods", "imp", "--seeds", "0", "--out", sweep["out"], "--no_report"], flags)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "holds a sweep with other flags" in result.stderr


@pytest.mark.full
def test_a_run_killed_mid_sweep_is_resumed_by_relaunching(inputs: Dict[str, Any], sweep: Dict[str, Any]) -> None:
    """The search dies after its 4th write; relaunching resumes it from its checkpoint and
    ends exactly as in the uninterrupted sweep."""
    out = str(inputs["root"] / "killed")
    # --jobs 2 as in the reference sweep: the thread count per run follows --jobs, and a
    # seeded run is identical only with the same thread count.
    args = ["--methods", "prac", "--seeds", "1", "--out", out, "--jobs", "2", "--no_report"]
    killed = run_sweep(args, inputs["flags"], env={"PRAC_LTH_DIE_AFTER_WRITE": "4"})
    assert killed.returncode == 2
    assert "prac-seed1: exit code 17" in killed.stderr and "prac-seed1-retrain-final: not run" in killed.stderr
    rows = sweep_status(out)
    log = os.path.join(out, "logs", "prac-seed1.log")
    assert rows["prac-seed1"] == ["failed", f"exit code 17; log {log}"]
    assert rows["prac-seed1-retrain-final"] == ["not started", ""]
    resumed = run_sweep(args, inputs["flags"])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "start prac-seed1 (resuming)" in resumed.stdout
    assert_same_run(os.path.join(sweep["out"], "runs", "prac-seed1"), os.path.join(out, "runs", "prac-seed1"))
    reference = load_checkpoint(os.path.join(sweep["out"], "retrain", "prac-seed1-final", "checkpoint.pth.tar"))
    again = load_checkpoint(os.path.join(out, "retrain", "prac-seed1-final", "checkpoint.pth.tar"))
    for key, value in reference["state_dict"].items():
        assert (value == again["state_dict"][key]).all(), key


@pytest.mark.parametrize("args, flags, message", [
    (["--methods", "imp,bogus"], [], "unknown method 'bogus'"),
    (["--methods", "imp,imp"], [], "names something twice"),
    (["--seeds", "0,x"], [], "must be comma-separated integers"),
    (["--jobs", "0"], [], "--jobs 0 must be at least 1"),
    ([], ["--seed", "3"], "--seed is set by the sweep"),
    ([], ["--save_dir", "x"], "--save_dir is set by the sweep"),
    ([], ["--no_such_flag", "1"], "--no_such_flag is not a flag of"),
    (["--methods", "imp,prac"], ["--epochs", "2"], "give --lr after --"),
    (["--methods", "prac"], ["--lr", "fast"], "main_PrAC_imp.py: argument --lr: invalid float value"),
])
def test_bad_sweep_inputs_get_one_line(tmp_path: Any, args: List[str], flags: List[str], message: str) -> None:
    result = run_sweep(["--out", str(tmp_path / "sweep"), *args], flags)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not os.path.exists(tmp_path / "sweep" / "runs")


@pytest.mark.parametrize("args, flags, message", [
    (["--grid", "lr"], [], "write FLAG=V1,V2"),
    (["--grid", "seed=1,2"], [], "--seed is set by the sweep"),
    (["--grid", "lr=0.1"], ["--lr", "0.1"], "--lr is also given after --"),
    (["--grid", "lr=0.1,0.1"], [], "give distinct comma-separated values"),
    (["--methods", "prac", "--grid", "lr=0.1;fast"], [], "main_PrAC_imp.py: argument --lr: invalid float value"),
    (["--grid", "lr=0.1", "--grid", "lr=0.2"], [], "--grid names --lr twice"),
    (["--grid", "save_model=1,2"], [], "--save_model is an on/off switch"),
    (["--grid", "no_such_flag=1,2"], [], "--no_such_flag is not a flag of"),
    (["--methods", "prac", "--grid", "lr=0.1,fast"], [], "main_PrAC_imp.py: argument --lr: invalid float value"),
    (["--methods", "imp,prac", "--grid", "momentum=0.9,0.5"], [], "give --lr after --"),
    (["--partition", "gpu"], [], "--partition is an option of --launcher slurm"),
    (["--wait"], [], "--wait is an option of --launcher slurm"),
    (["--launcher", "slurm", "--jobs", "2"], [], "--jobs is an option of --launcher local"),
    (["--launcher", "slurm", "--nproc_per_node", "2", "--cpus_per_run", "1"], [], "--cpus_per_run 1 must be at least"),
    (["--launcher", "slurm", "--gpus_per_run", "-1"], [], "--gpus_per_run -1 must be 0 or more"),
])
def test_bad_grid_and_launcher_inputs_get_one_line(tmp_path: Any, args: List[str], flags: List[str],
                                                    message: str) -> None:
    result = run_in_process("sweep.py", ["--out", str(tmp_path / "sweep"), *args, "--", *flags])
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not os.path.exists(tmp_path / "sweep")


@pytest.mark.parametrize("args, message", [
    (["--status", "."], "--status .: no sweep there (no sweep.json)"),
    (["--methods", "imp"], "give --out DIR"),
])
def test_status_without_a_sweep_and_a_sweep_without_out_are_one_line(args: List[str], message: str) -> None:
    result = run_in_process("sweep.py", args)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_a_grid_with_commas_in_its_values_is_planned_per_value(tmp_path: Any) -> None:
    result = run_in_process("sweep.py", ["--methods", "prac", "--seeds", "0", "--out", str(tmp_path), "--dry_run",
                                         "--retrain", "none", "--grid", "decreasing_lr=1,2;3", "--grid", "lr=0.1,0.05"])
    assert result.returncode == 0, result.stderr
    commands = result.stdout.splitlines()
    assert len(commands) == 4
    assert "--decreasing_lr 1,2 --lr 0.05 " in commands[1]
    assert f"{tmp_path}/decreasing_lr=1,2,lr=0.05/runs" in commands[1]
    assert "--decreasing_lr 3 --lr 0.1 " in commands[2]


def test_a_relaunch_with_another_grid_is_refused(tmp_path: Any) -> None:
    with open(tmp_path / "sweep.json", "w") as handle:
        json.dump({"methods": ["prac"], "seeds": [0], "flags": [], "retrain": "none",
                   "grid": [["--lr", ["0.1", "0.05"]]]}, handle)
    result = run_in_process("sweep.py", ["--methods", "prac", "--seeds", "0", "--out", str(tmp_path),
                                         "--retrain", "none", "--grid", "lr=0.1"])
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "holds a sweep with other flags (, --retrain none --grid lr=0.1,0.05)" in result.stderr, result.stderr


def test_status_shows_every_run_done(sweep: Dict[str, Any]) -> None:
    rows = sweep_status(sweep["out"])
    assert len(rows) == 2 * len(METHODS) * len(SEEDS) and all(state == "done" for state, _ in rows.values()), rows


@pytest.mark.full
def test_runs_go_through_torchrun_with_nproc_per_node(inputs: Dict[str, Any]) -> None:
    """--nproc_per_node 2: each run is a 2-process torchrun job (gloo, one thread each)."""
    out = str(inputs["root"] / "torchrun")
    # --device cpu: gloo; the last --device wins
    result = run_sweep(["--methods", "prac", "--seeds", "0", "--out", out, "--nproc_per_node", "2",
                        "--retrain", "none", "--no_report"], [*inputs["flags"], "--device", "cpu"])
    assert result.returncode == 0, result.stdout + result.stderr
    info = arguments(os.path.join(out, "runs", "prac-seed0"))
    assert info["world_size"] == 2 and info["threads"] == max(1, (os.cpu_count() or 1) // 2)
    with open(os.path.join(out, "logs", "prac-seed0.log")) as handle:
        assert "torch.distributed.run --standalone --nproc_per_node 2" in handle.readline()


@pytest.mark.full
def test_a_grid_runs_each_setting_in_its_folder_and_reports_them_apart(inputs: Dict[str, Any]) -> None:
    """--grid weight_decay=A,B: two setting folders, each with its runs, setting.json and its
    own report (report.py groups by method within the folder), so the settings are two groups."""
    out = str(inputs["root"] / "grid")
    result = run_sweep(["--methods", "imp,prac", "--seeds", "0", "--out", out, "--retrain", "none", "--jobs", "2",
                        "--grid", f"weight_decay={','.join(GRID_VALUES)}"], inputs["flags"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert_grid_reported(out, inputs["flags"])
    rows = sweep_status(out)
    assert sorted(rows) == sorted(f"weight_decay={value}/{method}-seed0" for value in GRID_VALUES
                                  for method in ["imp", "prac"])
    assert all(state == "done" for state, _ in rows.values())
