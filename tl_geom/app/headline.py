"""The honest headline of a run: the smallest non-trivial N first (N = 1 is perfect for any subset).

For N in (2, 4) (else the smallest N >= 2 of the grid): the mean over heads of the F1
gap ``F1(top-N) - F1(random N-subsets)``, the share of heads where top-N is ahead,
and a bootstrap interval over windows (:func:`window_interval`) of the per-window gaps
that :func:`tl_geom.jobs.aggregate.aggregate` keeps in ``run.json`` (``window_gaps``:
per window and N, the mean over heads of that window's gap). Windows are the unit:
heads of one window share its text, so they are not independent draws.

Runs made before ``window_gaps`` was kept fall back to ``gap +- 1.96 SE`` with the
conservative ``SE = mean_heads(sd_gap) / sqrt(W - 1)`` [ours], ``sd_gap`` the SD over
windows of each head's gap (``metrics.csv``'s ``f1_gap_std_random``).
"""

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats  # pyright: ignore[reportMissingTypeStubs]

from tl_geom.app.columns import column

__all__ = ["headline", "headline_ns", "window_interval"]


def headline_ns(ns: list[int]) -> list[int]:
    """N = 2 and 4 where in the grid, else the smallest N >= 2 (else the smallest N).

    >>> headline_ns([1, 2, 4, 8]), headline_ns([1, 3, 9]), headline_ns([1])
    ([2, 4], [3], [1])
    """
    wanted = [n for n in (2, 4) if n in ns]
    return wanted or [n for n in sorted(ns) if n >= 2][:1] or sorted(ns)[:1]


def window_interval(
    gaps: np.ndarray, *, draws: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Bootstrap interval of the mean over windows of the per-window ``gaps`` ``[W]``.

    The percentile interval of the mean over ``draws`` resamples of the W windows
    (with replacement, ``seed``), widened about the sample mean ``m`` by
    ``c = t_{W-1, (1+level)/2} / z_{(1+level)/2} * sqrt(W / (W - 1))`` [ours]: the
    percentile bootstrap of a mean has the width of a normal interval with the biased SD
    ``sqrt((W-1)/W) s``, which under-covers with few windows; ``c`` gives it the width
    of Student's t interval (exact for normal data) and keeps the bootstrap's asymmetry.
    ``c -> 1`` as W grows. Non-finite windows are dropped; (nan, nan) below 2 windows.

    >>> lo, hi = window_interval(np.array([0.1, 0.3, 0.2, 0.4, 0.25, 0.35]))
    >>> bool(lo < 0.2667 < hi)
    True
    """
    g = np.asarray(gaps, dtype=np.float64)
    g = g[np.isfinite(g)]
    w = g.size
    if w < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = g[rng.integers(0, w, (draws, w))].mean(1)
    q = (1 - level) / 2
    lo, hi = np.quantile(means, [q, 1 - q])
    widen = float(stats.t.ppf(1 - q, w - 1) / stats.norm.ppf(1 - q)) * math.sqrt(w / (w - 1))
    m = float(g.mean())
    return m - widen * (m - float(lo)), m + widen * (float(hi) - m)


def _per_window(window_gaps: Mapping[str, Any] | None, n: int) -> np.ndarray | None:
    """The per-window gaps at N = ``n`` from ``run.json``'s ``window_gaps``, if kept."""
    if not isinstance(window_gaps, Mapping) or n not in list(window_gaps.get("n", [])):
        return None
    k = list(window_gaps["n"]).index(n)
    return np.asarray([row[k] for row in window_gaps.get("gap", [])], dtype=np.float64)


def headline(metrics: pd.DataFrame, window_gaps: Mapping[str, Any] | None = None) -> list[str]:
    """One sentence per headline N (:func:`headline_ns`); empty without a baseline.

    ``window_gaps``: ``run.json``'s record of the per-window gaps; the interval is the
    bootstrap over them (:func:`window_interval`), or the SD fallback without them.
    """
    ns_all, random_all = column(metrics, "n"), column(metrics, "f1_random")
    if not np.isfinite(random_all).any():
        return []
    out = []
    for n in headline_ns(sorted({int(x) for x in ns_all[np.isfinite(ns_all)]})):
        sel = ns_all == n
        top, rnd = column(metrics, "f1")[sel], random_all[sel]
        both = np.isfinite(top) & np.isfinite(rnd)
        gap = float(np.mean(top[both] - rnd[both])) if both.any() else math.nan
        ahead = int(np.sum(top[both] > rnd[both]))
        text = (
            f"N = {n}: top-N F1 {np.mean(top[both]):.3f} vs random {np.mean(rnd[both]):.3f}, "
            f"gap {gap:+.3f}; top-N ahead in {ahead} of {int(both.sum())} heads "
            f"({ahead / max(int(both.sum()), 1):.0%})"
        )
        out.append(text + _interval(metrics, sel, both, gap, _per_window(window_gaps, n)) + ".")
    return out


def _interval(
    metrics: pd.DataFrame,
    sel: np.ndarray,
    both: np.ndarray,
    gap: float,
    per_window: np.ndarray | None,
) -> str:
    """The interval clause: bootstrap over windows, else the SD fallback, else nothing."""
    if per_window is not None:
        lo, hi = window_interval(per_window)
        if math.isfinite(lo):
            windows = int(np.isfinite(per_window).sum())
            return f"; 95% bootstrap interval over {windows} windows [{lo:+.3f}, {hi:+.3f}]"
        return ""
    counts = column(metrics, "windows")[sel]
    windows = int(np.nanmax(counts)) if np.isfinite(counts).any() else 1
    sd = column(metrics, "f1_gap_std_random")[sel]
    if windows > 1 and np.isfinite(sd[both]).any():
        se = float(np.nanmean(sd[both])) / math.sqrt(windows - 1)
        return (
            f"; 95% interval over {windows} windows [{gap - 1.96 * se:+.3f}, "
            f"{gap + 1.96 * se:+.3f}] (conservative, from the per-head SDs over windows)"
        )
    return ""
