"""Vanilla iterative magnitude pruning (lottery tickets, rewinding, pruning then fine-tuning)."""
import argparse
from typing import Optional, Sequence

from cli import IMP, config_from_args
from cli import build_parser as build_script_parser
from runners import RunEvents, run_imp
from utils import run_cli


def build_parser() -> argparse.ArgumentParser:
    return build_script_parser(IMP, "Iterative magnitude pruning (IMP)")


def main(argv: Optional[Sequence[str]] = None, events: Optional[RunEvents] = None) -> None:
    """``events``: callbacks to follow the run (runners.RunEvents)."""
    run_imp(config_from_args(build_parser().parse_args(argv)), events)


if __name__ == "__main__":
    run_cli(main)
