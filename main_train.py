"""Retrain a ticket: initial weights from --init_dir, mask from --mask_dir."""
from typing import Optional, Sequence

from cli import RETRAIN, parse_flags
from runners import RunEvents, run_retrain
from utils import run_cli


def main(argv: Optional[Sequence[str]] = None, events: Optional[RunEvents] = None) -> None:
    """``events``: callbacks to follow the run (runners.RunEvents)."""
    run_retrain(parse_flags(RETRAIN, argv), events)


if __name__ == "__main__":
    run_cli(main)
