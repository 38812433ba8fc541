"""report.py: what runs record, grouped by whole setting; the verdict, the controls, the files.

Most run folders here are written directly with the project's own writers (save_run_info,
ResultTable, runners._ticket_record): the tests are about the report, not about training.
One module fixture trains real tiny runs end to end."""
import json
import os
import shutil
import struct
import subprocess
import sys
from typing import Any, Dict, Optional, Sequence

import pytest

import main_imp
import main_train
import report
from cli import Config
from paths import RunPaths
from reporting import stats
from reporting.plots import PLOT_ACCURACY, PLOT_ACCURACY_STEPS, PLOT_SET_SIZE
from outputs import EPOCH_FIELDS, ROUND_FIELDS, ResultTable, save_run_info
from runners import _ticket_record
from tests.conftest import REPO, run_script, tiny_args
from tests.helpers import read_csv
from utils import UserError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SCRIPTS = {"imp": "main_imp.py", "train": "main_train.py"}  # any other method: main_PrAC_imp.py --select


def png_size(path: str) -> tuple:
    """(width, height) from the IHDR chunk; fails unless the file is a PNG."""
    with open(path, "rb") as handle:
        head = handle.read(24)
    assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def cli(*args: str) -> subprocess.CompletedProcess:
    return run_script("report.py", list(args))


# ============================================================================ run folders, written directly
DENSITIES = [100.0, 80.0, 64.0]   # rounds 0-2; the final ticket (round 3) is 51.2%
FINAL = 3


def write_run(folder: Any, method: str, rounds: Sequence[Dict[str, Any]], ticket: Optional[Dict[str, Any]] = None,
              **settings: Any) -> str:
    """A finished run of ``method`` (imp, a --select rule, or "train" for main_train.py) in
    ``folder``: args.json and rounds.csv as the scripts write them."""
    folder = str(folder)
    os.makedirs(folder)
    if method not in SCRIPTS:
        settings["select"] = method
    config = Config(**{"save_dir": folder, "lr": 0.1, "epochs": 2, **settings}).to_dict()
    script = SCRIPTS.get(method, "main_PrAC_imp.py")
    save_run_info(RunPaths(folder).run_info, script, config, "cpu", extra={"ticket": ticket} if ticket else None)
    table = ResultTable(RunPaths(folder).rounds_csv, ROUND_FIELDS)
    for row in rounds:
        table.append({"train_examples": 900, "epochs_planned": 2, "epochs_run": 2, "steps": 10,
                      "cumulative_steps": 10, "best_val_acc": 50, "test_acc_at_best_val": 40, **row})
    return folder


def search_run(folder: Any, method: str, seed: int, search_acc: Sequence[float], cumulative: Sequence[int],
               examples: Sequence[int] = (900, 900, 900), **settings: Any) -> str:
    rows = [{"round": k, "remaining_weights": d, "train_examples": n, "steps": c, "cumulative_steps": c,
             "test_acc_at_best_val": acc}
            for k, (d, acc, c, n) in enumerate(zip(DENSITIES, search_acc, cumulative, examples))]
    return write_run(folder, method, rows, seed=seed, pruning_times=3, **settings)


def retrain_run(folder: Any, source: str, test_acc: float, seed: int = 0, round_number: Optional[int] = FINAL,
                control: str = "ticket", density: float = 51.2, **settings: Any) -> str:
    """main_train.py on ``source``'s round ticket: the ticket itself, its reinit (--mask_dir
    alone) or a random mask (the ticket record's random_mask, hand-made until the flag exists)."""
    name = "final_ticket.pth.tar" if round_number == FINAL else f"{round_number}checkpoint.pth.tar"
    path = os.path.join(source, name)
    config = Config(save_dir=str(folder), init_dir=None if control == "reinit" else path, mask_dir=path)
    ticket = _ticket_record(config, round_number)
    if control == "random_mask":
        ticket["random_mask"] = True
    rows = [{"round": 0, "remaining_weights": density, "test_acc_at_best_val": test_acc}]
    return write_run(folder, "train", rows, ticket=ticket, seed=seed, init_dir=config.init_dir,
                     mask_dir=config.mask_dir, **settings)


IMP_STEPS = 100  # per round, every seed


