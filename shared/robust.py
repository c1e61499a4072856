"""Robust statistics over a customer's own history (standard library only).

A robust z-score measures how far an amount sits above what is usual for
one customer: the distance from the median of their history, in units of
the scaled median absolute deviation (MAD). Unlike mean and standard
deviation, one earlier outlier barely moves either. analytics flags
anomalies with it; risk scores amount spikes with it.
"""

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

MAD_SCALE = 1.4826  # makes the MAD estimate the standard deviation of normal data


@dataclass(frozen=True)
class RobustScore:
    score: float  # (amount - median) / spread; positive above the median
    median: float
    mad: float
    spread: float  # max(MAD_SCALE * mad, min spread, 1 minor unit)


def median_and_mad(values: Sequence[int]) -> tuple[float, float]:
    middle = statistics.median(values)
    return float(middle), float(statistics.median(abs(v - middle) for v in values))


def robust_score(amount: int, history: Sequence[int], min_spread_percent: int = 10) -> RobustScore:
    """The amount against a non-empty history. The spread never counts as less
    than `min_spread_percent` of the median, so a history of identical
    amounts (MAD 0) flags real jumps, not every cent."""
    if not history:
        raise ValueError("a robust score needs a history")
    middle, mad = median_and_mad(history)
    spread = max(MAD_SCALE * mad, abs(middle) * min_spread_percent / 100, 1.0)
    return RobustScore((amount - middle) / spread, middle, mad, spread)
