"""tools/gpu_check.sh refuses what it cannot do with one line, before running anything."""
import os
import subprocess
import sys
from typing import Any, List

import pytest
import torch

from tests.conftest import REPO

SCRIPT = os.path.join(REPO, "tools", "gpu_check.sh")


def gpu_check(*args: str, out: Any = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    extra = ["--out", str(out)] if out is not None else []
    return subprocess.run(["bash", SCRIPT, *args, *extra], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=120)


def lines(text: str) -> List[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_help_names_every_part() -> None:
    done = gpu_check("--help")
    assert done.returncode == 0
    for part in ("--tests", "--bench", "--bench_compile", "--search DIR", "--all DIR", "--device cuda|cpu"):
        assert part in done.stdout, part


@pytest.mark.parametrize("args, words", [((), "name at least one part"),
                                         (("--tests", "--device", "tpu"), "--device is cuda or cpu"),
                                         (("--search",), "--search needs a value"),
                                         (("--device", "cpu", "--search", "/nonexistent"), "no Fashion-MNIST in")])
def test_bad_use_is_one_line_and_exit_code_2(args: tuple, words: str, tmp_path: Any) -> None:
    done = gpu_check(*args, out=tmp_path / "out")
    assert done.returncode == 2 and done.stdout == ""
    assert len(lines(done.stderr)) == 1 and words in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.cpu_only
def test_device_cuda_without_cuda_is_one_line(tmp_path: Any) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = gpu_check("--tests", out=tmp_path / "out")
    assert done.returncode == 2
    assert len(lines(done.stderr)) == 1 and "sees no CUDA device" in done.stderr, done.stderr


def test_summary_of_an_empty_folder_says_what_was_not_run(tmp_path: Any) -> None:
    (tmp_path / "out").mkdir()
    done = gpu_check("--summary", "--device", "cpu", out=tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert "torch " + torch.__version__ in done.stdout and done.stdout.count("not run") == 4
    assert (tmp_path / "out" / "summary.txt").read_text() == done.stdout
