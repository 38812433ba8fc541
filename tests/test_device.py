"""The device option of the test suite (``pytest --device cpu|cuda``) and what must hold on
each device: a seeded run repeated gives identical results; on CUDA, seeded runs use
deterministic cuDNN kernels, and ``--compile`` and bf16 runs complete with the checkpoint
format unchanged. Without a GPU: one training step on fake CUDA tensors (every tensor and
generator on the right device), fp32 without TF32, the torch version check, the NCCL group's
device, DDP's buffers, one serialisation per best epoch, and the derived defaults.
"""
import json
import os
import subprocess
import sys
from types import SimpleNamespace
from typing import Any, Dict

import pytest
import torch

import cli
import distributed
import durable
import main_imp
import main_PrAC_imp
import runners
import utils
from checkpoint import RunState, load_checkpoint
from dataset import ImageSet
from models import build_model
from paths import RunPaths
from prac import RoundSchedule
from tests.conftest import REPO, tiny_args
from tests.fake_cuda import GeneratorDeviceError, StopStep, fake_cuda, real, stop_after_step
from tests.helpers import assert_same_run
from training import LoopSettings, make_optimizer, predict, set_float32_math, train_epoch


def recorded_device(save_dir: str) -> str:
    with open(os.path.join(save_dir, "args.json")) as handle:
        return json.load(handle)["device"]


