"""Lottery-ticket finding on Pruning-Aware Critical sets with Early-Bird rounds (PrAC-LTH)."""
from typing import Optional, Sequence

from cli import SEARCH, parse_flags
from runners import RunEvents, run_prac_imp
from utils import run_cli


def main(argv: Optional[Sequence[str]] = None, events: Optional[RunEvents] = None) -> None:
    """``events``: callbacks to follow the run (runners.RunEvents)."""
    run_prac_imp(parse_flags(SEARCH, argv), events)


if __name__ == "__main__":
    run_cli(main)
