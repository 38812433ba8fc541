"""Vanilla iterative magnitude pruning (lottery tickets, rewinding, pruning then fine-tuning)."""
import argparse
from typing import Optional, Sequence

from cli import add_common_args, add_pruning_args, add_resume_args, config_from_args
from runners import run_imp
from utils import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Iterative magnitude pruning (IMP)")
    add_common_args(parser, lr_default=0.01)
    add_resume_args(parser)
    add_pruning_args(parser, prune_types=["lt", "pt", "rewind_lt"], random_prune=True)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_imp(config_from_args(build_parser().parse_args(argv)))


if __name__ == "__main__":
    run_cli(main)
