"""Bootstrap intervals of per-user metrics: one method's mean, and two methods' difference.

Used by the pipeline's report (``cluster.comparison.intervals``) so verdicts say "better" only when
the interval of the difference excludes 0.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from training.evaluation.metrics import MetricInputError


def _finite_1d(values: npt.ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise MetricInputError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise MetricInputError(f"{name}: {int((~np.isfinite(arr)).sum())} non-finite value(s)")
    return arr


def bootstrap_ci(values: npt.ArrayLike, n_boot: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float]:
    """Percentile-bootstrap ``1 - alpha`` interval of the mean of ``values`` (e.g. per-user
    NDCG): the ``alpha/2`` and ``1 - alpha/2`` quantiles of the means of ``n_boot`` resamples
    (with replacement, same size) drawn with ``numpy.random.default_rng(seed)``.

    Constant values give the zero-width interval at the value; no values give (NaN, NaN).
    Values must be finite (drop undefined users first).
    """
    arr = _finite_1d(values, "values")
    if n_boot < 1:
        raise MetricInputError(f"n_boot: must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise MetricInputError(f"alpha: must be in (0, 1), got {alpha}")
    if arr.size == 0:
        return float("nan"), float("nan")
    if arr.min() == arr.max():  # exact, where resampled means could differ in the last bit
        return float(arr[0]), float(arr[0])
    rng = np.random.default_rng(seed)
    chunk = max(1, 2**21 // arr.size)  # bounds the (resamples, n) index matrix
    means = np.concatenate([
        arr[rng.integers(0, arr.size, size=(min(chunk, n_boot - start), arr.size))].mean(axis=1)
        for start in range(0, n_boot, chunk)])
    lo, hi = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def paired_bootstrap_diff(a: npt.ArrayLike, b: npt.ArrayLike, n_boot: int = 1000,
                          seed: int = 0, alpha: float = 0.05) -> tuple[float, float, float]:
    """(mean of ``a - b``, its percentile-bootstrap interval) for two methods' per-user values
    on the same users in the same order: users are resampled as pairs, so what the users
    share (easy or hard users) cancels out. Identical inputs give (0, 0, 0); an interval that
    excludes 0 says the methods differ at level ``alpha``."""
    x, y = _finite_1d(a, "a"), _finite_1d(b, "b")
    if x.shape != y.shape:
        raise MetricInputError(f"a/b: lengths differ ({x.size} vs {y.size}); pair the same users")
    diff = x - y
    lo, hi = bootstrap_ci(diff, n_boot, seed, alpha)
    return (float(np.mean(diff)) if diff.size else float("nan")), lo, hi
