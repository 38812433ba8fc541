"""Several processes under ``torchrun``: the process group, which rank does what, and the
few collectives the loops need. Without torchrun (no WORLD_SIZE > 1 in the environment)
every function here is the single-process identity, so the plain path does not change.

Ranks split each global batch, shard evaluation, and gather per-example records, so every
rank holds the same run state; rank 0 alone writes files.
"""
import os
from typing import Any, List

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

TRACE_ENV = "PRAC_LTH_TRACE"  # a folder: each rank saves what it trained and recorded there (tests)


def world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """True in a process started by torchrun with more than one process in all."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_env(use_cuda: bool) -> None:
    """Joins torchrun's process group (NCCL on GPUs, gloo on CPUs); a no-op without torchrun
    or when already joined. Reads MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE from the env."""
    if not launched() or dist.is_initialized():
        return
    if use_cuda:
        # Bound to this rank's GPU: NCCL then connects eagerly to the right device, and no
        # collective (barrier included) guesses the device from the rank number.
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl", device_id=device)
    else:
        dist.init_process_group(backend="gloo")


def close() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if world() > 1:
        dist.barrier(device_ids=[local_rank()] if dist.get_backend() == "nccl" else None)


def shard(count: int) -> slice:
    """This rank's contiguous share of ``count`` positions: sizes differ by at most one, the
    later ranks take the larger shares, and every rank gets one when ``count >= world``."""
    return slice(count * rank() // world(), count * (rank() + 1) // world())


def all_gather_concat(tensor: torch.Tensor) -> torch.Tensor:
    """The ranks' shards (first dimension may differ) concatenated in rank order, on every rank."""
    if world() == 1:
        return tensor
    length = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=tensor.device)
    lengths = [torch.empty_like(length) for _ in range(world())]
    dist.all_gather(lengths, length)
    sizes = [int(n) for n in lengths]
    padded = torch.zeros((max(sizes), *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[:tensor.shape[0]] = tensor
    gathered = [torch.empty_like(padded) for _ in range(world())]
    dist.all_gather(gathered, padded)
    return torch.cat([part[:size] for part, size in zip(gathered, sizes)])


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In place; ``op`` is sum or max. Every rank gets the same bits back."""
    if world() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    if world() == 1:
        return value
    box: List[Any] = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sync_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (batch-norm running statistics, masks) on every rank: DDP
    broadcasts them before each forward, so after the last step of an epoch the ranks'
    own updates differ until this."""
    if world() > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def assert_same(values: torch.Tensor, what: str) -> None:
    """Checks that ``values`` (a small tensor) is the same on every rank: cheap, one all-reduce
    of the values and one of their negation."""
    if world() == 1:
        return
    values = values.detach().double().reshape(-1)
    largest = all_reduce(values.clone(), "max")
    smallest = -all_reduce(-values, "max")
    if not torch.equal(largest, smallest):
        raise RuntimeError(f"{what} differs between ranks; the ranks' models have diverged")


def trace(name: str, value: Any) -> None:
    """With ``PRAC_LTH_TRACE=folder``: saves ``value`` as ``folder/{name}.rank{r}.npy`` (the
    test of the distributed run compares what the ranks trained, recorded and selected)."""
    folder = os.environ.get(TRACE_ENV, "")
    if not folder:
        return
    os.makedirs(folder, exist_ok=True)
    array = value.detach().cpu().numpy() if torch.is_tensor(value) else np.asarray(value)
    np.save(os.path.join(folder, f"{name}.rank{rank()}.npy"), array)

