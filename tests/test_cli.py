"""Flags: published names and defaults, milestone parsing and validation."""
import os
import shutil
from dataclasses import replace
from typing import List

import pytest

import cli
import main_imp
import main_PrAC_imp
import main_train
from cli import Config, parse_milestones, validate
from tests.helpers import one_line
from utils import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def valid_config(**changes) -> Config:
    return replace(Config(save_dir="runs/x"), **changes)


# ----------------------------------------------------------------------------- milestones
@pytest.mark.parametrize("text, expected", [
    ("91,136", [91, 136]),
    ("91", [91]),
    ("", []),
    ("10, 20,30", [10, 20, 30]),
    ("5,5", [5, 5]),
])
def test_parse_milestones(text: str, expected: List[int]) -> None:
    assert parse_milestones(text) == expected


@pytest.mark.parametrize("text", ["91;x", "91,x", "a", "1.5", "91,-3"])
def test_parse_milestones_rejects_malformed(text: str) -> None:
    with pytest.raises(UserError) as info:
        parse_milestones(text)
    assert one_line(info.value)


# ----------------------------------------------------------------------------- validation
def test_default_config_with_save_dir_is_valid() -> None:
    validate(valid_config())


@pytest.mark.parametrize("rate", [0.0, 1.0, 1.5, -0.1])
def test_validate_rejects_bad_rate(rate: float) -> None:
    with pytest.raises(UserError) as info:
        validate(valid_config(rate=rate))
    assert one_line(info.value)
    assert "rate" in str(info.value)


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.01, 0.99])
def test_validate_accepts_good_rate(rate: float) -> None:
    validate(valid_config(rate=rate))


@pytest.mark.parametrize("save_dir", ["", None])
def test_validate_requires_save_dir(save_dir) -> None:
    with pytest.raises(UserError) as info:
        validate(valid_config(save_dir=save_dir))
    assert one_line(info.value)
    assert "save_dir" in str(info.value)


@pytest.mark.parametrize("rewind_epoch, epochs", [(2, 2), (5, 3), (182, 182)])
def test_validate_rejects_rewind_point_after_training(rewind_epoch: int, epochs: int) -> None:
    with pytest.raises(UserError) as info:
        validate(valid_config(prune_type="rewind_lt", rewind_epoch=rewind_epoch, epochs=epochs))
    assert one_line(info.value)


def test_validate_accepts_rewind_point_inside_training() -> None:
    validate(valid_config(prune_type="rewind_lt", rewind_epoch=1, epochs=2))
    validate(valid_config(prune_type="rewind_lt", rewind_epoch=0, epochs=1))


@pytest.mark.parametrize("changes", [
    {"dataset": "mnist"},
    {"arch": "res99"},
    {"data_rate": 1.0},
    {"data_rate": -0.1},
    {"lr": 0.0},
    {"eb_eps": 0.0},
    {"epochs": 0},
    {"batch_size": 0},
    {"pruning_times": 0},
    {"queue_length": 0},
    {"rewind_epoch": -1},
    {"warmup": -1},
    {"threshold": -1},
    {"warmup": 183},                         # longer than the 182 --epochs
    {"epochs": 3, "warmup": 4, "decreasing_lr": []},
    {"split_file": "/nonexistent/split.npy"},
    {"init_dir": "/nonexistent/ckpt.pth.tar"},
    {"mask_dir": "/nonexistent/ckpt.pth.tar"},
    {"resume": True, "checkpoint": "/nonexistent/3checkpoint.pth.tar"},
])
def test_validate_rejects_bad_values(changes) -> None:
    with pytest.raises(UserError) as info:
        validate(valid_config(**changes))
    assert one_line(info.value)


def test_checkpoint_is_only_checked_when_resuming() -> None:
    validate(valid_config(checkpoint="/nonexistent/3checkpoint.pth.tar"))


# ----------------------------------------------------------------------------- the scripts' flags
@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> List[Config]:
    """Replaces the runners so that main() only parses and validates its flags."""
    configs: List[Config] = []
    for module, name in ((main_imp, "run_imp"), (main_PrAC_imp, "run_prac_imp"), (main_train, "run_retrain")):
        monkeypatch.setattr(module, name, lambda config, events=None: configs.append(config))
    return configs


COMMON_DEFAULTS = dict(data="../data", dataset="cifar10", arch="res20s", split_file=None, seed=None,
                       gpu=0, batch_size=128, momentum=0.9, weight_decay=1e-4, epochs=182, warmup=0,
                       print_freq=50, decreasing_lr=[91, 136])