@pytest.fixture
def sweep(tmp_path: Any) -> str:
    """imp and prac with seeds 0-2 and random with seed 0, final tickets retrained.

    Folder names lie: prac's seed-2 run is in runs/imp-seed9 and its retraining in
    retrain/imp-seed9-final; report.py must go by args.json."""
    root = tmp_path / "sweep"
    imp_search = {0: [60, 40, 50], 1: [60, 42, 51], 2: [60, 47, 55]}
    imp_final = {0: 80.0, 1: 82.0, 2: 84.0}
    prac_cumulative = {0: [100, 110, 120], 1: [100, 125, 150], 2: [100, 140, 180]}  # 40%, 50%, 60% of 300
    prac_examples = {0: [900, 300, 300], 1: [900, 350, 330], 2: [900, 250, 270]}
    prac_final = {0: 79.0, 1: 80.0, 2: 84.0}                                        # − imp: −1, −2, 0
    prac_folders = {0: "prac-seed0", 1: "prac-seed1", 2: "imp-seed9"}
    for seed in (0, 1, 2):
        imp = search_run(root / "runs" / f"imp-seed{seed}", "imp", seed, imp_search[seed],
                         [IMP_STEPS * (k + 1) for k in range(3)])
        retrain_run(root / "retrain" / f"imp-seed{seed}-final", imp, imp_final[seed], seed)
        prac = search_run(root / "runs" / prac_folders[seed], "prac", seed, [60, 41, 49],
                          prac_cumulative[seed], prac_examples[seed])
        retrain_run(root / "retrain" / f"{prac_folders[seed]}-final", prac, prac_final[seed], seed)
    random = search_run(root / "runs" / "random-seed0", "random", 0, [60, 39, 45], [100, 130, 160], [900, 300, 300])
    retrain_run(root / "retrain" / "random-seed0-final", random, 77.5)
    started = root / "runs" / "prac-seed3"  # started, no round finished yet
    started.mkdir()
    save_run_info(RunPaths(str(started)).run_info, "main_PrAC_imp.py", Config(save_dir=str(started)).to_dict(), "cpu")
    return str(root)


def aggregate_row(result: Any, method: str, number: int, setting: str = "") -> Dict[str, Any]:
    (row,) = [r for r in result.aggregate if r["method"] == method and r["round"] == number
              and r["setting"] == setting]
    return row


# ============================================================================ the three wrong reports
def test_reinit_run_is_a_control_not_averaged_into_the_ticket(tmp_path: Any, capsys: pytest.CaptureFixture) -> None:
    imp = search_run(tmp_path / "runs" / "imp", "imp", 0, [60, 50, 55], [100, 200, 300])
    retrain_run(tmp_path / "retrain" / "ticket", imp, 80.0)
    retrain_run(tmp_path / "retrain" / "reinit", imp, 60.0, control="reinit")
    out = str(tmp_path / "out")
    report.main([imp, "--retrain", str(tmp_path / "retrain"), "--replicates", "--out", out])
    (final,) = [r for r in read_csv(os.path.join(out, "aggregate.csv")) if r["method"] == "imp" and r["round"] == "3"]
    assert float(final["retrained_acc_mean"]) == 80.0 and final["retrained_acc_n"] == "1"  # not (80 + 60) / 2
    (control,) = read_csv(os.path.join(out, "controls.csv"))
    assert (float(control["ticket_mean"]), float(control["reinit_mean"])) == (80.0, 60.0)
    assert float(control["ticket_minus_reinit_mean"]) == 20.0
    printed = capsys.readouterr().out
    assert "imp: a winning ticket at 51.2% weights (round 3)? ticket − reinit = +20.00 points" in printed


def test_dense_main_train_run_is_labelled_dense_not_prac(tmp_path: Any, capsys: pytest.CaptureFixture) -> None:
    imp = search_run(tmp_path / "imp", "imp", 0, [60, 50, 55], [100, 200, 300])
    dense = write_run(tmp_path / "dense", "train", [{"round": 0, "remaining_weights": 100.0,
                                                     "test_acc_at_best_val": 61.0}],
                      ticket=_ticket_record(Config(save_dir="x"), None), seed=0)
    out = str(tmp_path / "out")
    report.main([imp, dense, "--replicates", "--out", out])
    rows = read_csv(os.path.join(out, "aggregate.csv"))
    assert {r["method"] for r in rows} == {"imp", "dense"}
    (row,) = [r for r in rows if r["method"] == "dense"]
    assert (row["round"], float(row["search_acc_mean"])) == ("0", 61.0)
    assert read_csv(os.path.join(out, "verdict.csv")) == []  # dense is no method to compare with IMP
    assert "- dense: 1 run, seed 0" in capsys.readouterr().out


