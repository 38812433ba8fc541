"""The report's plots: accuracy vs remaining weights, accuracy vs cumulative steps (accuracy
against cost) and the training-set size per round; one line per method, ± std over runs."""
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from reporting.tables import METRIC_TITLES, method_order

PLOT_ACCURACY = "accuracy_vs_weights.png"
PLOT_ACCURACY_STEPS = "accuracy_vs_steps.png"
PLOT_SET_SIZE = "set_size.png"
MOST_TICKS = 12


def _new_axes(title: str, xlabel: str, ylabel: str) -> Tuple[Figure, Axes]:
    """A figure (no pyplot, so no global backend state) with one labelled, gridded axis."""
    figure = Figure(figsize=(8, 5), layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    return figure, axes


def _save(figure: Figure, axes: Axes, path: str) -> None:
    axes.legend(loc="best", fontsize="small")
    figure.savefig(path, dpi=110)


def _band(axes: Axes, xs: Sequence[float], means: Sequence[float], stds: Sequence[Optional[float]],
          index: int, label: str, marker: str, line: str) -> None:
    """A mean line with ± std error bars and, between two or more such points, a band."""
    color = f"C{index % 10}"
    axes.plot(xs, means, marker=marker, linestyle=line, color=color, label=label)
    banded = [(x, m, s) for x, m, s in zip(xs, means, stds) if s is not None]
    if banded:
        axes.errorbar([x for x, _, _ in banded], [m for _, m, _ in banded], yerr=[s for _, _, s in banded],
                      fmt="none", ecolor=color, capsize=3, alpha=0.6)
    if len(banded) > 1:
        axes.fill_between([x for x, _, _ in banded], [m - s for _, m, s in banded],
                          [m + s for _, m, s in banded], color=color, alpha=0.2, linewidth=0)


def write_plots(aggregate: Sequence[Dict[str, Any]], out_dir: str, suffix: str = "", title: str = "") -> List[str]:
    """The three plots of one group's aggregate rows; returns their paths."""
    methods = sorted({row["method"] for row in aggregate}, key=method_order)
    paths = [os.path.join(out_dir, name.replace(".png", f"{suffix}.png"))
             for name in (PLOT_ACCURACY, PLOT_ACCURACY_STEPS, PLOT_SET_SIZE)]
    series = [(name, METRIC_TITLES[key], marker, line) for name, key, marker, line in
              (("retrained_acc", "retrained", "s", "-"), ("search_acc", "search", "o", "--"))
              if any(row[f"{name}_mean"] is not None for row in aggregate)]
    heading = f" — {title}" if title else ""

    def plot_methods(axes: Axes, x: str, shown: Sequence[Tuple[str, str, str, str]]) -> None:
        """Per method, each shown (column, what, marker, line style) against column ``x``."""
        for index, method in enumerate(methods):
            for name, what, marker, line in shown:
                rows = [r for r in aggregate if r["method"] == method and None not in (r[f"{name}_mean"], r[x])]
                if rows:
                    _band(axes, [r[x] for r in rows], [r[f"{name}_mean"] for r in rows],
                          [r[f"{name}_std"] for r in rows], index, f"{method}: {what}" if what else method,
                          marker, line)

    figure, axes = _new_axes(f"Test accuracy vs remaining weights (mean ± std over seeds){heading}",
                             "remaining weights (%, log scale; sparser →)", "test accuracy (%)")
    plot_methods(axes, "remaining_weights", series)
    axes.set_xscale("log")
    densities = sorted({round(r["remaining_weights"], 2) for r in aggregate}, reverse=True)
    ticks = densities[::max(1, -(-len(densities) // MOST_TICKS))]
    axes.xaxis.set_major_locator(FixedLocator(ticks))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.3g}"))
    if len(ticks) > 1:
        axes.set_xlim(max(ticks) * 1.05, min(ticks) / 1.05)  # reversed: denser left, sparser right
    else:
        axes.invert_xaxis()
    _save(figure, axes, paths[0])

    figure, axes = _new_axes(f"Test accuracy vs training cost (mean ± std over seeds){heading}",
                             "cumulative training steps (SGD iterations)", "test accuracy (%)")
    plot_methods(axes, "cumulative_steps_mean", series)
    _save(figure, axes, paths[1])

    figure, axes = _new_axes(f"Training-set size per round (mean ± std over seeds){heading}", "pruning round",
                             "training examples")
    plot_methods(axes, "round", [("train_examples", "", "o", "-")])
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylim(bottom=0)
    _save(figure, axes, paths[2])
    return paths
