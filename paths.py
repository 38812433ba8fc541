"""Where a run keeps its files: the published file names of a --save_dir."""
import os
import re
from dataclasses import dataclass
from typing import Optional

# ----------------------------------------------------------------------------- file names
CHECKPOINT_NAME = re.compile(r"^(\d*)checkpoint\.pth\.tar$")

@dataclass(frozen=True)
class RunPaths:
    """Every file a run writes, named as the published scripts name them."""

    save_dir: str

    def _join(self, name: str) -> str:
        return os.path.join(self.save_dir, name)

    def checkpoint(self, state: Optional[int] = None) -> str:
        return self._join(f"{'' if state is None else state}checkpoint.pth.tar")

    def best(self, state: Optional[int] = None) -> str:
        return self._join(f"{'' if state is None else state}model_SA_best.pth.tar")

    def rewind_weight(self, rewind_epoch: int) -> str:
        return self._join(f"epoch_{rewind_epoch + 1}_rewind_weight.pt")

    def curves(self, state: Optional[int] = None) -> str:
        return self._join(f"{'' if state is None else state}net_train.png")

    def final_ticket(self) -> str:
        return self._join("final_ticket.pth.tar")

    def prac_set(self, state: int) -> str:
        return self._join(f"{state}prac_set.npy")

    def newest_checkpoint(self) -> Optional[str]:
        """The checkpoint a resume continues from: the highest round's ``{k}checkpoint.pth.tar``
        (main_train.py's plain ``checkpoint.pth.tar``), or None when there is none."""
        if not os.path.isdir(self.save_dir):
            return None
        rounds = []
        for name in os.listdir(self.save_dir):
            match = CHECKPOINT_NAME.match(name)
            if match:
                rounds.append(int(match.group(1)) if match.group(1) else -1)
        if not rounds:
            return None
        newest = max(rounds)
        return self.checkpoint(None if newest < 0 else newest)

    @property
    def epochs_csv(self) -> str:
        return self._join("epochs.csv")

    @property
    def rounds_csv(self) -> str:
        return self._join("rounds.csv")

    @property
    def layers_csv(self) -> str:
        return self._join("layers.csv")

    @property
    def layers_plot(self) -> str:
        return self._join("layers.png")

    @property
    def run_info(self) -> str:
        return self._join("args.json")