def test_runs_of_one_seed_with_different_settings_are_never_averaged(tmp_path: Any) -> None:
    imp = search_run(tmp_path / "imp", "imp", 0, [60, 50, 55], [100, 200, 300])
    low = search_run(tmp_path / "prac-t0", "prac", 0, [60, 50, 52], [100, 150, 200], threshold=0)
    high = search_run(tmp_path / "prac-t2", "prac", 0, [60, 60, 62], [100, 120, 140], threshold=2)
    out = str(tmp_path / "out")
    report.main([imp, low, high, "--replicates", "--out", out])
    prac1 = [r for r in read_csv(os.path.join(out, "aggregate.csv")) if r["method"] == "prac" and r["round"] == "1"]
    assert sorted((r["runs"], float(r["search_acc_mean"])) for r in prac1) == [("1", 50.0), ("1", 60.0)]
    assert sorted(r.get("setting") for r in prac1) == ["threshold 0", "threshold 2"]
    verdicts = read_csv(os.path.join(out, "verdict.csv"))  # IMP (no --threshold) is the reference of both
    assert sorted((r["setting"], r["round"], float(r["difference_mean"])) for r in verdicts if r["round"] == "1") == [
        ("threshold 0", "1", 0.0), ("threshold 2", "1", 10.0)]


# ============================================================================ grouping and matching
def test_grid_settings_in_subfolders_are_grouped_by_what_runs_record(tmp_path: Any) -> None:
    for seed in (0, 1):
        search_run(tmp_path / "grid" / "lr" / f"imp-{seed}", "imp", seed, [60, 50, 55], [100, 200, 300])
        for lr, acc in ((0.1, 50), (0.05, 40)):
            search_run(tmp_path / "grid" / f"lr={lr}" / "deep" / f"prac-{seed}", "prac", seed,
                       [60, acc + seed, 55], [100, 150, 200], lr=lr)
    result = report.main([str(tmp_path / "grid"), "--out", str(tmp_path / "out")])
    groups = {part.group.label: part for part in result.groups}
    assert {label: sorted(run.method for run in part.group.runs) for label, part in groups.items()} == {
        "lr 0.05": ["prac", "prac"], "lr 0.1": ["imp", "imp", "prac", "prac"]}
    assert "no imp runs" in groups["lr 0.05"].summaries[0]  # IMP ran at lr 0.1 only: never compared across
    assert aggregate_row(result, "prac", 1, "lr 0.1")["search_acc_mean"] == pytest.approx(50.5)
    assert aggregate_row(result, "prac", 1, "lr 0.05")["search_acc_mean"] == pytest.approx(40.5)
    for name in ("accuracy_vs_weights-1.png", "accuracy_vs_weights-2.png"):
        assert png_size(os.path.join(tmp_path / "out", name))[0] >= 400


def test_a_setting_an_older_run_did_not_record_matches_any_value(tmp_path: Any) -> None:
    old = search_run(tmp_path / "imp-0", "imp", 0, [60, 50, 55], [100, 200, 300])
    search_run(tmp_path / "imp-1", "imp", 1, [60, 52, 57], [100, 200, 300])
    with open(RunPaths(old).run_info) as handle:
        info = json.load(handle)
    del info["arguments"]["data_mode"]  # written before --data_mode existed
    with open(RunPaths(old).run_info, "w") as handle:
        json.dump(info, handle)
    result = report.main([str(tmp_path), "--out", str(tmp_path / "out")])
    (part,) = result.groups
    assert part.group.label == "" and aggregate_row(result, "imp", 1)["runs"] == 2


def test_size_matched_random_is_its_own_method(tmp_path: Any) -> None:
    search_run(tmp_path / "imp", "imp", 0, [60, 50, 55], [100, 200, 300])
    prac = search_run(tmp_path / "prac", "prac", 0, [60, 48, 50], [100, 150, 200])
    search_run(tmp_path / "random", "random", 0, [60, 40, 45], [100, 150, 200])
    matched = search_run(tmp_path / "matched", "random", 0, [60, 44, 47], [100, 150, 200])
    with open(RunPaths(matched).run_info) as handle:
        info = json.load(handle)
    info["arguments"]["match_sizes"] = prac  # issue 17's flag: the PrAC run whose set sizes it copies
    with open(RunPaths(matched).run_info, "w") as handle:
        json.dump(info, handle)
    result = report.main([str(tmp_path), "--out", str(tmp_path / "out")])
    assert [row["runs"] for row in result.aggregate if row["round"] == 1] == [1, 1, 1, 1]
    assert {(rows[0].method, rows[0].reference) for rows in result.verdicts} == {
        ("prac", "imp"), ("random", "imp"), ("random (size-matched)", "imp"), ("random", "prac"),
        ("random (size-matched)", "prac")}


