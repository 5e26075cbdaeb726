"""95% intervals over seeds: a mean's, a paired difference's, and whether two intervals overlap.

Pure arithmetic (scipy's t quantile only): the seed repeats, the ablation and the report all use it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """``mean ± half_width``: a 95% t-interval over ``n`` values (half_width NaN for one value)."""

    mean: float
    half_width: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly on one side of 0 (False when it has no width: one value)."""
        return math.isfinite(self.half_width) and (self.low > 0 or self.high < 0)


def t_interval(values: Sequence[float]) -> Interval:
    """mean ± t_{0.975, n-1} · s / sqrt(n), s the sample standard deviation (Student's t-interval)."""
    from scipy import stats

    n = len(values)
    if n == 0:
        raise ValueError("an interval needs at least one value")
    mean = statistics.fmean(values)
    if n == 1:
        return Interval(mean, math.nan, 1)
    half = float(stats.t.ppf(0.5 + LEVEL / 2, n - 1)) * statistics.stdev(values) / math.sqrt(n)
    return Interval(mean, half, n)


def paired_difference(a: Sequence[float], b: Sequence[float]) -> Interval:
    """The t-interval of the per-seed differences a_i - b_i (the two arms ran with the same seeds, so
    seed-to-seed variation common to both cancels)."""
    if len(a) != len(b):
        raise ValueError(f"paired values need the same seeds on both sides, got {len(a)} and {len(b)}")
    return t_interval([x - y for x, y in zip(a, b)])


def within_noise(a: Interval, b: Interval) -> bool:
    """Whether two members' intervals overlap, so their difference may be seed noise (an interval
    without width, from one seed, is never told apart: True)."""
    if not (math.isfinite(a.half_width) and math.isfinite(b.half_width)):
        return True
    return a.low <= b.high and b.low <= a.high
