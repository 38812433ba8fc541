"""tools/gpu_check.sh: the prepared GPU check runs whole at small scale on the CPU (full tier),
and picks a Python that can run it, or says in one line why none can."""
import os
import subprocess
import sys
from typing import Any, List

import pytest
import torch

from tests.conftest import REPO

SCRIPT = os.path.join(REPO, "tools", "gpu_check.sh")


def gpu_check(*args: str, python: str = sys.executable, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=python, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=timeout)


def lines(text: str) -> List[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.full
def test_a_python_that_cannot_run_it_is_passed_over_with_its_reason(tmp_path: Any) -> None:
    """A copied CPU-only .venv (here: an interpreter whose preflight fails) must not stop a
    later candidate that works; with none left, the reasons are one line."""
    unusable = tmp_path / "cpu_only_python"
    unusable.write_text("#!/bin/sh\necho 'gpu_check: torch 2.14.1 sees no CUDA device' >&2\nexit 2\n")
    unusable.chmod(0o755)
    done = gpu_check(str(tmp_path / "no_data"), "--device", "cpu", "--parts", "search",
                     python=f"{unusable} {sys.executable}")
    # the second one ran the next step, which found no data
    assert done.returncode == 2 and len(lines(done.stderr)) == 1, done.stderr
    assert done.stderr.startswith(f"gpu_check: no Fashion-MNIST in {tmp_path / 'no_data'}: "), done.stderr
    done = gpu_check("--device", "cpu", "--parts", "tests", python=str(unusable))
    assert done.returncode == 2
    assert lines(done.stderr) == ["gpu_check: no usable Python; gpu_check: torch 2.14.1 sees no CUDA device"]


@pytest.mark.cpu_only
def test_device_cuda_without_cuda_is_one_line() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = gpu_check("--parts", "tests")
    assert done.returncode == 2
    assert len(lines(done.stderr)) == 1 and "sees no CUDA device" in done.stderr, done.stderr


def test_preflight_reports_a_broken_module_in_one_line(monkeypatch: Any, capsys: Any) -> None:
    """A torchvision built for another torch raises RuntimeError on import, not ImportError."""
    from tools import gpu_check as check
    real_import = check.importlib.import_module

    def broken_torchvision(name: str) -> Any:
        if name == "torchvision":
            raise RuntimeError("operator torchvision::nms does not exist\nmore detail")
        return real_import(name)

    monkeypatch.setattr(check.importlib, "import_module", broken_torchvision)
    with pytest.raises(SystemExit) as stopped:
        check.preflight("cpu")
    assert stopped.value.code == 2
    assert lines(capsys.readouterr().err) == [f"gpu_check: {sys.executable} cannot import torchvision "
                                              "(RuntimeError: operator torchvision::nms does not exist)"]


@pytest.mark.full
def test_the_gpu_check_runs_whole_at_small_scale_on_the_cpu(fashion_dir: str, tmp_path: Any) -> None:
    out = tmp_path / "out"
    done = gpu_check(fashion_dir, "--device", "cpu", "--scale", "small", "--out", str(out), timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = (out / "summary.txt").read_text()
    assert summary == done.stdout[done.stdout.index("== gpu_check summary"):]
    assert "torch " + torch.__version__ in summary
    for part in ("tests", "bench", "compile", "search"):
        section = summary.split(f"== {part}\n", 1)[1].split("\n== ", 1)[0]
        assert section.startswith("exit code 0, "), (part, section)
    assert " passed" in summary and "| (c) ours: train_epoch, bf16 + channels_last |" in summary
    assert "imp: exit code 0, prac: exit code 0" in summary