def test_a_longer_retraining_is_its_own_group(tmp_path: Any) -> None:
    imp = search_run(tmp_path / "imp", "imp", 0, [60, 50, 55], [100, 200, 300])
    retrain_run(tmp_path / "short", imp, 70.0)
    retrain_run(tmp_path / "long", imp, 75.0, epochs=30)
    result = report.main([str(tmp_path), "--out", str(tmp_path / "out")])
    labels = ["retrain epochs 2", "retrain epochs 30"]
    assert sorted(part.group.label for part in result.groups) == labels
    assert [aggregate_row(result, "imp", FINAL, label)["retrained_acc_mean"] for label in labels] == [70.0, 75.0]


def test_moved_and_copied_sweeps_match_by_recorded_location(tmp_path: Any) -> None:
    made = tmp_path / "made"
    imp = search_run(made / "runs" / "imp", "imp", 0, [60, 50, 55], [100, 200, 300])
    retrain_run(made / "retrain" / "1", imp, 71.0, round_number=1, density=80.0)
    retrain_run(made / "retrain" / "final", imp, 70.0)
    shutil.copytree(made, tmp_path / "copy")
    shutil.move(str(made), str(tmp_path / "moved"))  # the recorded absolute paths exist nowhere now
    moved = report.main([str(tmp_path / "moved"), "--out", str(tmp_path / "out1")])
    assert moved.notes == []
    assert [r.retrained_acc for r in moved.groups[0].replicates] == [None, 71.0, None, 70.0]
    both = report.main([str(tmp_path / "moved"), str(tmp_path / "copy"), "--out", str(tmp_path / "out2")])
    (part,) = both.groups  # one setting; each copy's retraining runs belong to its own copy
    for retrain in part.group.retrains:
        assert os.path.commonpath([retrain.run.path, retrain.source.path]) in (str(tmp_path / "moved"),
                                                                                str(tmp_path / "copy"))


def test_ticket_round_falls_back_to_density_and_unmatched_runs_are_noted(tmp_path: Any) -> None:
    imp = search_run(tmp_path / "imp", "imp", 0, [60, 50, 55], [100, 200, 300])
    retrain_run(tmp_path / "published", imp, 66.0, round_number=None, density=64.0)  # no round recorded
    retrain_run(tmp_path / "foreign", str(tmp_path / "elsewhere"), 99.0)
    result = report.main([str(tmp_path), "--out", str(tmp_path / "out")])
    assert aggregate_row(result, "imp", 2)["retrained_acc_mean"] == 66.0
    (note,) = result.notes
    assert "foreign" in note and "not among the runs found; left out" in note


def test_run_given_as_retrain_is_refused(tmp_path: Any) -> None:
    imp = search_run(tmp_path / "imp", "imp", 0, [60, 50, 55], [100, 200, 300])
    other = search_run(tmp_path / "other", "imp", 1, [60, 50, 55], [100, 200, 300])
    with pytest.raises(UserError, match="is not a main_train.py run"):
        report.main([imp, "--retrain", other, "--out", str(tmp_path / "out")])


# ============================================================================ replicates and the verdict
def test_replicates_grouped_by_args_json_not_folder_names(sweep: str, tmp_path: Any) -> None:
    result = report.main([sweep, "--out", str(tmp_path / "out")])
    by_method = {m: sorted(run.seed for run in result.runs if run.method == m) for m in ("imp", "prac", "random")}
    assert by_method == {"imp": [0, 1, 2], "prac": [0, 1, 2], "random": [0]}
    (misnamed,) = [run for run in result.runs if os.path.basename(run.path) == "imp-seed9"]
    assert (misnamed.method, misnamed.seed) == ("prac", 2)
    assert any("prac-seed3 has no finished round yet" in note for note in result.notes)


