"""Mean, spread and paired 95 % intervals over seeds: the statistics behind ``lgvq compare``.

A difference between two arms counts only when it holds across seeds. Both arms are trained with
the same seeds, so the test is paired: ``d_s = a_s - b_s`` per seed, and the difference is real
when the 95 % Student-t interval of the mean of ``d`` excludes 0. With one seed there is no
interval and nothing is ever called a winner. Pure Python (no torch, no scipy).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

#: Two-sided confidence level of every interval in the comparison table.
CONFIDENCE = 0.95


def _t_two_sided_mass(t: float, dof: int) -> float:
    """P(|T| < t) for Student's t with ``dof`` degrees of freedom (closed form for integer dof).

    The finite series of Abramowitz & Stegun 26.7.3-4 in theta = atan(t / sqrt(dof)).
    """
    theta = math.atan(t / math.sqrt(dof))
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    if dof % 2 == 1:
        series, term = 0.0, 1.0
        for k in range(1, (dof - 1) // 2 + 1):  # 1 + 2/3 c^2 + (2*4)/(3*5) c^4 + ...
            if k > 1:
                term *= cos2 * (2 * (k - 1)) / (2 * (k - 1) + 1)
            series += term
        return 2 / math.pi * (theta + sin * math.cos(theta) * series) if dof > 1 else 2 * theta / math.pi
    series, term = 1.0, 1.0
    for k in range(1, (dof - 2) // 2 + 1):  # 1 + 1/2 c^2 + (1*3)/(2*4) c^4 + ...
        term *= cos2 * (2 * k - 1) / (2 * k)
        series += term
    return sin * series


def t_quantile(dof: int, confidence: float = CONFIDENCE) -> float:
    """The t with P(|T| < t) = ``confidence`` (e.g. 12.706 for 1 dof, 4.303 for 2), by bisection."""
    if dof < 1:
        raise ValueError(f"a t interval needs at least 1 degree of freedom, got {dof}")
    low, high = 0.0, 1.0
    while _t_two_sided_mass(high, dof) < confidence:
        high *= 2
    for _ in range(100):
        middle = (low + high) / 2
        if _t_two_sided_mass(middle, dof) < confidence:
            low = middle
        else:
            high = middle
    return (low + high) / 2


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation (n - 1) of one arm's per-seed values."""

    mean: float
    std: float | None  # None with a single value
    count: int


def spread(values: Sequence[float]) -> Spread:
    if not values:
        raise ValueError("spread of no values")
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    return Spread(mean, std, len(values))


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` paired by seed: its mean, its 95 % t-interval and whether that interval excludes 0."""

    mean: float
    low: float | None  # None with fewer than two pairs: no interval
    high: float | None
    count: int

    @property
    def holds(self) -> bool:
        """True when the interval excludes 0: the difference is larger than the seed-to-seed noise."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)

    @property
    def verdict(self) -> str:
        if self.mean == 0 and (self.count < 2 or self.low == self.high == 0):
            return "equal"
        if self.count < 2:
            return "one seed: no interval"
        return "holds" if self.holds else "within noise"


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> PairedDifference:
    """The seed-paired difference ``a - b`` (``a[i]`` and ``b[i]`` come from the same seed)."""
    if len(a) != len(b):
        raise ValueError(f"paired values need the same seeds, got {len(a)} and {len(b)} values")
    if not a:
        raise ValueError("paired difference of no values")
    differences = [x - y for x, y in zip(a, b, strict=True)]
    mean = statistics.fmean(differences)
    if len(differences) < 2:
        return PairedDifference(mean, None, None, len(differences))
    half = t_quantile(len(differences) - 1, confidence) * statistics.stdev(differences) / math.sqrt(len(differences))
    return PairedDifference(mean, mean - half, mean + half, len(differences))
