"""The honest headline of a run: the smallest non-trivial N first (N = 1 is perfect for any subset).

For N in (2, 4) (else the smallest N >= 2 of the grid): the mean over heads of the F1
gap ``F1(top-N) - F1(random N-subsets)``, the share of heads where top-N is ahead,
and an interval over windows. The per-window values live in ``out/windows`` and are
not in an :class:`~tl_geom.jobs.results.Analysis`, so the interval is not a bootstrap:
it is ``gap +- 1.96 SE`` with the conservative ``SE = mean_heads(sd_gap) / sqrt(W - 1)``
[ours], ``sd_gap`` the population SD over the ``W`` windows of each head's per-window
gap (``metrics.csv``'s ``f1_gap_std_random``): the SD of a mean of correlated heads is at most
the mean of their SDs, so the interval is never narrower than the normal one.
"""

import math

import numpy as np
import pandas as pd

from tl_geom.app.columns import column

__all__ = ["headline", "headline_ns"]


def headline_ns(ns: list[int]) -> list[int]:
    """N = 2 and 4 where in the grid, else the smallest N >= 2 (else the smallest N).

    >>> headline_ns([1, 2, 4, 8]), headline_ns([1, 3, 9]), headline_ns([1])
    ([2, 4], [3], [1])
    """
    wanted = [n for n in (2, 4) if n in ns]
    return wanted or [n for n in sorted(ns) if n >= 2][:1] or sorted(ns)[:1]


def headline(metrics: pd.DataFrame) -> list[str]:
    """One sentence per headline N (:func:`headline_ns`); empty without a baseline."""
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
        counts = column(metrics, "windows")[sel]
        windows = int(np.nanmax(counts)) if np.isfinite(counts).any() else 1
        sd = column(metrics, "f1_gap_std_random")[sel]
        if windows > 1 and np.isfinite(sd[both]).any():
            se = float(np.nanmean(sd[both])) / math.sqrt(windows - 1)
            text += (
                f"; 95% interval over {windows} windows [{gap - 1.96 * se:+.3f}, "
                f"{gap + 1.96 * se:+.3f}] (conservative, from the per-head SDs over windows)"
            )
        out.append(text + ".")
    return out