def test_replicates_mean_std_n(sweep: str, tmp_path: Any) -> None:
    result = report.main([sweep, "--out", str(tmp_path / "out")])
    imp1 = aggregate_row(result, "imp", 1)
    assert (imp1["runs"], imp1["search_acc_n"]) == (3, 3)
    assert imp1["search_acc_mean"] == pytest.approx(43.0)                       # (40 + 42 + 47) / 3
    assert imp1["search_acc_std"] == pytest.approx((9 + 1 + 16) ** 0.5 / 2 ** 0.5)  # sqrt(13)
    assert imp1["cumulative_steps_mean"] == pytest.approx(200) and imp1["cumulative_steps_std"] == 0
    assert imp1["retrained_acc_n"] == 0 and imp1["retrained_acc_mean"] is None
    prac1 = aggregate_row(result, "prac", 1)
    assert prac1["train_examples_mean"] == pytest.approx(300) and prac1["train_examples_std"] == pytest.approx(50)
    assert prac1["cumulative_steps_mean"] == pytest.approx(125) and prac1["cumulative_steps_std"] == pytest.approx(15)
    final = aggregate_row(result, "imp", FINAL)  # the final ticket: known from its retraining only
    assert final["remaining_weights"] == pytest.approx(51.2)
    assert (final["retrained_acc_n"], final["retrained_acc_mean"], final["retrained_acc_std"]) == (3, 82.0, 2.0)
    assert final["search_acc_n"] == 0 and final["cumulative_steps_mean"] == pytest.approx(300)
    random_final = aggregate_row(result, "random", FINAL)
    assert (random_final["retrained_acc_n"], random_final["retrained_acc_std"]) == (1, None)

    written = read_csv(os.path.join(tmp_path / "out", "aggregate.csv"))
    (row,) = [r for r in written if r["method"] == "imp" and r["round"] == "1"]
    assert float(row["search_acc_std"]) == pytest.approx(13 ** 0.5)
    runs = read_csv(os.path.join(tmp_path / "out", "runs.csv"))
    assert len(runs) == 7 * 4 and {r["seed"] for r in runs} == {"0", "1", "2"}


def test_each_rounds_final_training_accuracy_is_its_last_epoch_row(tmp_path: Any) -> None:
    """Memorisation is judged by a round's training accuracy at its end: the report takes each
    round's last epoch row of epochs.csv (not a last line cut off by a crash), averages it over
    seeds, and leaves it empty for a run that has no epochs.csv."""
    for seed in (0, 1, 2):
        folder = search_run(tmp_path / "runs" / f"imp-seed{seed}", "imp", seed, [60, 50, 55], [100, 200, 300])
        if seed == 2:
            continue
        table = ResultTable(RunPaths(folder).epochs_csv, EPOCH_FIELDS)
        for number, epoch, accuracy in ((0, 1, 40), (0, 2, 90 + 2 * seed), (1, 1, 50), (1, 2, 97 - seed)):
            table.append({"round": number, "epoch": epoch, "train_acc": accuracy})
        with open(table.path, "a") as handle:
            handle.write("1,3,0.1,12")  # an append cut off mid-line: not a row
    result = report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    round0, round1 = aggregate_row(result, "imp", 0), aggregate_row(result, "imp", 1)
    assert (round0["search_train_acc_n"], round0["search_train_acc_mean"]) == (2, pytest.approx(91.0))
    assert round0["search_train_acc_std"] == pytest.approx(2 ** 0.5)
    assert (round1["search_train_acc_n"], round1["search_train_acc_mean"]) == (2, pytest.approx(96.5))
    by_run = {(r["run"].rsplit("-seed", 1)[1], r["round"]): r["search_train_acc"]
              for r in read_csv(os.path.join(tmp_path / "out", "runs.csv"))}
    assert (by_run[("1", "0")], by_run[("1", "1")], by_run[("2", "0")]) == ("92.0", "96.0", "")
    with open(os.path.join(tmp_path / "out", "report.md")) as handle:
        assert "| 91.0 ± 1.4 / – |" in handle.read()


