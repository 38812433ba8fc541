"""Retrain a ticket: initial weights from --init_dir, mask from --mask_dir."""
import argparse
from typing import Optional, Sequence

from cli import add_common_args, add_resume_args, add_retrain_args, config_from_args
from runners import run_retrain
from utils import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Retrain a lottery ticket")
    add_common_args(parser, lr_default=0.1)
    add_resume_args(parser)
    add_retrain_args(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_retrain(config_from_args(build_parser().parse_args(argv)))


if __name__ == "__main__":
    run_cli(main)
