"""bench/bench.py runs end to end in quick mode on a tiny size and writes its report; its
streamed rows keep every generator on the data's device (checked on fake CUDA tensors)."""
import functools
import os
import subprocess
import sys
from typing import Any

import pytest
import torch

import training
from bench import bench as bench_script
from dataset import ImageSet
from tests.fake_cuda import StopStep, fake_cuda, real, stop_after_step

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.full
def test_quick_bench_prints_table_and_writes_results(tmp_path, device: torch.device) -> None:
    out = tmp_path / "results" / "bench.md"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "bench", "bench.py"), "--quick", "--device", device.type,
         "--n", "256", "--steps", "1", "--eval_n", "64", "--eval_batch_size", "32", "--threads", "1",
         "--out", str(out)],
        capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    header = "| Path | images/s | spread |"
    assert header in done.stdout
    for row in ("(a) published", "(b) DataLoader", "(c) ours: train_epoch", "bf16 + channels_last",
                "data path alone, (c) ours", "evaluate, 64 images", "prac.forgetting_events",
                "pruner.candidate_mask + mask_distance"):
        assert row in done.stdout, row
    assert out.exists()
    report = out.read_text()
    assert header in report and "| Bookkeeping |" in report
    assert ("device: CPU" if device.type == "cpu" else "(CUDA ") in report
    assert "torch " in report and "threads:" in report
    assert "(quick mode)" in report


@pytest.mark.full
def test_streamed_bench_compares_streamed_with_memory(tmp_path) -> None:
    out = tmp_path / "streamed.md"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "bench", "bench.py"), "--streamed", "--quick", "--device", "cpu",
         "--threads", "1", "--stream_n", "24", "--stream_size", "32", "--workers", "1", "--out", str(out)],
        capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = out.read_text()
    for row in ("data path alone, in memory", "data path alone, streamed, 0 workers",
                "data path alone, streamed, 1 workers", "train_epoch, ResNet-18, streamed, 1 workers"):
        assert row in report, row
    assert "torch " in report and "threads:" in report


@pytest.mark.full
def test_record_gather_bench_runs_under_torchrun() -> None:
    """bench/bench_gather.py: two gloo processes merge an epoch's records; rank 0 prints the time."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         os.path.join(REPO, "bench", "bench_gather.py"), "--examples", "1000", "--repeats", "3", "--el2n",
         "--epoch_seconds", "10"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("record gather")]
    assert len(lines) == 1, result.stdout  # rank 0 alone reports
    assert "2 processes" in lines[0] and "1,000 examples + EL2N" in lines[0] and "% of a 10.0 s" in lines[0]


def test_streamed_rows_draw_from_generators_on_the_data_device(monkeypatch: Any) -> None:
    """The rows of --streamed on (fake) CUDA: the data path and one train_epoch step over the
    in-memory set, whose augmentation and permutations draw from the generators."""
    build = bench_script.build_model
    monkeypatch.setattr(bench_script, "build_model", lambda *args: real(lambda: build(*args)))
    monkeypatch.setattr(bench_script, "train_epoch", functools.partial(training.train_epoch,
                                                                       on_batch=stop_after_step))
    with fake_cuda(monkeypatch) as cuda:
        size = 32
        train = ImageSet(torch.zeros(40, 3, size, size, dtype=torch.uint8, device=cuda),
                         torch.zeros(40, dtype=torch.int64, device=cuda))
        assert bench_script.streamed_data_workload(train, 40, seed=0).trial() == 40
        with pytest.raises(StopStep):
            bench_script.streamed_train_workload(train, 40, seed=0).trial()