def check_defaults(config: Config, **expected) -> None:
    for key, value in {**COMMON_DEFAULTS, **expected}.items():
        assert getattr(config, key) == value, key


def test_main_imp_defaults(captured: List[Config]) -> None:
    main_imp.main(["--save_dir", "s"])
    check_defaults(captured[0], lr=0.01, pruning_times=16, rate=0.2, prune_type="lt", random_prune=False,
                   rewind_epoch=2, resume=False, checkpoint=None)


def test_main_prac_imp_defaults(captured: List[Config], tmp_path) -> None:
    split = str(tmp_path / "split.npy")
    open(split, "wb").close()
    main_PrAC_imp.main(["--save_dir", "s", "--split_file", split])
    check_defaults(captured[0], split_file=split, lr=0.1, pruning_times=16, rate=0.2, eb_eps=0.08,
                   queue_length=5, prune_type="lt", rewind_epoch=2, data_prune="zero_out", threshold=0,
                   data_rate=0.2)


def test_main_train_defaults(captured: List[Config]) -> None:
    main_train.main(["--save_dir", "s"])
    check_defaults(captured[0], lr=0.1, save_model=False, init_dir=None, mask_dir=None)


def test_main_prac_imp_requires_split_file(captured: List[Config]) -> None:
    with pytest.raises(UserError) as info:
        main_PrAC_imp.main(["--save_dir", "s"])
    assert one_line(info.value)
    assert captured == []


def test_prune_type_choices(captured: List[Config], tmp_path) -> None:
    main_imp.main(["--save_dir", "s", "--prune_type", "pt"])
    assert captured[-1].prune_type == "pt"
    split = str(tmp_path / "split.npy")
    open(split, "wb").close()
    with pytest.raises(SystemExit):  # pt is main_imp.py only
        main_PrAC_imp.main(["--save_dir", "s", "--split_file", split, "--prune_type", "pt"])
    with pytest.raises(SystemExit):
        main_PrAC_imp.main(["--save_dir", "s", "--split_file", split, "--data_prune", "half"])


def test_seed_zero_is_a_seed(captured: List[Config]) -> None:
    main_imp.main(["--save_dir", "s", "--seed", "0"])
    assert captured[0].seed == 0


def test_bad_flag_values_raise_user_error_before_running(captured: List[Config]) -> None:
    for argv in (["--save_dir", "s", "--rate", "1.5"], ["--save_dir", "s", "--decreasing_lr", "91;x"],
                 ["--rate", "0.2"], ["--save_dir", "s", "--prune_type", "rewind_lt", "--epochs", "2",
                                     "--rewind_epoch", "2"]):
        with pytest.raises(UserError) as info:
            main_imp.main(argv)
        assert one_line(info.value)
    assert captured == []


