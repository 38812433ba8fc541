"""Bad input, run as a user would: one line 'error: ...' on stderr, no traceback, a non-zero
exit code, and nothing of an existing run in --save_dir changed.

Every case runs in-process (the error comes before any training, so the quick tier checks
them all at no start-up cost) and, in the full tier, also as its own Python process, which is
what a user sees; a few run as processes in the quick tier too."""
import os
import pickle
import shutil
import subprocess
import sys
from typing import Any, Dict, List

import numpy as np
import pytest
import torch

import main_imp
import pruner
from models import build_model
from tests.conftest import REPO, run_script, tiny_args
from tests.helpers import Payload, run_in_process


@pytest.fixture(scope="module")
def existing_run(cifar10_dir: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A finished one-round run (round 0 dense, final ticket at 80%)."""
    save_dir = str(tmp_path_factory.mktemp("bad_inputs") / "existing")
    main_imp.main(tiny_args(cifar10_dir, save_dir, "--epochs", "1", "--pruning_times", "1"))
    return save_dir


def rewrite_batch(path: str, change) -> None:
    with open(path, "rb") as handle:
        entry = pickle.load(handle)
    change(entry)
    with open(path, "wb") as handle:
        pickle.dump(entry, handle)


def hostile_files(folder: Any, files: Dict[str, str], cifar10_dir: str, cifar100_dir: str, fashion_dir: str) -> None:
    """Inputs that carry code, labels that do not fit, .npy object arrays, incomplete data."""
    files["payload_marker"] = str(folder / "payload_ran")
    files["poisoned_cifar10"] = str(folder / "poisoned_cifar10")
    shutil.copytree(cifar10_dir, files["poisoned_cifar10"])
    with open(os.path.join(files["poisoned_cifar10"], "cifar-10-batches-py", "data_batch_1"), "wb") as handle:
        pickle.dump({"data": np.zeros((1, 3072), np.uint8), "labels": [0], "x": Payload(files["payload_marker"])},
                    handle, protocol=2)
    files["evil_checkpoint"] = str(folder / "evil.pth.tar")
    torch.save({"state": 0, "state_dict": {}, "payload": Payload(files["payload_marker"])}, files["evil_checkpoint"])
    files["cifar10_label_10"] = str(folder / "cifar10_label_10")
    shutil.copytree(cifar10_dir, files["cifar10_label_10"])
    rewrite_batch(os.path.join(files["cifar10_label_10"], "cifar-10-batches-py", "data_batch_3"),
                  lambda entry: entry["labels"].__setitem__(0, 10))
    files["cifar10_label_negative"] = str(folder / "cifar10_label_negative")
    shutil.copytree(cifar10_dir, files["cifar10_label_negative"])
    rewrite_batch(os.path.join(files["cifar10_label_negative"], "cifar-10-batches-py", "test_batch"),
                  lambda entry: entry["labels"].__setitem__(-1, -3))
    files["cifar100_label_100"] = str(folder / "cifar100_label_100")
    shutil.copytree(cifar100_dir, files["cifar100_label_100"])
    rewrite_batch(os.path.join(files["cifar100_label_100"], "cifar-100-python", "train"),
                  lambda entry: entry["fine_labels"].__setitem__(5, 100))
    files["object_split"] = str(folder / "object_split.npy")
    np.save(files["object_split"], np.array(list(range(200)), dtype=object), allow_pickle=True)
    files["fashion_partial"] = str(folder / "fashion_partial")
    shutil.copytree(fashion_dir, files["fashion_partial"])
    os.remove(os.path.join(files["fashion_partial"], "train-labels-idx1-ubyte.gz"))


@pytest.fixture(scope="module")
def bad_files(existing_run: str, cifar10_dir: str, cifar100_dir: str, fashion_dir: str,
              tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    folder = tmp_path_factory.mktemp("bad_files")
    files: Dict[str, str] = {}
    hostile_files(folder, files, cifar10_dir, cifar100_dir, fashion_dir)
    files["good_split"] = str(folder / "good_split.npy")
    np.save(files["good_split"], np.random.default_rng(1).permutation(200))
    files["short_split"] = str(folder / "short_split.npy")
    np.save(files["short_split"], np.arange(150))
    not_permutation = np.arange(200)
    not_permutation[5] = 7
    files["not_permutation"] = str(folder / "not_permutation.npy")
    np.save(files["not_permutation"], not_permutation)
    files["corrupt"] = str(folder / "corrupt.pth.tar")
    with open(files["corrupt"], "wb") as handle:
        handle.write(np.random.default_rng(0).bytes(4096))
    with open(os.path.join(existing_run, "0checkpoint.pth.tar"), "rb") as handle:
        real = handle.read()
    files["truncated"] = str(folder / "truncated.pth.tar")
    with open(files["truncated"], "wb") as handle:
        handle.write(real[: len(real) // 2])
    # a pruned res56s checkpoint, as a res56s run would leave it
    torch.manual_seed(0)
    res56s = build_model("res56s", 10)
    init = {k: v.clone() for k, v in res56s.state_dict().items()}
    pruner.global_magnitude_prune(res56s, 0.2)
    files["res56s"] = str(folder / "res56s_1checkpoint.pth.tar")
    torch.save({"state": 1, "state_dict": res56s.state_dict(), "init_weight": init}, files["res56s"])
    files["empty_data"] = str(folder / "empty_data")
    os.makedirs(files["empty_data"])
    return files


def file_bytes(folder: str) -> Dict[str, bytes]:
    out = {}
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as handle:
            out[name] = handle.read()
    return out


def assert_one_line_error(proc: subprocess.CompletedProcess, keyword: str) -> None:
    assert proc.returncode != 0, f"exit code 0; stdout:\n{proc.stdout[-2000:]}"
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"stderr has {len(lines)} lines:\n{proc.stderr[-3000:]}"
    assert lines[0].startswith("error:"), lines[0]
    assert keyword.lower() in lines[0].lower(), f"{keyword!r} not in {lines[0]!r}"


def assert_undamaged(before: Dict[str, bytes], folder: str, strict_resume_info: bool = False) -> None:
    """Every file of the existing run is unchanged; the log may only have grown.

    args_resume.json is checked only when ``strict_resume_info`` (its own test below), so
    that one known defect does not hide the others.
    """
    after = file_bytes(folder)
    for name, content in before.items():
        assert name in after, f"{name} was removed"
        if name == "args_resume.json" and not strict_resume_info:
            continue
        if name == "log.txt":
            assert after[name].startswith(content), "log.txt was rewritten"
        else:
            assert after[name] == content, f"{name} was changed"
    assert not [n for n in after if n.startswith(".tmp")]


def with_flag(argv: List[str], flag: str, value: str) -> List[str]:
    out = list(argv)
    if flag in out:
        out[out.index(flag) + 1] = value
    else:
        out += [flag, value]
    return out


# name -> (script, argv builder(data, existing save_dir, files, fresh save_dir), keyword in the error)
CASES: Dict[str, Any] = {
    "unknown_dataset": ("main_imp.py", lambda d, s, f, n: with_flag(tiny_args(d, s), "--dataset", "imagenet21k"),
                        "--dataset"),
    "unknown_arch": ("main_imp.py", lambda d, s, f, n: with_flag(tiny_args(d, s), "--arch", "res99"), "--arch"),
    "split_wrong_length": ("main_imp.py",
                           lambda d, s, f, n: tiny_args(d, n, "--split_file", f["short_split"], "--epochs", "1"),
                           "split_file"),
    "split_not_permutation": ("main_PrAC_imp.py",
                              lambda d, s, f, n: tiny_args(d, n, "--split_file", f["not_permutation"], "--epochs", "1"),
                              "permutation"),
    "prac_without_split_file": ("main_PrAC_imp.py", lambda d, s, f, n: tiny_args(d, n, "--epochs", "1"),
                                "--split_file"),
    "mask_of_other_arch": ("main_train.py",
                           lambda d, s, f, n: tiny_args(d, n, "--epochs", "1",
                                                        "--init_dir", os.path.join(s, "final_ticket.pth.tar"),
                                                        "--mask_dir", f["res56s"]),
                           "arch"),
    "missing_checkpoint": ("main_imp.py",
                           lambda d, s, f, n: tiny_args(d, s, "--resume", "--checkpoint",
                                                        os.path.join(s, "7checkpoint.pth.tar")),
                           "does not exist"),
    "corrupt_checkpoint": ("main_imp.py",
                           lambda d, s, f, n: tiny_args(d, s, "--resume", "--checkpoint", f["corrupt"]),
                           "corrupt"),
    "truncated_checkpoint": ("main_imp.py",
                             lambda d, s, f, n: tiny_args(d, s, "--resume", "--checkpoint", f["truncated"]),
                             "truncated"),
    "prac_resume_corrupt_checkpoint": ("main_PrAC_imp.py",
                                       lambda d, s, f, n: tiny_args(d, s, "--split_file", f["good_split"],
                                                                    "--resume", "--checkpoint", f["corrupt"]),
                                       "corrupt"),
    "truncated_mask_dir": ("main_train.py",
                           lambda d, s, f, n: tiny_args(d, n, "--epochs", "1",
                                                        "--init_dir", os.path.join(s, "final_ticket.pth.tar"),
                                                        "--mask_dir", f["truncated"]),
                           "truncated"),
    "corrupt_init_dir": ("main_train.py",
                         lambda d, s, f, n: tiny_args(d, n, "--epochs", "1", "--init_dir", f["corrupt"],
                                                      "--mask_dir", os.path.join(s, "final_ticket.pth.tar")),
                         "corrupt"),
    "rate_zero": ("main_imp.py", lambda d, s, f, n: tiny_args(d, s, "--rate", "0"), "--rate"),
    "rate_above_one": ("main_imp.py", lambda d, s, f, n: tiny_args(d, s, "--rate", "1.5"), "--rate"),
    "prac_rate_zero": ("main_PrAC_imp.py",
                       lambda d, s, f, n: tiny_args(d, s, "--split_file", f["good_split"], "--rate", "0"), "--rate"),
    "decreasing_lr_not_numbers": ("main_imp.py", lambda d, s, f, n: tiny_args(d, s, "--decreasing_lr", "a,b"),
                                  "--decreasing_lr"),
    "no_save_dir": ("main_imp.py",
                    lambda d, s, f, n: [a for a in tiny_args(d, s) if a not in ("--save_dir", s)], "--save_dir"),
    # files that carry code or objects: refused with their own message, the payload never runs
    "poisoned_cifar_batch": ("main_imp.py", lambda d, s, f, n: tiny_args(f["poisoned_cifar10"], n, "--epochs", "1"),
                             "carries code or objects"),
    "prac_poisoned_cifar_batch": ("main_PrAC_imp.py",
                                  lambda d, s, f, n: tiny_args(f["poisoned_cifar10"], n, "--epochs", "1",
                                                               "--split_file", f["good_split"]),
                                  "carries code or objects"),
    "checkpoint_carrying_code": ("main_imp.py",
                                 lambda d, s, f, n: tiny_args(d, s, "--resume", "--checkpoint", f["evil_checkpoint"]),
                                 "--trust_checkpoints"),
    "prac_checkpoint_carrying_code": ("main_PrAC_imp.py",
                                      lambda d, s, f, n: tiny_args(d, s, "--split_file", f["good_split"], "--resume",
                                                                   "--checkpoint", f["evil_checkpoint"]),
                                      "carries code or objects"),
    "mask_dir_carrying_code": ("main_train.py",
                               lambda d, s, f, n: tiny_args(d, n, "--epochs", "1",
                                                            "--init_dir", os.path.join(s, "final_ticket.pth.tar"),
                                                            "--mask_dir", f["evil_checkpoint"]),
                               "carries code or objects"),
    "split_file_object_array": ("main_imp.py",
                                lambda d, s, f, n: tiny_args(d, n, "--epochs", "1", "--split_file", f["object_split"]),
                                "Python objects"),
    "train_subset_object_array": ("main_imp.py",
                                  lambda d, s, f, n: tiny_args(d, n, "--epochs", "1", "--train_subset",
                                                               f["object_split"]),
                                  "Python objects"),
    # labels the data set cannot have
    "cifar10_train_label_out_of_range": ("main_imp.py",
                                         lambda d, s, f, n: tiny_args(f["cifar10_label_10"], n, "--epochs", "1"),
                                         "labels outside 0..9"),
    "cifar10_test_label_negative": ("main_PrAC_imp.py",
                                    lambda d, s, f, n: tiny_args(f["cifar10_label_negative"], n, "--epochs", "1",
                                                                 "--split_file", f["good_split"]),
                                    "labels outside 0..9"),
    "cifar100_label_out_of_range": ("main_train.py",
                                    lambda d, s, f, n: with_flag(tiny_args(f["cifar100_label_100"], n, "--epochs", "1"),
                                                                 "--dataset", "cifar100"),
                                    "labels outside 0..99"),
    # an explicit --data must hold the data set; nothing stands in for it
    "fashion_data_does_not_exist": ("main_imp.py",
                                    lambda d, s, f, n: with_flag(tiny_args(f["empty_data"] + "/typo", n, "--epochs",
                                                                           "1"), "--dataset", "fashionmnist"),
                                    "typo does not exist"),
    "fashion_data_lacks_a_file": ("main_imp.py",
                                  lambda d, s, f, n: with_flag(tiny_args(f["fashion_partial"], n, "--epochs", "1"),
                                                               "--dataset", "fashionmnist"),
                                  "lacks train-labels-idx1-ubyte"),
    "fashion_empty_data": ("main_train.py",
                           lambda d, s, f, n: with_flag(tiny_args(f["empty_data"], n, "--epochs", "1"),
                                                        "--dataset", "fashionmnist"),
                           "does not hold fashionmnist"),
    # flags that cannot mean what the user meant
    "threshold_negative": ("main_PrAC_imp.py",
                           lambda d, s, f, n: tiny_args(d, n, "--split_file", f["good_split"], "--threshold", "-1"),
                           "--threshold"),
    "warmup_longer_than_epochs": ("main_imp.py", lambda d, s, f, n: tiny_args(d, n, "--epochs", "2", "--warmup", "3"),
                                  "--warmup 3 is longer than --epochs 2"),
    "prac_warmup_longer_than_epochs": ("main_PrAC_imp.py",
                                       lambda d, s, f, n: tiny_args(d, n, "--split_file", f["good_split"],
                                                                    "--epochs", "1", "--warmup", "2"),
                                       "--warmup"),
}


# Also run as processes in the quick tier: a data file and a checkpoint carrying code, no save_dir.
PROCESSES_IN_QUICK_TIER = ("poisoned_cifar_batch", "checkpoint_carrying_code", "no_save_dir")


def ways_to_run(names: List[str]) -> List[Any]:
    return [pytest.param(name, how, id=f"{name}-{how}",
                         marks=(pytest.mark.full,) if how == "process" and name not in PROCESSES_IN_QUICK_TIER else ())
            for name in names for how in ("in_process", "process")]


@pytest.mark.parametrize("name, how", ways_to_run(sorted(CASES)))
def test_bad_input_is_one_line_error(name: str, how: str, cifar10_dir: str, existing_run: str,
                                     bad_files: Dict[str, str], tmp_path: Any) -> None:
    script, build, keyword = CASES[name]
    before = file_bytes(existing_run)
    argv = build(cifar10_dir, existing_run, bad_files, str(tmp_path / "fresh"))
    proc = run_script(script, argv) if how == "process" else run_in_process(script, argv)
    assert_one_line_error(proc, keyword)
    assert proc.returncode == 2
    assert not os.path.exists(bad_files["payload_marker"]), "a file's code ran"
    assert_undamaged(before, existing_run)
    fresh = tmp_path / "fresh"
    if fresh.exists():  # a refused fresh run leaves no results or checkpoints behind
        assert not [n for n in os.listdir(fresh) if n.endswith((".pth.tar", ".pt", ".csv", ".npy", ".png"))]


def test_data_missing_fails_fast_without_network(bad_files: Dict[str, str], tmp_path: Any) -> None:
    """An absent CIFAR-10 with no network must fail quickly, not hang on the download."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    argv = tiny_args(bad_files["empty_data"], str(tmp_path / "run"), "--epochs", "1")
    try:
        proc = subprocess.run([sys.executable, os.path.join(REPO, "main_imp.py"), *argv], capture_output=True,
                              text=True, cwd=REPO, env=env, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("main_imp.py with no data set and no network hangs (> 120 s) instead of failing")
    assert_one_line_error(proc, "cifar10")


def test_fresh_run_into_existing_run_is_refused(cifar10_dir: str, existing_run: str) -> None:
    before = file_bytes(existing_run)
    for script, extra in (("main_imp.py", ["--epochs", "1", "--pruning_times", "1"]),
                          ("main_train.py", ["--epochs", "1", "--init_dir",
                                             os.path.join(existing_run, "final_ticket.pth.tar"), "--mask_dir",
                                             os.path.join(existing_run, "final_ticket.pth.tar")])):
        proc = run_in_process(script, tiny_args(cifar10_dir, existing_run, *extra))
        assert_one_line_error(proc, "already holds a run")
        assert file_bytes(existing_run) == before, f"{script} changed the existing run's files"


def test_failed_resume_keeps_the_record_of_the_last_resume(cifar10_dir: str, existing_run: str,
                                                           bad_files: Dict[str, str], tmp_path: Any) -> None:
    """A resume that is refused (corrupt --checkpoint) must not overwrite args_resume.json,
    the record of the arguments of the resume that did happen."""
    import shutil

    folder = str(tmp_path / "resumed_once")
    shutil.copytree(existing_run, folder)
    with open(os.path.join(folder, "args_resume.json"), "w") as handle:
        handle.write('{"arguments": {"note": "the resume that really happened"}}\n')
    before = file_bytes(folder)
    proc = run_in_process("main_imp.py", tiny_args(cifar10_dir, folder, "--resume", "--checkpoint",
                                                    bad_files["corrupt"]))
    assert_one_line_error(proc, "corrupt")
    assert_undamaged(before, folder, strict_resume_info=True)


@pytest.mark.parametrize("script, how", [("main_imp.py", "in_process"), ("main_train.py", "in_process"),
                                         pytest.param("main_train.py", "process", marks=pytest.mark.full)])
def test_late_milestones_are_one_warning_line_and_the_run_goes_on(script: str, how: str, cifar10_dir: str,
                                                                 existing_run: str, tmp_path: Any) -> None:
    save_dir = str(tmp_path / "run")
    ticket = os.path.join(existing_run, "final_ticket.pth.tar")
    extra = ["--pruning_times", "1"] if script == "main_imp.py" else ["--init_dir", ticket, "--mask_dir", ticket]
    argv = tiny_args(cifar10_dir, save_dir, "--epochs", "1", "--decreasing_lr", "1,5", *extra)
    proc = run_script(script, argv) if how == "process" else run_in_process(script, argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: --decreasing_lr milestone(s) 1,5 "), proc.stderr[-3000:]
    assert os.path.exists(os.path.join(save_dir, "epochs.csv"))
