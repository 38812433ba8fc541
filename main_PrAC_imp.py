"""Lottery-ticket finding on Pruning-Aware Critical sets with Early-Bird rounds (PrAC-LTH)."""
import argparse
from typing import Optional, Sequence

from cli import add_common_args, add_prac_args, add_pruning_args, add_resume_args, config_from_args
from runners import run_prac_imp
from utils import UserError, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="PrAC ticket finding")
    add_common_args(parser, lr_default=0.1, split_file_required=True)
    add_resume_args(parser)
    add_pruning_args(parser, prune_types=["lt", "rewind_lt"], random_prune=False)
    add_prac_args(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    if args.split_file is None:
        raise UserError("main_PrAC_imp.py needs --split_file, e.g. npy_files/cifar10-train-val.npy")
    run_prac_imp(config_from_args(args))


if __name__ == "__main__":
    run_cli(main)
