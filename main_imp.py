"""Vanilla iterative magnitude pruning (lottery tickets, rewinding, pruning then fine-tuning)."""
from typing import Optional, Sequence

from cli import IMP, parse_flags
from runners import RunEvents, run_imp
from utils import run_cli


def main(argv: Optional[Sequence[str]] = None, events: Optional[RunEvents] = None) -> None:
    """``events``: callbacks to follow the run (runners.RunEvents)."""
    run_imp(parse_flags(IMP, argv), events)


if __name__ == "__main__":
    run_cli(main)