def test_verdict_paired_t_interval_and_cost(sweep: str, tmp_path: Any) -> None:
    result = report.main([sweep, "--out", str(tmp_path / "out")])
    rows = {(rows[0].method, rows[0].reference): rows for rows in result.verdicts}
    assert set(rows) == {("prac", "imp"), ("random", "imp"), ("random", "prac")}
    prac = rows[("prac", "imp")]
    assert [r.metric for r in prac] == ["retrained"] and prac[0].round == FINAL  # only the final tickets
    d = prac[0].difference
    # differences −1, −2, 0: mean −1, sd 1, n 3; t(0.975; 2) = 4.3027
    half = 4.3027 * 1.0 / 3 ** 0.5
    assert (d.paired, d.n, d.mean) == (True, 3, pytest.approx(-1.0))
    assert (d.low, d.high) == (pytest.approx(-1 - half), pytest.approx(-1 + half))
    assert (prac[0].cost.mean, prac[0].cost.std, prac[0].cost.n) == (pytest.approx(50.0), pytest.approx(10.0), 3)
    summary = next(line for line in result.summaries if line.startswith("prac vs imp"))
    assert summary == ("prac vs imp at 51.2% weights (round 3): −1.00 points of retrained-ticket test accuracy "
                       "(95% CI −3.48 to +1.48, n=3 seeds, paired by seed) for 50% ± 10% of imp's training steps")
    random_summary = next(line for line in result.summaries if line.startswith("random vs imp"))
    assert "interval unknown (1 seed)" in random_summary and "−4.50 points" in random_summary
    assert "53% of imp's training steps" in random_summary  # 160 / 300
    assert "random vs prac" in " ".join(result.summaries)

    written = read_csv(os.path.join(tmp_path / "out", "verdict.csv"))
    (row,) = [r for r in written if r["method"] == "prac"]
    assert float(row["ci95_low"]) == pytest.approx(-1 - half) and row["paired"] == "True"
    with open(os.path.join(tmp_path / "out", "report.md")) as handle:
        assert summary in handle.read()


def test_every_summary_line_states_accuracy_and_cost(sweep: str, tmp_path: Any) -> None:
    result = report.main([sweep, "--out", str(tmp_path / "out")])
    assert len(result.summaries) == 3
    for line in result.summaries:
        assert "points of" in line and "training steps" in line, line


def test_controls_ticket_vs_reinit_vs_random_mask(tmp_path: Any) -> None:
    ticket = {0: 80.0, 1: 82.0, 2: 84.0}
    reinit = {0: 70.0, 1: 73.0, 2: 73.0}       # ticket − reinit: 10, 9, 11
    random_mask = {0: 60.0, 1: 62.0}           # ticket − random mask: 20, 20 (seed 2 has none)
    for seed in (0, 1, 2):
        imp = search_run(tmp_path / "runs" / f"imp-{seed}", "imp", seed, [60, 50, 55], [100, 200, 300])
        retrain_run(tmp_path / "retrain" / f"imp-{seed}", imp, ticket[seed], seed)
        retrain_run(tmp_path / "controls" / f"imp-{seed}-reinit", imp, reinit[seed], seed, control="reinit")
        if seed in random_mask:
            retrain_run(tmp_path / "controls" / f"imp-{seed}-random", imp, random_mask[seed], seed,
                        control="random_mask")
    result = report.main([str(tmp_path), "--out", str(tmp_path / "out")])
    (row,) = result.controls
    assert (row.method, row.round, row.remaining_weights) == ("imp", FINAL, pytest.approx(51.2))
    assert (row.ticket.n, row.ticket.mean, row.ticket.std) == (3, 82.0, 2.0)
    assert (row.reinit.n, row.reinit.mean, row.reinit.std) == (3, 72.0, pytest.approx(3 ** 0.5))
    assert (row.random_mask.n, row.random_mask.mean) == (2, 61.0)
    half = 4.3027 * 1.0 / 3 ** 0.5               # differences 10, 9, 11: mean 10, sd 1
    assert (row.vs_reinit.paired, row.vs_reinit.mean) == (True, pytest.approx(10.0))
    assert (row.vs_reinit.low, row.vs_reinit.high) == (pytest.approx(10 - half), pytest.approx(10 + half))
    assert (row.vs_random_mask.n, row.vs_random_mask.mean) == (2, pytest.approx(20.0))
    assert (row.vs_random_mask.low, row.vs_random_mask.high) == (pytest.approx(20.0), pytest.approx(20.0))
    (line,) = result.control_lines
    assert line == (f"imp: a winning ticket at 51.2% weights (round 3)? ticket − reinit = +10.00 points "
                    f"(95% CI {stats.signed(10 - half)} to {stats.signed(10 + half)}, n=3 seeds, paired by seed), "
                    "ticket − random mask = +20.00 points (95% CI +20.00 to +20.00, n=2 seeds, paired by seed)")
    assert aggregate_row(result, "imp", FINAL)["retrained_acc_mean"] == 82.0  # controls never enter it
    (written,) = read_csv(os.path.join(tmp_path / "out", "controls.csv"))
    assert float(written["ticket_minus_reinit_ci95_low"]) == pytest.approx(10 - half)
    assert written["random_mask_n"] == "2"
    with open(os.path.join(tmp_path / "out", "report.md")) as handle:
        assert line in handle.read()


