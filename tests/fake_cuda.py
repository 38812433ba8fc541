"""CUDA placement checked on a machine without a GPU.

Inside :func:`fake_cuda`, tensors placed on ``cuda`` are torch's fake tensors (shapes, dtypes
and devices, no data), which raise on an op that mixes devices, as CUDA does. A generator
made with ``torch.Generator(device="cuda")`` reports that device, and every random op that
takes a generator must produce its tensor on the generator's device: the check CUDA makes
("Expected a 'cuda' device type for generator but found 'cpu'") and fake tensors skip.

Limits: values are fake, so code that reads one back (``.item()``, ``int()``, ``tolist()``)
cannot run inside, and ``backward()`` is skipped (the autograd engine needs a real device);
run one step and stop it from the batch hook with :class:`StopStep`.
"""
import contextlib
from typing import Any, Dict, Iterator, Optional, Sequence

import torch
from torch.overrides import TorchFunctionMode

CUDA = torch.device("cuda", 0)


class StopStep(Exception):
    """Raised from a batch hook to end a loop after its first step (before it syncs)."""


def stop_after_step(*_: Any) -> None:
    raise StopStep


class GeneratorDeviceError(RuntimeError):
    pass


class _ClaimedDeviceGenerator(torch.Generator):
    """A CPU generator that says it lives on the device it was asked for (fake tensors
    never draw from it, so its real device does not matter)."""

    def __new__(cls, device: Any = "cpu") -> "_ClaimedDeviceGenerator":
        generator = super().__new__(cls)
        generator._claimed = torch.device(device)
        return generator

    def __init__(self, device: Any = "cpu") -> None:
        super().__init__()

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return self._claimed


class _CheckGenerators(TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Sequence[type], args: Sequence[Any] = (),
                           kwargs: Optional[Dict[str, Any]] = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.Tensor.backward:
            return None
        result = func(*args, **kwargs)
        generator = kwargs.get("generator")
        if generator is not None and isinstance(result, torch.Tensor) \
                and generator.device.type != result.device.type:
            name = getattr(func, "__name__", str(func))
            raise GeneratorDeviceError(f"{name}: a generator on {generator.device} for a tensor on {result.device}")
        return result


def real(make: Any) -> Any:
    """``make()`` outside the fake mode (a model to move onto fake CUDA with ``.to``)."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily
    with unset_fake_temporarily():
        return make()


@contextlib.contextmanager
def fake_cuda(monkeypatch: Any) -> Iterator[torch.device]:
    """Fake CUDA tensors and device-claiming generators until the block ends."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    monkeypatch.setattr(torch, "Generator", _ClaimedDeviceGenerator)
    with FakeTensorMode(allow_non_fake_inputs=True), _CheckGenerators():
        yield CUDA
