"""Statistics of samples-to-target over seeds: median, IQR, and a bootstrap interval of a ratio.

Ten seeds of a search that often never reaches its target give wide
uncertainty; the interval says how wide, so a ratio is not read as more than
the seeds show.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Bootstrap draws and the interval's coverage.
DRAWS = 2000
LEVEL = 0.9


def _filled(counts: Sequence[int | None], budget: int) -> np.ndarray:
    """Counts with every seed that never reached the target set to budget + 1."""
    return np.array([c if c is not None else budget + 1 for c in counts], dtype=float)


def summarise(counts: Sequence[int | None], budget: int) -> dict:
    """Median and IQR of samples-to-target over seeds; a seed that never reached counts as budget+1."""
    q1, med, q3 = np.percentile(_filled(counts, budget), [25, 50, 75])
    return {
        # None when the median seed did not reach the target within the budget.
        "median": float(med) if med <= budget else None,
        "iqr": [float(q1), float(q3)],
        "reached_fraction": sum(c is not None for c in counts) / len(counts),
        "per_seed": list(counts),
    }


def ratio_interval(base: Sequence[int | None], mine: Sequence[int | None], budget: int) -> list[float]:
    """LEVEL bootstrap interval of median(base) / median(mine), seeds resampled together.

    Resampling seed indices jointly keeps paired runs paired (a transfer run
    and its from-scratch twin share a seed) and is the plain bootstrap for
    independent ones. Seeds that never reached count as budget + 1, so a bound
    involving them is itself a bound. Seeded: the same counts give the same interval.
    """
    if len(base) != len(mine) or not base:
        raise ValueError(f"need the same number (> 0) of seeds on each side, not {len(base)} and {len(mine)}")
    from scipy import stats  # here, not at the top: `fnas --help` builds the benchmarks' parsers

    a, b = _filled(base, budget), _filled(mine, budget)
    if len(a) == 1:  # one seed: every resample is that seed
        return [float(a[0] / b[0])] * 2
    result = stats.bootstrap(
        (a, b),
        lambda x, y, axis=-1: np.median(x, axis=axis) / np.median(y, axis=axis),
        paired=True,
        n_resamples=DRAWS,
        confidence_level=LEVEL,
        method="percentile",
        rng=np.random.default_rng(0),
    )
    return [float(result.confidence_interval.low), float(result.confidence_interval.high)]


def ratio(base: dict, mine: dict, budget: int) -> tuple[float | None, list[float]]:
    """median(base) / median(mine) of two `summarise` results (None unless both reached) and its interval."""
    a, b = base["median"], mine["median"]
    return (a / b if a and b else None), ratio_interval(base["per_seed"], mine["per_seed"], budget)
