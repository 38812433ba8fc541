"""report.py: tables, CSVs and plots from real runs; retraining matching and the steps ratio
on hand-written results; one-line errors from the command line."""
import csv
import json
import os
import struct
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence

import pytest

import main_imp
import main_train
import report
from tests.conftest import REPO, run_script, tiny_args
from utils import ROUND_FIELDS, UserError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_csv(path: str) -> List[Dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def number(text: str) -> Optional[float]:
    return float(text) if text != "" else None


def png_size(path: str) -> tuple:
    """(width, height) from the IHDR chunk; fails unless the file is a PNG."""
    with open(path, "rb") as handle:
        head = handle.read(24)
    assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


# ============================================================================ real runs
@pytest.fixture(scope="module")
def real_runs(cifar10_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    """A 2-round x 1-epoch IMP run, its round-1 ticket retrained in imp_retrain/1 and its
    final ticket retrained in a sibling folder found through its args.json."""
    root = tmp_path_factory.mktemp("report_runs")
    imp = str(root / "imp")
    main_imp.main(tiny_args(cifar10_dir, imp, "--epochs", "1", "--pruning_times", "2",
                            "--prune_type", "lt", "--rewind_epoch", "0"))
    round1 = str(root / "imp_retrain" / "1")
    ticket = os.path.join(imp, "1checkpoint.pth.tar")
    main_train.main(tiny_args(cifar10_dir, round1, "--epochs", "1", "--init_dir", ticket, "--mask_dir", ticket))
    final = str(root / "tickets" / "final")
    ticket = os.path.join(imp, "final_ticket.pth.tar")
    main_train.main(tiny_args(cifar10_dir, final, "--epochs", "1", "--init_dir", ticket, "--mask_dir", ticket))
    return {"imp": imp, "round1": round1, "final": final, "out": str(root / "out")}


@pytest.fixture(scope="module")
def real_report(real_runs: Dict[str, str]) -> report.Report:
    return report.main([real_runs["imp"], "--out", real_runs["out"]])


def test_table_rows_equal_rounds_csv(real_runs: Dict[str, str], real_report: report.Report) -> None:
    (table,) = real_report.tables
    rounds = read_csv(os.path.join(real_runs["imp"], "rounds.csv"))
    assert [int(r["round"]) for r in rounds] == [0, 1]
    # rounds 0 and 1 were trained; round 2 is the final ticket, known only from its retraining
    assert [row["round"] for row in table.rows] == [0, 1, 2]
    for row, saved in zip(table.rows, rounds):
        for name in ("remaining_weights", "train_examples", "epochs_run", "epochs_planned", "steps",
                     "cumulative_steps", "best_val_acc", "test_acc_at_best_val"):
            assert row[name] == pytest.approx(float(saved[name])), name
    assert table.rows[0]["remaining_weights"] == pytest.approx(100.0)
    assert table.rows[1]["remaining_weights"] == pytest.approx(80.0, abs=0.01)

    retrained_1 = read_csv(os.path.join(real_runs["round1"], "rounds.csv"))[0]
    retrained_final = read_csv(os.path.join(real_runs["final"], "rounds.csv"))[0]
    assert table.rows[0]["retrained_test_acc"] is None
    assert table.rows[1]["retrained_test_acc"] == pytest.approx(float(retrained_1["test_acc_at_best_val"]))
    assert table.rows[2]["retrained_test_acc"] == pytest.approx(float(retrained_final["test_acc_at_best_val"]))
    assert table.rows[2]["remaining_weights"] == pytest.approx(64.0, abs=0.01)
    assert table.rows[2]["test_acc_at_best_val"] is None
    assert real_report.notes == []


def test_csv_and_markdown_written(real_runs: Dict[str, str], real_report: report.Report,
                                  capsys: pytest.CaptureFixture) -> None:
    out = real_runs["out"]
    rows = read_csv(os.path.join(out, "imp.csv"))
    assert list(rows[0]) == [name for name, _ in report.TABLE_COLUMNS]
    (table,) = real_report.tables
    assert len(rows) == len(table.rows)
    for written, row in zip(rows, table.rows):
        for name, value in row.items():
            assert number(written[name]) == (None if value is None else pytest.approx(value)), name
    summary = read_csv(os.path.join(out, "summary.csv"))
    assert [r["run"] for r in summary] == ["imp"]
    with open(os.path.join(out, "report.md")) as handle:
        markdown = handle.read()
    assert "| round | remaining weights (%) |" in markdown
    assert f"({report.PLOT_ACCURACY})" in markdown
    assert real_runs["round1"] in markdown and real_runs["final"] in markdown


def test_pngs_are_valid(real_runs: Dict[str, str], real_report: report.Report) -> None:
    for name in (report.PLOT_ACCURACY, report.PLOT_STEPS, report.PLOT_EXAMPLES):
        path = os.path.join(real_runs["out"], name)
        assert path in real_report.files
        assert os.path.getsize(path) > 0
        width, height = png_size(path)
        assert width >= 400 and height >= 300


def test_cli_prints_tables_and_paths(real_runs: Dict[str, str], tmp_path: Any) -> None:
    out = str(tmp_path / "cli")
    result = run_script("report.py", [real_runs["imp"], "--retrain", real_runs["round1"], "--out", out])
    assert result.returncode == 0, result.stderr
    assert "| round | remaining weights (%)" in result.stdout
    for name in ("report.md", "imp.csv", report.PLOT_ACCURACY, report.PLOT_STEPS, report.PLOT_EXAMPLES):
        assert os.path.join(out, name) in result.stdout


@pytest.mark.parametrize("case", ["missing", "no_rounds_csv"])
def test_bad_dir_is_one_line_error(case: str, tmp_path: Any) -> None:
    folder = tmp_path / "run"
    if case == "no_rounds_csv":
        folder.mkdir()
        (folder / "log.txt").write_text("not a run\n")
    result = run_script("report.py", [str(folder)])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(folder) in lines[0]
    assert "Traceback" not in result.stderr


# ============================================================================ hand-written results
def write_run(folder: Any, rounds: Sequence[Dict[str, Any]], arguments: Dict[str, Any], prac: bool = False,
              info: Optional[Dict[str, Any]] = None) -> str:
    """A run folder with the given rounds.csv rows (other columns empty or zero) and args.json
    (``info``: more top-level keys, e.g. script or ticket)."""
    folder.mkdir(parents=True)
    with open(folder / "rounds.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=ROUND_FIELDS)
        writer.writeheader()
        for row in rounds:
            writer.writerow({**{name: 0 for name in ROUND_FIELDS}, "forgetting_part": "",
                             "pruning_aware_part": "", "eb_stop_epoch": "", **row})
    (folder / "args.json").write_text(json.dumps({"arguments": {"save_dir": str(folder), **arguments},
                                                  **(info or {})}))
    if prac:
        (folder / "0prac_set.npy").write_bytes(b"")
    return str(folder)


def imp_rounds(densities: Sequence[float], steps: int, examples: Sequence[int]) -> List[Dict[str, Any]]:
    return [{"round": k, "remaining_weights": d, "train_examples": n, "epochs_run": 2, "epochs_planned": 2,
             "steps": steps, "cumulative_steps": steps * (k + 1), "best_val_acc": 50 + k,
             "test_acc_at_best_val": 40 + k}
            for k, (d, n) in enumerate(zip(densities, examples))]


def ticket(mask_dir: str, init_dir: Optional[str] = None) -> Dict[str, str]:
    """main_train.py's --mask_dir / --init_dir arguments (init defaults to the mask file)."""
    return {"mask_dir": mask_dir, "init_dir": init_dir or mask_dir}


def retrain_rounds(density: float, test_acc: float) -> List[Dict[str, Any]]:
    return [{"round": 0, "remaining_weights": density, "train_examples": 900, "epochs_run": 2,
             "epochs_planned": 2, "steps": 10, "cumulative_steps": 10, "best_val_acc": 60,
             "test_acc_at_best_val": test_acc}]


def test_retrain_matching_and_steps_ratio(tmp_path: Any) -> None:
    densities = [100.0, 80.0, 64.0]
    imp = write_run(tmp_path / "imp", imp_rounds(densities, 100, [900, 900, 900]), {"pruning_times": 3})
    prac_rows = imp_rounds(densities, 0, [900, 300, 450])
    for row, cumulative in zip(prac_rows, (100, 160, 230)):
        row["cumulative_steps"] = cumulative
    prac = write_run(tmp_path / "prac", prac_rows, {"pruning_times": 3}, prac=True)
    other = write_run(tmp_path / "other_run", imp_rounds(densities, 100, [900] * 3), {"pruning_times": 3})

    # absolute --mask_dir into imp, {k}checkpoint -> round 1
    write_run(tmp_path / "imp_retrain" / "a", retrain_rounds(80.0, 41.0),
              ticket(os.path.join(imp, "1checkpoint.pth.tar")))
    # recorded under a folder that no longer exists; <RUN>_retrain/ names the run -> round 1 of imp
    write_run(tmp_path / "imp_retrain" / "moved", retrain_rounds(80.0, 43.0),
              ticket("/gone/imp/1model_SA_best.pth.tar"))
    # relative paths, launched from tmp_path (as its relative --save_dir shows) -> round 2 of prac
    retrain_prac = write_run(tmp_path / "retrain_prac" / "2", retrain_rounds(64.0, 55.0),
                             ticket("prac/2model_SA_best.pth.tar", "prac/2checkpoint.pth.tar"))
    args_path = os.path.join(retrain_prac, "args.json")
    with open(args_path) as handle:
        info = json.load(handle)
    info["arguments"]["save_dir"] = os.path.join("retrain_prac", "2")
    with open(args_path, "w") as handle:
        json.dump(info, handle)
    # final_ticket.pth.tar -> round pruning_times (3), the sparsest ticket
    write_run(tmp_path / "tickets" / "final", retrain_rounds(51.2, 52.0),
              ticket(os.path.join(prac, "final_ticket.pth.tar"), os.path.join(prac, "0checkpoint.pth.tar")))
    # a ticket of a run that is not reported, inside imp_retrain/: left out
    write_run(tmp_path / "imp_retrain" / "foreign", retrain_rounds(80.0, 99.0),
              ticket(os.path.join(other, "1checkpoint.pth.tar")))

    result = report.build_report([imp, prac])
    imp_table, prac_table = result.tables
    assert [row["round"] for row in imp_table.rows] == [0, 1, 2]
    assert sorted(os.path.basename(r.path) for r in imp_table.retrains[1]) == ["a", "moved"]
    assert imp_table.rows[1]["retrained_test_acc"] == pytest.approx(42.0)  # mean of 41 and 43
    assert [row["retrained_test_acc"] for row in imp_table.rows] == [None, pytest.approx(42.0), None]
    assert [row["round"] for row in prac_table.rows] == [0, 1, 2, 3]
    assert prac_table.rows[2]["retrained_test_acc"] == pytest.approx(55.0)
    assert prac_table.rows[3]["retrained_test_acc"] == pytest.approx(52.0)
    assert prac_table.rows[3]["remaining_weights"] == pytest.approx(51.2)
    assert prac_table.rows[1]["train_examples"] == 300
    assert [t.run.kind for t in result.tables] == ["IMP", "PrAC"]

    (comparison,) = report.compare_steps([t.run for t in result.tables])
    assert (comparison.steps, comparison.reference_steps, comparison.through_round) == (230, 300, 2)
    assert comparison.percent == pytest.approx(100 * 230 / 300)
    assert "prac used 77% of imp's training steps" in result.sentences[0]
    assert [row["steps_vs_first"] for row in result.summary] == [100.0, pytest.approx(76.6667, abs=1e-3)]


def test_steps_ratio_through_common_rounds_and_checkpoint_names(tmp_path: Any) -> None:
    imp = report.load_run(write_run(tmp_path / "imp", imp_rounds([100, 80, 64, 51.2], 1000, [900] * 4),
                                    {"pruning_times": 4}), "IMP")
    prac = report.load_run(write_run(tmp_path / "prac", imp_rounds([100, 80], 117, [900, 200]),
                                     {"pruning_times": 4}, prac=True), "PrAC")
    (comparison,) = report.compare_steps([imp, prac])
    assert comparison.through_round == 1  # prac finished rounds 0-1 only
    assert (comparison.steps, comparison.reference_steps) == (234, 2000)
    assert comparison.sentence().startswith("PrAC used 12% of IMP's training steps (234 vs 2,000")

    assert report.checkpoint_round("/x/3checkpoint.pth.tar", 16) == 3
    assert report.checkpoint_round("12model_SA_best.pth.tar", 16) == 12
    assert report.checkpoint_round("final_ticket.pth.tar", 16) == 16
    assert report.checkpoint_round("checkpoint.pth.tar", 16) is None
    assert report.checkpoint_round("epoch_3_rewind_weight.pt", 16) is None


def test_retrain_run_given_as_run_is_refused(tmp_path: Any) -> None:
    folder = write_run(tmp_path / "r", retrain_rounds(80.0, 40.0), ticket("x/1checkpoint.pth.tar"))
    with pytest.raises(UserError, match="pass it with --retrain"):
        report.build_report([folder])


def test_run_given_as_retrain_is_refused(tmp_path: Any) -> None:
    imp = write_run(tmp_path / "imp", imp_rounds([100.0, 80.0], 10, [900, 900]), {"pruning_times": 2})
    other = write_run(tmp_path / "other", imp_rounds([100.0, 80.0], 10, [900, 900]), {"pruning_times": 2})
    with pytest.raises(UserError, match="is not a main_train.py run"):
        report.build_report([imp], [other])


# ============================================================================ replicates
SWEEP_DENSITIES = [100.0, 80.0, 64.0]   # rounds 0-2; the final ticket (round 3) is 51.2%
IMP_STEPS = 100                          # per round, every seed


def search_run(folder: Any, method: str, seed: int, search_acc: Sequence[float], cumulative: Sequence[int],
               examples: Sequence[int]) -> str:
    """A main_imp.py (method "imp") or main_PrAC_imp.py --select METHOD run in ``folder``."""
    rows = [{"round": k, "remaining_weights": d, "train_examples": n, "epochs_run": 2, "epochs_planned": 2,
             "steps": c, "cumulative_steps": c, "best_val_acc": 50, "test_acc_at_best_val": acc}
            for k, (d, acc, c, n) in enumerate(zip(SWEEP_DENSITIES, search_acc, cumulative, examples))]
    script = "main_imp.py" if method == "imp" else "main_PrAC_imp.py"
    # every script's arguments hold select (default prac): only the script tells IMP apart
    return write_run(folder, rows, {"pruning_times": 3, "seed": seed, "select": "prac" if method == "imp" else method},
                     prac=method != "imp", info={"script": f"/somewhere/{script}"})


def retrain_run(folder: Any, run_dir: str, test_acc: float, name: str = "final_ticket.pth.tar") -> str:
    ticket_path = os.path.join(run_dir, name)
    return write_run(folder, retrain_rounds(51.2, test_acc), {**ticket(ticket_path), "seed": 0},
                     info={"script": "main_train.py", "ticket": {
                         "init_dir": ticket_path, "mask_dir": ticket_path, "source_run": run_dir,
                         "source_round": None, "reinit": False}})


@pytest.fixture
def sweep(tmp_path: Any) -> str:
    """imp and prac with seeds 0-2 and random with seed 0, final tickets retrained.

    Folder names lie: prac's seed-2 run is in runs/imp-seed9 and its retraining in
    retrain/imp-seed9-final; report.py must go by args.json."""
    root = tmp_path / "sweep"
    root.mkdir()
    (root / "sweep.json").write_text(json.dumps({"methods": ["imp", "prac", "random"], "seeds": [0, 1, 2],
                                                 "flags": [], "retrain": "final"}))
    imp_search = {0: [60, 40, 50], 1: [60, 42, 51], 2: [60, 47, 55]}
    imp_final = {0: 80.0, 1: 82.0, 2: 84.0}
    prac_cumulative = {0: [100, 110, 120], 1: [100, 125, 150], 2: [100, 140, 180]}  # 40%, 50%, 60% of 300
    prac_examples = {0: [900, 300, 300], 1: [900, 350, 330], 2: [900, 250, 270]}
    prac_final = {0: 79.0, 1: 80.0, 2: 84.0}                                        # − imp: −1, −2, 0
    prac_folders = {0: "prac-seed0", 1: "prac-seed1", 2: "imp-seed9"}
    for seed in (0, 1, 2):
        imp = search_run(root / "runs" / f"imp-seed{seed}", "imp", seed, imp_search[seed],
                         [IMP_STEPS * (k + 1) for k in range(3)], [900] * 3)
        retrain_run(root / "retrain" / f"imp-seed{seed}-final", imp, imp_final[seed])
        prac = search_run(root / "runs" / prac_folders[seed], "prac", seed, [60, 41, 49],
                          prac_cumulative[seed], prac_examples[seed])
        retrain_run(root / "retrain" / f"{prac_folders[seed]}-final", prac, prac_final[seed])
    random = search_run(root / "runs" / "random-seed0", "random", 0, [60, 39, 45], [100, 130, 160],
                        [900, 300, 300])
    retrain_run(root / "retrain" / "random-seed0-final", random, 77.5)
    (root / "runs" / "prac-seed3").mkdir()  # started, no round finished yet
    return str(root)


def aggregate_row(result: Any, method: str, number: int) -> Dict[str, Any]:
    (row,) = [r for r in result.aggregate if r["method"] == method and r["round"] == number]
    return row


def test_replicates_grouped_by_args_json_not_folder_names(sweep: str, tmp_path: Any) -> None:
    result = report.main([sweep, "--out", str(tmp_path / "out")])
    assert isinstance(result, report.ReplicateReport)
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
    final = aggregate_row(result, "imp", 3)  # the final ticket: known from its retraining only
    assert final["remaining_weights"] == pytest.approx(51.2)
    assert (final["retrained_acc_n"], final["retrained_acc_mean"], final["retrained_acc_std"]) == (3, 82.0, 2.0)
    assert final["search_acc_n"] == 0 and final["cumulative_steps_mean"] == pytest.approx(300)
    random_final = aggregate_row(result, "random", 3)
    assert (random_final["retrained_acc_n"], random_final["retrained_acc_std"]) == (1, None)

    written = read_csv(os.path.join(tmp_path / "out", "aggregate.csv"))
    (row,) = [r for r in written if r["method"] == "imp" and r["round"] == "1"]
    assert float(row["search_acc_std"]) == pytest.approx(13 ** 0.5)


def test_verdict_paired_t_interval_and_cost(sweep: str, tmp_path: Any) -> None:
    result = report.main([sweep, "--out", str(tmp_path / "out")])
    rows = {(rows[0].method, rows[0].reference): rows for rows in result.verdicts}
    assert set(rows) == {("prac", "imp"), ("random", "imp"), ("random", "prac")}
    prac = rows[("prac", "imp")]
    assert [r.metric for r in prac] == ["retrained"] and prac[0].round == 3  # only the final tickets were retrained
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


def test_t_quantiles_and_unpaired_difference() -> None:
    assert report.t_quantile_975(1) == pytest.approx(12.706, abs=1e-3)
    assert report.t_quantile_975(30) == pytest.approx(2.042, abs=1e-3)
    assert report.t_quantile_975(31) == 1.96
    # no shared seed: difference of means, Welch: s²/n = 2/2 on each side, df = (1 + 1)² / (1/1 + 1/1) = 2
    d = report.difference({0: 2.0, 1: 4.0}, {5: 0.0, 6: 2.0})
    assert (d.paired, d.mean) == (False, pytest.approx(2.0))
    half = 4.3027 * 2 ** 0.5
    assert (d.low, d.high) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert "unpaired" in d.n_text()
    one = report.difference({0: 70.0}, {0: 71.5})
    assert (one.paired, one.mean, one.low) == (True, pytest.approx(-1.5), None)
    assert one.interval_text() == "interval unknown (1 seed)"


def test_search_accuracy_verdict_without_retraining_and_no_imp(tmp_path: Any) -> None:
    runs = [search_run(tmp_path / f"r{seed}{m}", m, seed, [60, 40 + seed, 50 + seed], [100, 200, 300], [900] * 3)
            for seed in (0, 1) for m in ("imp", "prac")]
    result = report.main([*runs, "--out", str(tmp_path / "out")])  # several seeds per method: replicates
    (rows,) = result.verdicts
    assert {r.metric for r in rows} == {"search"} and [r.round for r in rows] == [0, 1, 2]
    assert "points of search test accuracy" in result.summaries[0]
    assert "search test accuracy" in result.markdown

    alone = report.main([runs[1], runs[3], "--out", str(tmp_path / "out2")])
    assert alone.verdicts == [] and "no imp runs" in alone.summaries[0]


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
    for name in (report.PLOT_ACCURACY, report.PLOT_ACCURACY_STEPS, report.PLOT_SET_SIZE):
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