@pytest.fixture(scope="module")
def twice(cifar10_dir: str, shuffled_split: str, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    """The same seeded PrAC search (2 rounds x 2 epochs) run twice into two folders."""
    root = tmp_path_factory.mktemp("twice")
    runs = {}
    for name in ("first", "second"):
        runs[name] = str(root / name)
        main_PrAC_imp.main(tiny_args(cifar10_dir, runs[name], "--split_file", shuffled_split, "--epochs", "2",
                                     "--pruning_times", "2", "--decreasing_lr", "1"))
    return runs


def test_runs_on_the_session_device(twice: Dict[str, str], device: torch.device) -> None:
    assert recorded_device(twice["first"]).startswith(device.type)
    # --precision fp32 (the default) left TF32 off in this process, for convolutions too
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32


def test_seeded_run_twice_is_identical(twice: Dict[str, str]) -> None:
    """Weights, masks, optimiser state, records, PrAC sets and result tables, bit for bit."""
    assert_same_run(twice["first"], twice["second"])


@pytest.mark.cpu_only
def test_device_option_without_cuda_is_one_line() -> None:
    """``pytest --device cuda`` where torch sees no GPU stops before collecting anything."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--device", "cuda",
                           os.path.join("tests", "test_device.py")],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode != 0
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "--device cuda" in lines[0] and "sees no CUDA device" in lines[0], lines


# ============================================================================ CUDA only
@pytest.mark.cuda_only
def test_seeded_runs_use_deterministic_cudnn_and_unseeded_ones_benchmark(cifar10_dir: str, tmp_path: Any) -> None:
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    try:
        main_imp.main(tiny_args(cifar10_dir, str(tmp_path / "seeded"), "--epochs", "1", "--pruning_times", "1"))
        assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == (True, False)
        unseeded = [a for a in tiny_args(cifar10_dir, str(tmp_path / "unseeded"), "--epochs", "1",
                                         "--pruning_times", "1") if a not in ("--seed", "0")]
        main_imp.main(unseeded)
        assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == (False, True)
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


@pytest.mark.cuda_only
@pytest.mark.parametrize("runtime", [("--compile",), ("--precision", "bf16")], ids=["compile", "bf16"])
def test_compiled_and_bf16_searches_prune_and_save_the_published_format(cifar10_dir: str, tmp_path: Any,
                                                                       runtime: tuple) -> None:
    """Two rounds, so the pruned (masked) model runs through torch.compile / autocast too."""
    save_dir = str(tmp_path / "run")
    main_imp.main(tiny_args(cifar10_dir, save_dir, "--epochs", "1", "--pruning_times", "2", *runtime))
    assert recorded_device(save_dir).startswith("cuda")
    checkpoint = load_checkpoint(os.path.join(save_dir, "1checkpoint.pth.tar"))
    keys = list(checkpoint["state_dict"])
    assert not [k for k in keys if "_orig_mod" in k], "compiled wrapper leaked into the checkpoint"
    assert any(k.endswith("weight_mask") for k in keys)
    # The file holds the weights where they were trained, and the loader maps them to the CPU.
    raw = torch.load(os.path.join(save_dir, "1checkpoint.pth.tar"), weights_only=False)  # our own file
    assert {v.device.type for v in raw["state_dict"].values()} == {"cuda"}
    assert {v.device.type for v in checkpoint["state_dict"].values()} == {"cpu"}


# ============================================================================ CUDA placement on the CPU
def test_a_training_step_on_fake_cuda_keeps_tensors_and_generators_on_the_device(monkeypatch: Any) -> None:
    """One step of train_epoch (augmentation, forward, loss, records hook) and predict on
    fake CUDA tensors; the same step with a CPU generator is refused, as CUDA refuses it."""
    model = real(lambda: build_model("res20s", 10))
    with fake_cuda(monkeypatch) as cuda:
        model = model.to(cuda)
        data = ImageSet(torch.zeros(16, 3, 32, 32, dtype=torch.uint8, device=cuda),
                        torch.zeros(16, dtype=torch.int64, device=cuda))
        indices = torch.arange(16, device=cuda)
        settings = LoopSettings(batch_size=8, eval_batch_size=8, progress=False)
        optimizer = make_optimizer(model, 0.1, 0.9, 1e-4)
        for generator, failure in ((utils.make_generator(cuda, 0, 1), StopStep),
                                   (torch.Generator(device="cpu"), GeneratorDeviceError)):
            with pytest.raises(failure):
                train_epoch(model, optimizer, data, indices, generator, settings, on_batch=stop_after_step)
        assert predict(model, data, settings, indices).device == cuda


def test_fp32_turns_tf32_off_and_tf32_turns_it_on() -> None:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        for precision, allowed in (("tf32", True), ("fp32", False), ("bf16", False)):
            set_float32_math(precision)
            assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (allowed, allowed)
        assert cli.PRECISIONS == ("fp32", "tf32", "bf16")
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_torch_older_than_2_5_is_one_line_at_start(monkeypatch: Any, capsys: Any) -> None:
    utils.check_torch_version("2.5.0a0+git123")
    utils.check_torch_version("2.14.1+cu130")
    monkeypatch.setattr(torch, "__version__", "2.4.1+cu121")
    with pytest.raises(SystemExit) as stopped:
        utils.run_cli(lambda argv: pytest.fail("main ran on torch 2.4"))
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "torch 2.4.1+cu121 is too old" in lines[0] and "torch>=2.5" in lines[0], lines


def test_nccl_group_and_barrier_are_bound_to_the_local_gpu(monkeypatch: Any) -> None:
    calls: Dict[str, Any] = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.setdefault("set_device", device))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda **kw: calls.setdefault("init", kw))
    distributed.init_from_env(use_cuda=True)
    assert calls["init"] == {"backend": "nccl", "device_id": torch.device("cuda", 1)}
    assert calls["set_device"] == torch.device("cuda", 1)
    monkeypatch.setattr(distributed, "world", lambda: 2)
    monkeypatch.setattr(torch.distributed, "get_backend", lambda: "nccl")
    monkeypatch.setattr(torch.distributed, "barrier", lambda **kw: calls.setdefault("barrier", kw))
    distributed.barrier()
    assert calls["barrier"] == {"device_ids": [1]}


DDP_BUFFER_PROBE = """
import sys
import torch
import torch.distributed as dist
sys.path.insert(0, sys.argv[1])
import cli, runners
torch.set_num_threads(1)
dist.init_process_group("gloo")
rank = dist.get_rank()
session = runners.Session.__new__(runners.Session)
session.config, session.device = cli.Config(save_dir="unused"), torch.device("cpu")
model = torch.nn.Linear(2, 2)
model.register_buffer("mask_like", torch.full((2,), float(rank)))  # differs between the ranks
forward = session.forward_model(model, train=True)
for _ in range(3):
    forward(torch.ones(4, 2)).sum().backward()
print(f"rank {rank} buffer {model.mask_like.tolist()} ddp {type(forward).__name__}", flush=True)
dist.destroy_process_group()
"""


@pytest.mark.full
@pytest.mark.cpu_only
def test_ddp_does_not_broadcast_the_buffers_at_every_step(tmp_path: Any) -> None:
    """Masks and batch-norm statistics are synchronised once per epoch (sync_buffers), not
    before each forward: under a real two-process gloo group, a buffer that differs between
    the ranks is still rank 1's own after three training steps through the session's DDP
    wrapper (DDP's default would overwrite it with rank 0's before the first step). The
    torchrun tests check that the results do not change."""
    probe = tmp_path / "probe.py"
    probe.write_text(DDP_BUFFER_PROBE)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(probe), REPO], capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "rank 0 buffer [0.0, 0.0] ddp DistributedDataParallel" in result.stdout
    assert "rank 1 buffer [1.0, 1.0] ddp DistributedDataParallel" in result.stdout


def test_a_best_epoch_is_serialised_once_and_copied(tmp_path: Any, monkeypatch: Any) -> None:
    """Best file first, then the checkpoint as a byte copy of it; both are durable writes
    (renamed into place, counted by the fault injection)."""
    write_log = tmp_path / "writes.log"
    monkeypatch.setenv(durable.WRITE_LOG_ENV, str(write_log))
    saves = []
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, handle, *a, **kw: (saves.append(1), real_save(obj, handle)))
    paths = RunPaths(str(tmp_path))
    session = SimpleNamespace(paths=paths, identity={}, script="main_imp.py", events=runners.RunEvents())
    plan = SimpleNamespace(tag=lambda run: run.round)
    model = build_model("res20s", 10)
    optimizer = make_optimizer(model, 0.1, 0.9, 1e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [1])
    run = RunState(round=0, schedule=RoundSchedule(2, [1], 0), train_indices=torch.arange(4).numpy(),
                   base_seed=0, rewind_weights=None, epoch=1)
    runners.save_run(session, plan, model, optimizer, scheduler, run, is_best=True)
    assert len(saves) == 1
    with open(paths.best(0), "rb") as best, open(paths.checkpoint(0), "rb") as checkpoint:
        assert best.read() == checkpoint.read()
    assert [line.split("\t")[1] for line in write_log.read_text().splitlines()] == [paths.best(0),
                                                                                   paths.checkpoint(0)]
    runners.save_run(session, plan, model, optimizer, scheduler, run, is_best=False)
    assert len(saves) == 2 and len(write_log.read_text().splitlines()) == 3


def test_default_eval_batch_scales_with_the_pixels_and_workers_with_the_cores(monkeypatch: Any) -> None:
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert runners.default_eval_batch_size(cuda, 32) == 1000 and runners.default_eval_batch_size(cpu, 32) == 128
    assert runners.default_eval_batch_size(cuda, 28) == 1000  # never more than at 32 px
    assert runners.default_eval_batch_size(cuda, 64) == 250
    assert runners.default_eval_batch_size(cuda, 224) == 20
    assert runners.default_eval_batch_size(cpu, 224) == runners.MIN_EVAL_BATCH
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    assert cli.default_workers() == cli.MAX_DEFAULT_WORKERS
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert cli.default_workers() == 7  # 8 cores per process, one of them training
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert cli.default_workers() == 1