def test_published_commands_parse_verbatim(captured: List[Config], tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    os.makedirs(tmp_path / "npy_files")
    shutil.copy(os.path.join(REPO, "npy_files", "cifar10-train-val.npy"), tmp_path / "npy_files")
    os.makedirs(tmp_path / "PrAC_lt_cifar10_res20s")
    open(tmp_path / "PrAC_lt_cifar10_res20s" / "1checkpoint.pth.tar", "wb").close()
    monkeypatch.chdir(tmp_path)

    main_imp.main("--data data/cifar10 --dataset cifar10 --arch res20s --batch_size 128 --lr 0.1 "
                  "--pruning_times 16 --prune_type rewind_lt --rewind_epoch 2 "
                  "--save_dir lt_cifar10_res20s".split())
    main_PrAC_imp.main("--data data/cifar10 --dataset cifar10 --arch res20s "
                       "--split_file npy_files/cifar10-train-val.npy --batch_size 128 --lr 0.1 "
                       "--pruning_times 16 --eb_eps 0.08 --prune_type rewind_lt --rewind_epoch 2 "
                       "--threshold 0 --save_dir PrAC_lt_cifar10_res20s".split())
    main_train.main("--data data/cifar10 --dataset cifar10 --arch res20s --batch_size 128 --lr 0.1 "
                    "--init_dir PrAC_lt_cifar10_res20s/1checkpoint.pth.tar "
                    "--mask_dir PrAC_lt_cifar10_res20s/1checkpoint.pth.tar "
                    "--save_dir retrain_PrAC_lt_cifar10_res20s/1".split())
    imp, prac_run, retrain = captured
    assert (imp.prune_type, imp.rewind_epoch, imp.lr, imp.save_dir) == ("rewind_lt", 2, 0.1, "lt_cifar10_res20s")
    assert prac_run.split_file == "npy_files/cifar10-train-val.npy" and prac_run.eb_eps == 0.08
    assert retrain.init_dir == retrain.mask_dir == "PrAC_lt_cifar10_res20s/1checkpoint.pth.tar"


def test_config_from_args_parses_milestones() -> None:
    parser = cli.build_parser(cli.RETRAIN)
    config = cli.config_from_args(parser.parse_args(["--save_dir", "s", "--decreasing_lr", "3,7"]))
    assert config.decreasing_lr == [3, 7]
    assert isinstance(config, Config)


# ----------------------------------------------------------------------------- warnings
def test_warmup_as_long_as_training_is_allowed() -> None:
    validate(valid_config(epochs=5, warmup=5, decreasing_lr=[]))


@pytest.mark.parametrize("epochs, milestones, late", [(10, [5, 10], "10"), (4, [91, 136], "91,136"),
                                                     (10, [3, 12, 20], "12,20")])
def test_milestones_at_or_beyond_epochs_are_a_warning(epochs: int, milestones: List[int], late: str) -> None:
    config = valid_config(epochs=epochs, decreasing_lr=milestones)
    validate(config)  # legal, as in the published scripts
    warnings = cli.config_warnings(config)
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert f"--decreasing_lr milestone(s) {late} " in warnings[0] and f"--epochs {epochs}" in warnings[0]
    assert cli.config_warnings(valid_config(epochs=epochs, decreasing_lr=[m for m in milestones if m < epochs])) == []


def parse_common(argv: List[str]) -> Config:
    parser = cli.build_parser(cli.RETRAIN)
    return cli.config_from_args(parser.parse_args(argv))


def test_config_from_args_prints_one_warning_line(capsys: pytest.CaptureFixture) -> None:
    config = parse_common(["--save_dir", "s", "--epochs", "5", "--decreasing_lr", "3,8"])
    assert config.decreasing_lr == [3, 8]
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("warning: --decreasing_lr milestone(s) 8 ") and captured.err.count("\n") == 1


def test_default_milestones_with_short_runs_are_not_warned_about(capsys: pytest.CaptureFixture) -> None:
    parse_common(["--save_dir", "s", "--epochs", "2"])
    assert capsys.readouterr().err == ""


def test_the_default_milestones_typed_out_are_given_milestones(capsys: pytest.CaptureFixture) -> None:
    """An explicit --decreasing_lr 91,136 is the user's choice, and is warned about like any other."""
    config = parse_common(["--save_dir", "s", "--epochs", "100", "--decreasing_lr", "91,136"])
    assert config.decreasing_lr == [91, 136]
    assert capsys.readouterr().err.startswith("warning: --decreasing_lr milestone(s) 136 ")


# ----------------------------------------------------------------------------- resuming
def saved(config: Config, **changes) -> dict:
    identity = cli.run_identity(config)
    identity.update(changes)
    return identity


def test_resume_of_the_same_run_has_no_mismatch(tmp_path) -> None:
    split = tmp_path / "split.npy"
    split.write_bytes(b"split")
    config = valid_config(split_file=str(split))
    assert cli.resume_mismatches(saved(config), config, "main_imp.py", "main_imp.py") == []
    # only flags of speed, output or length differ
    later = replace(config, pruning_times=20, device="cpu", eval_batch_size=500, print_freq=1, seed=3,
                    no_progress=True, resume=True, checkpoint="x")
    assert cli.resume_mismatches(saved(config), later, "/abs/main_imp.py", "main_imp.py") == []


def test_resume_mismatches_name_each_setting() -> None:
    config = valid_config()
    other = replace(config, arch="res56s", dataset="cifar100", decreasing_lr=[50], lr=0.01, random_prune=True)
    mismatches = cli.resume_mismatches(saved(config), other, "main_PrAC_imp.py", "main_imp.py")
    assert mismatches == ["script: checkpoint written by main_PrAC_imp.py, now main_imp.py",
                          "--dataset: checkpoint cifar10, now cifar100",
                          "--arch: checkpoint res20s, now res56s",
                          "--lr: checkpoint 0.1, now 0.01",
                          "--decreasing_lr: checkpoint 91,136, now 50",
                          "--random_prune: checkpoint False, now True"]
    assert all("\n" not in m for m in mismatches)


def test_split_files_are_compared_by_content(tmp_path) -> None:
    first, moved, other = tmp_path / "a.npy", tmp_path / "b.npy", tmp_path / "c.npy"
    first.write_bytes(b"permutation 1")
    moved.write_bytes(b"permutation 1")
    other.write_bytes(b"permutation 2")
    record = saved(valid_config(split_file=str(first)))
    assert cli.resume_mismatches(record, valid_config(split_file=str(moved)), "", "main_imp.py") == []
    [mismatch] = cli.resume_mismatches(record, valid_config(split_file=str(other)), "", "main_imp.py")
    assert mismatch.startswith(f"--split_file: checkpoint {first} (sha256:") and str(other) in mismatch
    [mismatch] = cli.resume_mismatches(record, valid_config(), "", "main_imp.py")
    assert mismatch.endswith("now none")
    first.unlink()  # the recorded file is gone: its copy elsewhere still matches
    assert cli.resume_mismatches(record, valid_config(split_file=str(moved)), "", "main_imp.py") == []


def test_split_file_given_now_but_not_then_is_a_mismatch(tmp_path) -> None:
    split = tmp_path / "split.npy"
    split.write_bytes(b"x")
    mismatches = cli.resume_mismatches(saved(valid_config()), valid_config(split_file=str(split)), "", "main_imp.py")
    assert mismatches == [f"--split_file: checkpoint none, now {split}"]


def test_checkpoints_without_a_config_are_not_checked() -> None:
    """Published checkpoints hold no config; settings a checkpoint lacks are skipped."""
    config = valid_config(arch="res56s")
    assert cli.resume_mismatches({}, config, None, "main_imp.py") == []
    assert cli.resume_mismatches({"arch": "res56s"}, config, None, "main_PrAC_imp.py") == []


def test_resuming_with_another_selection_rule_is_a_mismatch() -> None:
    mismatches = cli.resume_mismatches({"select": "el2n"}, valid_config(select="random"), None, "main_PrAC_imp.py")
    assert mismatches == ["--select: checkpoint el2n, now random"]


# ----------------------------------------------------------------------------- one declaration per flag
@pytest.mark.parametrize("script", cli.ALL_SCRIPTS)
def test_each_scripts_help_and_defaults_come_from_the_flag_table(script: str) -> None:
    """--help shows every flag of FLAGS the script has, with its help, choices and default,
    and no other; a command line of --save_dir alone gives the table's defaults."""
    parser = cli.build_parser(script)
    options = {action.option_strings[0]: action for action in parser._actions if action.dest != "help"}
    declared = [flag for flag in cli.FLAGS if script in flag.scripts]
    assert sorted(options) == sorted(f"--{flag.name}" for flag in declared)
    help_text = "".join(parser.format_help().split())  # without the spaces that wrapping moves
    for flag in declared:
        action = options[f"--{flag.name}"]
        assert action.help == flag.help_text(script)
        assert "".join((action.help % {"default": action.default}).split()) in help_text
        if flag.choices is not None:
            assert tuple(action.choices) == tuple(cli.for_script(flag.choices, script))
    config = cli.config_from_args(parser.parse_args(["--save_dir", "s"]))
    for flag in cli.FLAGS:
        expected = flag.config_default(script) if script in flag.scripts else flag.config_default()
        assert getattr(config, flag.name) == (expected if flag.name != "save_dir" else "s"), flag.name


def test_the_published_learning_rates_differ_per_script_and_config_has_the_librarys() -> None:
    assert cli.build_parser(cli.IMP).parse_args([]).lr == 0.01
    assert cli.build_parser(cli.SEARCH).parse_args([]).lr == 0.1
    assert Config(save_dir="x").lr == 0.1 and Config(save_dir="x").decreasing_lr == [91, 136]


def test_resume_check_sweep_and_report_read_the_flag_table() -> None:
    assert cli.RESUME_CHECKED == tuple(flag.name for flag in cli.FLAGS if flag.meaning)
    assert "pruning_times" not in cli.RESUME_CHECKED and "lr" in cli.RESUME_CHECKED
    import sweep
    assert sweep.SWEEP_OWNED is cli.SWEEP_OWNED and "--seed" in sweep.SWEEP_OWNED
    assert cli.RESUME_DEFAULTS == {"prune_scope": "conv", "prune_dense": [], "prune_mode": "global",
                                   "random_mask": False, "match_sizes": None}
