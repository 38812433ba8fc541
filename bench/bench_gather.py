"""The per-epoch cost of gathering per-example records across torchrun processes.

    torchrun --standalone --nproc_per_node 2 bench/bench_gather.py [--examples 45000] [--el2n]

Each rank records the examples of its half of an epoch (as training does), then
``RoundStatistics.gather`` merges the epoch's records on every rank. Rank 0 prints the
median wall time of the gather over --repeats epochs, next to the time of one training
epoch it would follow (from --epoch_seconds, e.g. a figure of bench.py) as a ratio.
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import distributed  # noqa: E402
from prac import RoundStatistics  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=45000, help="training examples per epoch (CIFAR: 45,000)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=20, help="epochs gathered")
    parser.add_argument("--el2n", action="store_true", help="record and gather EL2N sums too (--select el2n)")
    parser.add_argument("--epoch_seconds", type=float, default=None,
                        help="a training epoch's seconds on this machine, to print the gather as a fraction of it")
    args = parser.parse_args()
    if not distributed.launched():
        sys.exit("error: run under torchrun, e.g. torchrun --standalone --nproc_per_node 2 bench/bench_gather.py")
    distributed.init_from_env(use_cuda=False)
    generator = torch.Generator().manual_seed(0)
    stats = RoundStatistics.empty(args.repeats, args.examples, torch.device("cpu"),
                                  score_epochs=args.repeats if args.el2n else None)
    order = torch.randperm(args.examples, generator=generator)
    mine = order[distributed.shard(args.examples)]
    times = []
    for epoch in range(args.repeats):
        hook = stats.batch_hook(epoch)
        for begin in range(0, mine.numel(), 128):
            batch = mine[begin:begin + 128]
            hook(batch, torch.randn(batch.numel(), args.classes, generator=generator),
                 torch.randint(args.classes, (batch.numel(),), generator=generator))
        distributed.barrier()  # time the gather alone, not waiting for the slower rank
        start = time.perf_counter()
        stats.gather(epoch)
        times.append(time.perf_counter() - start)
    trained = int((stats.correctness.values >= 0).sum())
    if distributed.is_main():
        median = statistics.median(times)
        line = (f"record gather, {distributed.world()} processes (gloo, {torch.get_num_threads()} thread(s) each), "
                f"{args.examples:,} examples{' + EL2N' if args.el2n else ''}: median {median * 1000:.2f} ms per epoch "
                f"over {args.repeats} epochs (torch {torch.__version__})")
        if args.epoch_seconds:
            line += f"; {100 * median / args.epoch_seconds:.3f}% of a {args.epoch_seconds:.1f} s training epoch"
        print(line)
        assert trained == args.examples * args.repeats, "every example recorded once per epoch after the gather"
    distributed.close()


if __name__ == "__main__":
    main()
