"""Lottery-ticket finding on Pruning-Aware Critical sets with Early-Bird rounds (PrAC-LTH)."""
import argparse
from typing import Optional, Sequence

from cli import SEARCH, config_from_args
from cli import build_parser as build_script_parser
from runners import RunEvents, run_prac_imp
from utils import UserError, run_cli


def build_parser() -> argparse.ArgumentParser:
    return build_script_parser(SEARCH, "PrAC ticket finding")


def main(argv: Optional[Sequence[str]] = None, events: Optional[RunEvents] = None) -> None:
    """``events``: callbacks to follow the run (runners.RunEvents)."""
    args = build_parser().parse_args(argv)
    if args.split_file is None:
        raise UserError("main_PrAC_imp.py needs --split_file, e.g. npy_files/cifar10-train-val.npy")
    run_prac_imp(config_from_args(args), events)


if __name__ == "__main__":
    run_cli(main)
