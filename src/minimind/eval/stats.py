"""A figure with its 95% bootstrap confidence interval."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Estimate:
    value: float          # the mean over items
    low: float            # 2.5th percentile of the bootstrap means
    high: float           # 97.5th percentile
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def estimate(values, weights=None, resamples: int = 1000, seed: int = 0) -> Estimate:
    """Σ values / Σ weights over items (weights 1: the mean, e.g. accuracy from 0/1 scores; bytes: bits per
    byte from per-document bits) with a percentile bootstrap over items: `resamples` draws of n items with
    replacement; the interval is the 2.5th–97.5th percentile of their ratios. Seeded: the same scores give the
    same interval."""
    x = np.asarray(values, dtype=np.float64)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)
    if x.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    draws = np.random.default_rng(seed).integers(0, x.size, size=(resamples, x.size))
    low, high = np.percentile(x[draws].sum(axis=1) / w[draws].sum(axis=1), [2.5, 97.5])
    return Estimate(float(x.sum() / w.sum()), float(low), float(high), int(x.size))
