"""Checkpoint IO failure paths end in one line: a genuinely full disk (a real small tmpfs)
and a raw-pickle checkpoint that carries code."""
import os
import pickle
import subprocess
import sys
from typing import Any, Iterator

import pytest
import torch

from checkpoint import load_checkpoint
from tests.conftest import REPO, run_script, tiny_args
from utils import UserError

# The tiny main_train.py run writes a 2.2 MB checkpoint before training, then per epoch a
# 3.3 MB best model (when validation improves) and a 3.3 MB checkpoint through a temporary
# file beside the old one: epoch 1 peaks at 8.9 MB, epoch 2 needs 10 MB. This disk holds the
# first and not the second.
DISK_SIZE = "9500k"


@pytest.fixture
def small_disk(tmp_path: Any) -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    folder = str(tmp_path / "disk")
    os.makedirs(folder)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", folder],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", folder], check=True)


def test_full_disk_is_one_line_and_keeps_the_previous_checkpoint(small_disk: str, cifar10_dir: str) -> None:
    save_dir = os.path.join(small_disk, "run")
    result = run_script("main_train.py", tiny_args(cifar10_dir, save_dir, "--epochs", "2"))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot write " + save_dir) and "No space left on device" in lines[0]
    assert "free space" in lines[0] and "--resume" in lines[0] and "intact" in lines[0]
    kept = load_checkpoint(os.path.join(save_dir, "checkpoint.pth.tar"))
    assert kept["epoch"] == 1 and len(kept["result"]["test_ta"]) == 1  # epoch 1's, whole
    assert not [name for name in os.listdir(save_dir) if name.startswith(".tmp-")]


class Shell:
    """Unpickling this runs a shell command."""

    def __reduce__(self) -> Any:
        return (os.system, ("echo unpickled",))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_raw_pickle_carrying_code_is_refused_as_code(tmp_path: Any, protocol: int) -> None:
    path = str(tmp_path / "raw.pth.tar")
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": {"w": torch.zeros(2)}, "extra": Shell()}, handle, protocol=protocol)
    with pytest.raises(UserError) as info:
        load_checkpoint(path, "--mask_dir")
    message = str(info.value)
    assert "carries code or objects that the safe loader refuses" in message and "system" in message
    assert "corrupt" not in message and "--trust_checkpoints" in message

    # from the command line: the one error line and nothing else (no torch warning)
    result = subprocess.run([sys.executable, "-c", "import sys; from checkpoint import load_checkpoint; "
                             "from utils import run_cli; "
                             "run_cli(lambda argv: load_checkpoint(sys.argv[1], '--mask_dir'))", path],
                            capture_output=True, text=True, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: --mask_dir") and "carries code" in line


def test_raw_pickle_of_plain_data_is_not_called_code(tmp_path: Any) -> None:
    path = str(tmp_path / "legacy.pth.tar")
    torch.save({"state_dict": {"w": torch.ones(3)}}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.ones(3))