def test_t_quantiles_and_unpaired_difference() -> None:
    assert stats.t_quantile_975(1) == pytest.approx(12.706, abs=1e-3)
    assert stats.t_quantile_975(30) == pytest.approx(2.042, abs=1e-3)
    assert stats.t_quantile_975(31) == 1.96
    # no shared seed: difference of means, Welch: s²/n = 2/2 on each side, df = (1 + 1)² / (1/1 + 1/1) = 2
    d = stats.difference({0: 2.0, 1: 4.0}, {5: 0.0, 6: 2.0})
    assert (d.paired, d.mean) == (False, pytest.approx(2.0))
    half = 4.3027 * 2 ** 0.5
    assert (d.low, d.high) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert "unpaired" in d.n_text()
    one = stats.difference({0: 70.0}, {0: 71.5})
    assert (one.paired, one.mean, one.low) == (True, pytest.approx(-1.5), None)
    assert one.interval_text() == "interval unknown (1 seed)"


def test_search_accuracy_verdict_without_retraining_and_one_run_is_n_1(tmp_path: Any) -> None:
    runs = [search_run(tmp_path / f"r{seed}{m}", m, seed, [60, 40 + seed, 50 + seed], [100, 200, 300])
            for seed in (0, 1) for m in ("imp", "prac")]
    result = report.main([*runs, "--out", str(tmp_path / "out")])
    (rows,) = result.verdicts
    assert {r.metric for r in rows} == {"search"} and [r.round for r in rows] == [0, 1, 2]
    assert "points of search test accuracy" in result.summaries[0]
    assert "search test accuracy" in result.markdown

    alone = report.main([runs[1], runs[3], "--out", str(tmp_path / "out2")])
    assert alone.verdicts == [] and "no imp runs" in alone.summaries[0]
    one = report.main([runs[0], runs[1], "--out", str(tmp_path / "out3")])  # one seed each: the same report
    (row,) = [r for r in one.verdicts[0] if r.round == 1]
    assert row.difference.interval_text() == "interval unknown (1 seed)" and row.difference.mean == 0.0
    assert aggregate_row(one, "prac", 1)["runs"] == 1 and aggregate_row(one, "prac", 1)["search_acc_std"] is None


def test_out_is_replaced_whole(sweep: str, tmp_path: Any) -> None:
    default = os.path.join(sweep, "report")
    first = report.main([sweep])
    assert os.path.dirname(first.files[0]) == default
    with open(os.path.join(default, "stale.csv"), "w") as handle:
        handle.write("from an earlier call\n")
    second = report.main([sweep])
    assert sorted(os.listdir(default)) == sorted(os.path.basename(p) for p in second.files)
    assert sorted(second.files) == sorted(first.files)
    assert not [name for name in os.listdir(sweep) if name.startswith(".tmp-")]
    for name in (PLOT_ACCURACY, PLOT_ACCURACY_STEPS, PLOT_SET_SIZE):
        assert png_size(os.path.join(default, name))[0] >= 400

    # a folder that is not a report is never deleted
    with pytest.raises(UserError, match="not a report folder"):
        report.main([sweep, "--out", os.path.join(sweep, "runs")])
    assert os.path.isdir(os.path.join(sweep, "runs", "imp-seed0"))


def test_piped_into_head_exits_quietly(sweep: str, tmp_path: Any) -> None:
    out = str(tmp_path / "out")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, os.path.join(REPO, "report.py"), sweep, "--out", out],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env)
    process.stdout.close()  # the reader is gone before the first line: every write is a broken pipe
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr and b"BrokenPipe" not in stderr
    assert os.path.isfile(os.path.join(out, "report.md"))  # written before anything is printed


@pytest.mark.parametrize("case", ["missing", "no_run"])
def test_bad_dir_is_one_line_error(case: str, tmp_path: Any) -> None:
    folder = tmp_path / "run"
    if case == "no_run":
        folder.mkdir()
        (folder / "log.txt").write_text("not a run\n")
    result = cli(str(folder))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(folder) in lines[0]


