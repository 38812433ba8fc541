"""Shared plumbing: errors, the command-line wrapper, logging, devices and seeds."""
import logging
import os
import re
import sys
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

LOG = logging.getLogger("prac_lth")


class UserError(Exception):
    """A problem with the user's input; reported as one line, never as a traceback."""


# torch 2.5 brought torch.serialization.safe_globals, which load_checkpoint needs: on older
# versions every checkpoint load would fail (and read as a corrupt file).
MIN_TORCH = (2, 5)


def check_torch_version(version: Optional[str] = None) -> None:
    """One UserError when torch (or ``version``, e.g. "2.4.1+cu121") is older than MIN_TORCH."""
    version = torch.__version__ if version is None else version
    found = re.match(r"(\d+)\.(\d+)", str(version))
    if found is None or (int(found.group(1)), int(found.group(2))) < MIN_TORCH:
        wanted = ".".join(map(str, MIN_TORCH))
        raise UserError(f"torch {version} is too old: this code needs torch>={wanted} "
                        f"(pip install 'torch>={wanted}' with a matching torchvision)")


def run_cli(main: Callable[[Optional[Sequence[str]]], Any]) -> None:
    """Runs a script's main and turns a UserError into one clear line and exit code 2."""
    try:
        check_torch_version()
        main(None)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint in --save_dir resumes the run "
              "(--resume --checkpoint ...)", file=sys.stderr)
        sys.exit(130)


class _TqdmSafeHandler(logging.Handler):
    """Writes log lines through tqdm so they do not break a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm
        try:
            tqdm.write(self.format(record), file=sys.stdout)
        except Exception:  # a logging handler must never raise
            self.handleError(record)


def setup_logging(save_dir: Optional[str] = None, quiet: bool = False) -> None:
    """Logs to stdout and, when given, to ``save_dir/log.txt``; ``quiet``: warnings only
    (the ranks other than 0 of a distributed run)."""
    LOG.setLevel(logging.WARNING if quiet else logging.INFO)
    for handler in list(LOG.handlers):
        handler.close()
        LOG.removeHandler(handler)
    LOG.propagate = False
    console = _TqdmSafeHandler()
    console.setFormatter(logging.Formatter("%(message)s"))
    LOG.addHandler(console)
    if save_dir is not None:
        to_file = logging.FileHandler(os.path.join(save_dir, "log.txt"))
        to_file.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        LOG.addHandler(to_file)


# ----------------------------------------------------------------------------- devices
def select_device(requested: str, gpu: int) -> torch.device:
    """``auto`` takes CUDA device ``gpu`` when there is one, else the CPU."""
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        if gpu >= torch.cuda.device_count():
            raise UserError(f"--gpu {gpu} does not exist: this machine has "
                            f"{torch.cuda.device_count()} CUDA device(s)")
        torch.cuda.set_device(gpu)
        return torch.device("cuda", gpu)
    if requested == "cuda":
        raise UserError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    return torch.device("cpu")


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{device.index} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


# ----------------------------------------------------------------------------- seeds
def fresh_seed() -> int:
    """A random base seed for an unseeded run (saved so a resume reproduces it)."""
    return int.from_bytes(os.urandom(4), "little")


def derived_seed(base_seed: int, *keys: int) -> int:
    """A seed that is a pure function of the base seed and ``keys`` (round, epoch, ...).

    Every random stream of a run is derived this way, so resuming needs no RNG state.
    """
    return int(np.random.SeedSequence([base_seed, *keys]).generate_state(1, dtype=np.uint64)[0] >> 1)


def make_generator(device: torch.device, base_seed: int, *keys: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derived_seed(base_seed, *keys))


# Stream tags for derived seeds, so two uses never share a stream. (1 is unused: the model's
# initialisation draws from torch's global RNG seeded as the published setup_seed does.)
STREAM_TRAIN, STREAM_RANDOM_PRUNE, STREAM_SELECT = 2, 3, 4
STREAM_RANDOM_MASK = 5  # main_train.py --random_mask: the control's mask
