"""mean ± std, paired and unpaired differences with two-sided 95% Student-t intervals, cost ratios."""
import math
from dataclasses import dataclass
from statistics import mean, stdev
from typing import Any, Dict, Optional, Sequence

# Two-sided 95% Student-t quantiles t(0.975; df) for df = 1..30; above 30 the normal 1.96.
T_975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
NORMAL_975 = 1.96

SeedKey = Any  # a run's seed (int), or its path (str) when it ran unseeded: it pairs with nothing


def t_quantile_975(df: int) -> float:
    """t(0.975; df), the factor of a two-sided 95% interval; 1.96 for df > 30."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    return T_975[df - 1] if df <= len(T_975) else NORMAL_975


@dataclass(frozen=True)
class Stat:
    """n, mean and sample standard deviation (None below two values) of some numbers."""

    n: int
    mean: Optional[float]
    std: Optional[float]

    def text(self, decimals: int = 2, show_n: bool = True) -> str:
        """'81.20 ± 0.40 (3)'; '' when there is no value."""
        if self.mean is None:
            return ""
        text = f"{self.mean:,.{decimals}f}" + (f" ± {self.std:,.{decimals}f}" if self.std is not None else "")
        return text + (f" ({self.n})" if show_n else "")


def describe(values: Sequence[float]) -> Stat:
    values = [float(v) for v in values]
    return Stat(n=len(values), mean=mean(values) if values else None,
                std=stdev(values) if len(values) > 1 else None)


def signed(value: float, decimals: int = 2) -> str:
    """'+0.60' / '−1.20' (a true minus sign, for text; CSVs keep plain numbers)."""
    return f"{value:+.{decimals}f}".replace("-", "−")


@dataclass(frozen=True)
class Difference:
    """mean(a − b) with its two-sided 95% t-interval (None when unknown)."""

    paired: bool
    n: int                          # pairs (paired), else runs of a
    n_reference: int                # pairs (paired), else runs of b
    mean: float
    low: Optional[float]
    high: Optional[float]

    def interval_text(self) -> str:
        if self.low is None or self.high is None:
            seeds = self.n if self.paired else min(self.n, self.n_reference)  # < 2 here
            return f"interval unknown ({seeds} seed)"
        return f"95% CI {signed(self.low)} to {signed(self.high)}"

    def n_text(self) -> str:
        return (f"n={self.n} seed{'s' if self.n != 1 else ''}, paired by seed" if self.paired else
                f"n={self.n} vs {self.n_reference} runs, unpaired")

    def sentence(self, what: str) -> str:
        """'−1.00 points of WHAT (95% CI −3.48 to +1.48, n=3 seeds, paired by seed)'."""
        return f"{signed(self.mean)} points{f' of {what}' if what else ''} ({self.interval_text()}, {self.n_text()})"


def difference(a: Dict[SeedKey, float], b: Dict[SeedKey, float]) -> Difference:
    """mean(a − b) over the seeds both have (paired), or, when fewer than two seeds are
    shared (and not one each of the same seed), the difference of means with Welch's
    interval (unpaired). The interval is mean ± t(0.975; df)·standard error."""
    common = [key for key in a if key in b and not isinstance(key, str)]
    if len(common) >= 2 or (len(common) == 1 and len(a) == len(b) == 1):
        diffs = [a[key] - b[key] for key in common]
        center = mean(diffs)
        if len(diffs) < 2:
            return Difference(True, len(diffs), len(diffs), center, None, None)
        half = t_quantile_975(len(diffs) - 1) * stdev(diffs) / math.sqrt(len(diffs))
        return Difference(True, len(diffs), len(diffs), center, center - half, center + half)
    center = mean(a.values()) - mean(b.values())
    if len(a) < 2 or len(b) < 2:
        return Difference(False, len(a), len(b), center, None, None)
    var_a, var_b = stdev(a.values()) ** 2 / len(a), stdev(b.values()) ** 2 / len(b)
    if var_a + var_b == 0:
        return Difference(False, len(a), len(b), center, center, center)
    df = (var_a + var_b) ** 2 / (var_a ** 2 / (len(a) - 1) + var_b ** 2 / (len(b) - 1))
    half = t_quantile_975(max(1, int(df))) * math.sqrt(var_a + var_b)  # df rounded down: wider
    return Difference(False, len(a), len(b), center, center - half, center + half)


def cost_ratio(a: Dict[SeedKey, float], b: Dict[SeedKey, float]) -> Stat:
    """a's cumulative steps in % of b's, per seed of a (against b's run of the same seed,
    else b's mean), then mean ± std over a's seeds."""
    if not b:
        return describe([])
    reference = mean(b.values())
    return describe([100.0 * steps / b.get(key, reference) for key, steps in a.items()
                     if b.get(key, reference) > 0])