# ============================================================================ real runs, end to end
@pytest.fixture(scope="module")
def real_runs(cifar10_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    """A 2-round x 1-epoch IMP run; its round-1 ticket and its final ticket retrained, and the
    final ticket's mask from a fresh initialisation (the reinit control)."""
    root = tmp_path_factory.mktemp("report_runs")
    imp = str(root / "imp")
    main_imp.main(tiny_args(cifar10_dir, imp, "--epochs", "1", "--pruning_times", "2",
                            "--prune_type", "lt", "--rewind_epoch", "0", "--lr", "0.1"))
    runs = {"imp": imp, "out": str(root / "out")}
    for name, ticket, flags in (("round1", "1checkpoint.pth.tar", ("--init_dir", "--mask_dir")),
                                ("final", "final_ticket.pth.tar", ("--init_dir", "--mask_dir")),
                                ("reinit", "final_ticket.pth.tar", ("--mask_dir",))):
        runs[name] = str(root / "tickets" / name)
        path = os.path.join(imp, ticket)
        main_train.main(tiny_args(cifar10_dir, runs[name], "--epochs", "1",
                                  *[token for flag in flags for token in (flag, path)]))
    return runs


def test_real_runs_end_to_end(real_runs: Dict[str, str]) -> None:
    result = report.main([os.path.dirname(real_runs["imp"]), "--out", real_runs["out"]])
    assert result.notes == []
    (part,) = result.groups
    rows = {r.round: r for r in part.replicates}
    assert sorted(rows) == [0, 1, 2]  # rounds 0 and 1 trained; round 2 is the final ticket, known from its retraining
    for saved in read_csv(RunPaths(real_runs["imp"]).rounds_csv):
        row = rows[int(saved["round"])]
        assert (row.remaining_weights, row.search_acc) == (pytest.approx(float(saved["remaining_weights"])),
                                                           pytest.approx(float(saved["test_acc_at_best_val"])))

    def acc(name: str) -> float:
        return float(read_csv(RunPaths(real_runs[name]).rounds_csv)[0]["test_acc_at_best_val"])
    assert (rows[0].retrained_acc, rows[1].retrained_acc) == (None, pytest.approx(acc("round1")))
    assert (rows[2].retrained_acc, rows[2].reinit_acc) == (pytest.approx(acc("final")), pytest.approx(acc("reinit")))
    assert rows[2].remaining_weights == pytest.approx(64.0, abs=0.01) and rows[2].search_acc is None
    assert [(c.method, c.round) for c in result.controls] == [("imp", 2)]

    def final_train_acc(name: str, number: int = 0) -> float:  # the round's last epoch row
        return float([r for r in read_csv(RunPaths(real_runs[name]).epochs_csv) if r["round"] == str(number)][-1]
                     ["train_acc"])
    assert [rows[k].search_train_acc for k in (0, 1)] == [pytest.approx(final_train_acc("imp", k)) for k in (0, 1)]
    assert (rows[1].retrained_train_acc, rows[2].retrained_train_acc, rows[2].reinit_train_acc) == (
        pytest.approx(final_train_acc("round1")), pytest.approx(final_train_acc("final")),
        pytest.approx(final_train_acc("reinit")))
    assert rows[2].search_train_acc is None

    out = real_runs["out"]
    for name in ("report.md", "aggregate.csv", "verdict.csv", "runs.csv", "controls.csv",
                 PLOT_ACCURACY, PLOT_ACCURACY_STEPS, PLOT_SET_SIZE):
        assert os.path.join(out, name) in result.files
    for name in (PLOT_ACCURACY, PLOT_ACCURACY_STEPS, PLOT_SET_SIZE):
        width, height = png_size(os.path.join(out, name))
        assert width >= 400 and height >= 300
    with open(os.path.join(real_runs["final"], "args.json")) as handle:
        assert json.load(handle)["ticket"]["source_round"] == 2


def test_cli_prints_tables_and_paths(real_runs: Dict[str, str], tmp_path: Any) -> None:
    out = str(tmp_path / "cli")
    result = cli(real_runs["imp"], "--name", "IMP", "--out", out)  # its tickets' runs are found beside it
    assert result.returncode == 0, result.stderr
    assert "- main_train.py runs on these tickets: ticket 2, reinit 1" in result.stdout
    assert "| method | round | remaining weights (%)" in result.stdout and "- imp: 1 run, seed 0 (IMP)" in result.stdout
    for name in ("report.md", "aggregate.csv", PLOT_ACCURACY, PLOT_ACCURACY_STEPS, PLOT_SET_SIZE):
        assert os.path.join(out, name) in result.stdout
