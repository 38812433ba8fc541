"""Where a run keeps its files: the published file names of a --save_dir."""
import functools
import os
import re
from dataclasses import dataclass
from typing import Optional

CHECKPOINT_NAME = re.compile(r"^(\d*)checkpoint\.pth\.tar$")

# A round's files carry its number in front ({k}checkpoint.pth.tar), main_train.py's none.
ROUND_FILES = {"checkpoint": "checkpoint.pth.tar", "best": "model_SA_best.pth.tar", "curves": "net_train.png",
               "prac_set": "prac_set.npy"}
# The run's files that are not per round.
RUN_FILES = {"epochs_csv": "epochs.csv", "rounds_csv": "rounds.csv", "layers_csv": "layers.csv",
             "layers_plot": "layers.png", "run_info": "args.json"}


@dataclass(frozen=True)
class RunPaths:
    """Every file a run writes, named as the published scripts name them: ``paths.epochs_csv``
    (RUN_FILES), ``paths.checkpoint(k)`` (ROUND_FILES)."""

    save_dir: str

    def __post_init__(self) -> None:
        for attribute, name in RUN_FILES.items():
            object.__setattr__(self, attribute, self._join(name))

    def _join(self, name: str) -> str:
        return os.path.join(self.save_dir, name)

    def round_file(self, kind: str, state: Optional[int] = None) -> str:
        return self._join(f"{'' if state is None else state}{ROUND_FILES[kind]}")

    checkpoint = functools.partialmethod(round_file, "checkpoint")
    best = functools.partialmethod(round_file, "best")
    curves = functools.partialmethod(round_file, "curves")
    prac_set = functools.partialmethod(round_file, "prac_set")

    def rewind_weight(self, rewind_epoch: int) -> str:
        return self._join(f"epoch_{rewind_epoch + 1}_rewind_weight.pt")

    def final_ticket(self) -> str:
        return self._join("final_ticket.pth.tar")

    def newest_checkpoint(self) -> Optional[str]:
        """The checkpoint a resume continues from: the highest round's ``{k}checkpoint.pth.tar``
        (main_train.py's plain ``checkpoint.pth.tar``), or None when there is none."""
        names = os.listdir(self.save_dir) if os.path.isdir(self.save_dir) else []
        # main_train.py's checkpoint (no round number) counts as round -1
        rounds = [int(match.group(1) or -1) for match in map(CHECKPOINT_NAME.match, names) if match]
        if not rounds:
            return None
        newest = max(rounds)
        return self.checkpoint(None if newest < 0 else newest)
