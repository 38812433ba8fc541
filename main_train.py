"""Retrain a ticket: initial weights from --init_dir, mask from --mask_dir."""
import argparse
from typing import Optional, Sequence

from cli import RETRAIN, config_from_args
from cli import build_parser as build_script_parser
from runners import RunEvents, run_retrain
from utils import run_cli


def build_parser() -> argparse.ArgumentParser:
    return build_script_parser(RETRAIN, "Retrain a lottery ticket")


def main(argv: Optional[Sequence[str]] = None, events: Optional[RunEvents] = None) -> None:
    """``events``: callbacks to follow the run (runners.RunEvents)."""
    run_retrain(config_from_args(build_parser().parse_args(argv)), events)


if __name__ == "__main__":
    run_cli(main)
