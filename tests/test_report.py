"""report.py: tables, CSVs and plots from real runs; retraining matching and the steps ratio
on hand-written results; one-line errors from the command line."""
import csv
import json
import os
import struct
from typing import Any, Dict, List, Optional, Sequence

import pytest

import main_imp
import main_train
import report
from tests.conftest import run_script, tiny_args
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
def write_run(folder: Any, rounds: Sequence[Dict[str, Any]], arguments: Dict[str, Any], prac: bool = False) -> str:
    """A run folder with the given rounds.csv rows (other columns empty or zero) and args.json."""
    folder.mkdir(parents=True)
    with open(folder / "rounds.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=ROUND_FIELDS)
        writer.writeheader()
        for row in rounds:
            writer.writerow({**{name: 0 for name in ROUND_FIELDS}, "forgetting_part": "",
                             "pruning_aware_part": "", "eb_stop_epoch": "", **row})
    (folder / "args.json").write_text(json.dumps({"arguments": {"save_dir": str(folder), **arguments}}))
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
