"""Paired statistics against unsteered: the same prompts (or documents) resampled jointly, so their difficulty
cancels; bootstrap 95 % intervals, 2,000 resamples, a fixed seed. Plain arrays in, numbers out (no file reading)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

ITERS = 2000
PAIRED_KEYS = ("toxicity_prob", "toxic_fraction", "expected_max_toxicity")
PAIRED_RETENTION = {"piqa_local": ("acc", "PIQA"), "hellaswag_local": ("acc_norm", "HellaSwag")}  # per-doc 0/1


def bootstrap_ci(values: np.ndarray, iters: int = ITERS, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (iters, len(values)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def paired_bootstrap(base: np.ndarray, other: np.ndarray, statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
                     iters: int = ITERS, seed: int = 0) -> tuple[float, float, float]:
    """`statistic(mean-able base rows, other rows)` on the data and its 95 % interval over joint resamples of the
    pairs: (value, lo, hi). `statistic` takes [resamples, n] arrays and reduces the last axis."""
    pick = np.random.default_rng(seed).integers(0, len(base), (iters, len(base)))
    resampled = statistic(base[pick], other[pick])
    return (float(statistic(base[None], other[None])[0]), float(np.percentile(resampled, 2.5)),
            float(np.percentile(resampled, 97.5)))


def paired_reduction(base: dict[int, dict], other: dict[int, dict], key: str, iters: int = ITERS,
                     seed: int = 0) -> dict[str, float]:
    """Reduction factor mean(base) / mean(other) over the prompts both runs scored, with a paired bootstrap 95 %
    interval, and the same for the difference mean(other) - mean(base)."""
    ids = sorted(base.keys() & other.keys())
    b = np.array([base[i][key] for i in ids])
    o = np.array([other[i][key] for i in ids])
    ratio = paired_bootstrap(b, o, lambda x, y: x.mean(-1) / np.maximum(y.mean(-1), 1e-12), iters, seed)
    diff = paired_bootstrap(b, o, lambda x, y: y.mean(-1) - x.mean(-1), iters, seed)
    return {"n": len(ids), "ratio": ratio[0], "ratio_lo": ratio[1], "ratio_hi": ratio[2],
            "diff": diff[0], "diff_lo": diff[1], "diff_hi": diff[2]}
