"""The normalization paper's d~ and N_s/N claims, each with an interval and its verdict.

arXiv 2508.17821, spec ``normalization.md``, "Experiments to reproduce": ``d~_5`` grows
about linearly with L; ``d~_N`` flattens beyond N about 20; ``N_s/N`` saturates around
0.70-0.85. The texts are in :data:`tl_geom.normalization.claims.CLAIMS`. Each verdict is
decided on a 95% bootstrap interval over independent units (windows, or heads where
every head has the same few windows) and says "inconclusive" when the interval
straddles a threshold or there are fewer than :data:`MIN_UNITS` units. Thresholds are
ours **[ours]** (:mod:`tl_geom.claim`), fixed before any model was run.
"""

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from tl_geom.claim import (
    INCONCLUSIVE,
    NOT,
    PARTLY,
    REPRODUCED,
    Finding,
    Numbers,
    Verdict,
    arrays,
    bootstrap_interval,
    fmt,
    is_finite,
    loglog_slope,
    plot_data,
)
from tl_geom.errors import TlGeomError

__all__ = [
    "MIN_UNITS",
    "claim_distance_length",
    "claim_distance_plateau",
    "claim_recall_saturation",
    "distance_length_verdict",
    "distance_plateau_verdict",
    "plateau_changes",
    "recall_saturation_verdict",
    "slope_draws",
]

MIN_UNITS = 10
"""Fewer units (windows or heads) than this: no interval, the verdict is inconclusive [ours]."""
DRAWS = 1000
"""Bootstrap resamples [ours]."""

Interval = tuple[float, float]
NAN2: Interval = (math.nan, math.nan)


def _finite(iv: Interval) -> bool:
    return is_finite(iv[0]) and is_finite(iv[1])


def _iv_text(iv: Interval, spec: str = ".2f") -> str:
    return f"[{fmt(iv[0], spec)}, {fmt(iv[1], spec)}]"


def slope_draws(
    x: Numbers, samples: Sequence[np.ndarray], *, draws: int = DRAWS, seed: int = 0
) -> np.ndarray:
    """Bootstrap draws of the log-log slope of ``mean(samples[j])`` against ``x[j]``.

    Each ``samples[j]`` (the units at ``x[j]``: windows of that L, or rows) is resampled
    with replacement on its own (a stratified bootstrap); per draw the slope
    ``k = cov(log x, log m) / var(log x)`` of the resampled means ``m``. Draws with a
    non-positive mean are dropped. ``[draws']``, vectorised over draws.
    """
    xs = np.log(np.asarray(x, dtype=np.float64))
    rng = np.random.default_rng(seed)
    means = np.stack(
        [s[rng.integers(0, s.size, (draws, s.size))].mean(1) for s in samples], axis=1
    )  # [draws, len(x)]
    ok = (means > 0).all(1)
    ly = np.log(np.where(means > 0, means, 1.0))[ok]
    xc = xs - xs.mean()
    return (ly - ly.mean(1, keepdims=True)) @ xc / float(xc @ xc)


def claim_distance_length(table: pd.DataFrame) -> Finding:
    """``d~_5`` of the top-5 set against L; log-log slope with a bootstrap interval.

    ``table``: one row per L with ``length, d_top, d_random`` (means over windows and
    heads) and ``d_top_by_window`` (a sequence: per window, ``d~_5`` averaged over its
    heads). The slope's 95% interval resamples the windows at each L
    (:func:`slope_draws`); ``n`` is the number of windows per L (the smallest). Without
    ``d_top_by_window`` there is no interval and the verdict is inconclusive. Verdict:
    :func:`distance_length_verdict`.
    """
    ls, d = table["length"].to_numpy(np.float64), table["d_top"].to_numpy(np.float64)
    k, r2 = loglog_slope(ls, d)
    n, iv = 0, NAN2
    if "d_top_by_window" in table and ls.size >= 2:
        per = [np.asarray(w, dtype=np.float64) for w in table["d_top_by_window"]]
        per = [w[np.isfinite(w)] for w in per]
        n = min(w.size for w in per)
        if n >= MIN_UNITS:
            ks = slope_draws(ls, per)
            iv = (float(np.quantile(ks, 0.025)), float(np.quantile(ks, 0.975))) if ks.size else iv
    text = (
        f"d~_5 ~ L^{fmt(k)} {_iv_text(iv)} (R^2 {fmt(r2)}) for L = {int(ls.min())}-"
        f"{int(ls.max())}, {n} windows per L"
    )
    plot = plot_data(
        ls, {"top-5": d, "random 5": table["d_random"].to_numpy(np.float64)},
        xlabel="L", ylabel="d~_5", logx=True, logy=True,
    )  # fmt: skip
    nums = {"slope": k, "r2": r2, "slope_interval": list(iv), "windows": n}
    return Finding(
        nums, text, distance_length_verdict(iv, r2, n), plot, n, iv if _finite(iv) else None
    )


def distance_length_verdict(slope: Interval, r2: float, n: int) -> Verdict:
    """``d~`` grows about linearly with the context length L at N = 5.

    ``slope``: the 95% interval of k in ``d~ ~ L^k``; ``r2``: the fit's R^2 on the
    means; ``n``: windows per L. Zones [ours]: linear ``0.8 <= k <= 1.2``; grows, not
    linearly ``0.3 <= k < 0.8`` or ``k > 1.2``; flat ``k < 0.3``. Reproduced: the
    interval lies in the linear zone and ``R^2 >= 0.9``; partly: it lies in the growth
    zone (or the linear one with ``R^2 < 0.9``); not: it lies below 0.3; inconclusive:
    it straddles a zone edge, is not finite, or ``n < 10``.

    >>> distance_length_verdict((0.9, 1.1), 0.99, 32), distance_length_verdict((0.4, 0.7), 0.99, 32)
    ('reproduced', 'partly')
    >>> distance_length_verdict((-0.1, 0.1), 0.1, 32), distance_length_verdict((0.6, 1.0), 0.9, 32)
    ('not reproduced', 'inconclusive')
    >>> distance_length_verdict((0.9, 1.1), 0.99, 4)
    'inconclusive'
    """
    lo, hi = slope
    if n < MIN_UNITS or not _finite(slope):
        return INCONCLUSIVE
    if hi < 0.3:
        return NOT
    if lo >= 0.8 and hi <= 1.2:
        return REPRODUCED if is_finite(r2) and r2 >= 0.9 else PARTLY
    return PARTLY if (lo >= 0.3 and hi < 0.8) or lo > 1.2 else INCONCLUSIVE


def plateau_changes(ns: Numbers, distance: Numbers) -> tuple[float, float]:
    """``late = |d(N_max) - d(20)| / d(20)`` and ``early = |d(20) - d(1)| / d(1)``.

    The grid must hold 1, 20 and a larger N; nan where ``d(1)`` or ``d(20)`` is not
    positive.

    >>> [round(v, 3) for v in plateau_changes([1, 5, 20, 100], [10.0, 6.0, 5.0, 4.9])]
    [0.02, 0.5]
    """
    n, d = arrays(ns=ns, distance=distance)
    if 1 not in n or 20 not in n or n.max() <= 20:
        raise TlGeomError(f"the N grid must hold 1, 20 and a larger N, got {n.tolist()}")
    d1, d20, dmax = d[n == 1][0], d[n == 20][0], d[int(np.argmax(n))]
    if not all(is_finite(x) and x > 0 for x in (d1, d20)) or not is_finite(dmax):
        return math.nan, math.nan
    return float(abs(dmax - d20) / d20), float(abs(d20 - d1) / d1)


def claim_distance_plateau(
    table: pd.DataFrame, length: int, by_head: np.ndarray | None = None
) -> Finding:
    """``d~_N`` against N at the longest L; the verdict on the paper's grid N <= 100.

    The paper's grid is N in 1, 5, 10, 20, 100; larger N in ``table`` are shown, not
    judged. ``by_head``: ``[head, N]`` (N as in ``table``), each head's ``d~_N`` averaged
    over its windows: the units of the interval [ours: heads, as every head has the same
    few windows]; the 95% bootstrap interval of ``late`` resamples heads. Verdict:
    :func:`distance_plateau_verdict`; without ``by_head`` inconclusive.
    """
    ns, d = table["n"].to_numpy(np.float64), table["d_top"].to_numpy(np.float64)
    paper = ns <= 100
    late, early = plateau_changes(ns[paper], d[paper])
    n, iv = 0, NAN2
    if by_head is not None:
        h = np.asarray(by_head, dtype=np.float64)[:, paper]
        h = h[np.isfinite(h).all(1)]
        n = h.shape[0]
        stat = lambda i: plateau_changes(ns[paper], h[i].mean(0))[0]  # noqa: E731
        iv = bootstrap_interval(stat, n, draws=DRAWS, min_n=MIN_UNITS)
    shown = ", ".join(f"{int(x)}:{fmt(v, '.3g')}" for x, v in zip(ns, d, strict=True))
    text = (
        f"L={length}, change N=20->{int(ns[paper].max())}: {fmt(late)} {_iv_text(iv)} over "
        f"{n} heads, N=1->20: {fmt(early)}; N:d~ {shown}"
    )
    plot = plot_data(
        ns, {"top-N": d, "random N": table["d_random"].to_numpy(np.float64)},
        xlabel="N", ylabel="d~_N", logx=True,
    )  # fmt: skip
    nums = {"length": length, "d_by_n": dict(zip(ns.tolist(), d.tolist(), strict=True)),
            "late": late, "late_interval": list(iv), "early": early, "heads": n}  # fmt: skip
    verdict = distance_plateau_verdict(iv, early, n)
    return Finding(nums, text, verdict, plot, n, iv if _finite(iv) else None)


def distance_plateau_verdict(late: Interval, early: float, n: int) -> Verdict:
    """``d~`` as N grows flattens beyond N about 20 (at the longest L).

    ``late``: the 95% interval of ``|d(N_max) - d(20)| / d(20)``; ``early``:
    ``|d(20) - d(1)| / d(1)`` (:func:`plateau_changes`); ``n``: heads. Reproduced: the
    interval lies at or below 0.1 and ``early`` is at least twice its upper end (it
    flattens after changing); partly: it lies at or below 0.25 but not so; not: it lies
    above 0.25; inconclusive: it straddles 0.1 or 0.25, is not finite, or ``n < 10``.

    >>> [distance_plateau_verdict(iv, 0.5, 100) for iv in ((0.01, 0.05), (0.12, 0.2))]
    ['reproduced', 'partly']
    >>> [distance_plateau_verdict(iv, 0.5, 100) for iv in ((0.4, 0.7), (0.05, 0.3))]
    ['not reproduced', 'inconclusive']
    """
    lo, hi = late
    if n < MIN_UNITS or not _finite(late):
        return INCONCLUSIVE
    if hi <= 0.1:
        return REPRODUCED if is_finite(early) and early >= 2 * hi else PARTLY
    if lo > 0.25:
        return NOT
    return PARTLY if lo > 0.1 and hi <= 0.25 else INCONCLUSIVE


def _tail_stats(ns: np.ndarray, per_head: np.ndarray) -> tuple[float, float]:
    """Mean and range over the ``N >= 16`` grid points of the mean curve over heads."""
    curve = np.nanmean(per_head, axis=0)[ns >= 16]
    curve = curve[np.isfinite(curve)]
    return (float(curve.mean()), float(np.ptp(curve))) if curve.size else (math.nan, math.nan)


def claim_recall_saturation(table: pd.DataFrame, by_head: np.ndarray | None = None) -> Finding:
    """``N_s / N`` against N, with bootstrap intervals of the tail's level and range.

    ``by_head``: ``[head, N]`` (N as in ``table``), each head's ``N_s/N`` averaged over
    its windows; the units of the intervals (heads resampled) [ours: heads, as every
    head has the same few windows]. Verdict: :func:`recall_saturation_verdict`; without
    ``by_head`` or without N >= 16 on the grid inconclusive. A column ``ns_over_n_resid``
    (N_s/N on the residual-stream inputs, the spec's option) is plotted and reported
    beside, not judged.
    """
    ns, r = table["n"].to_numpy(np.float64), table["ns_over_n"].to_numpy(np.float64)
    tail = r[ns >= 16]
    lvl = float(tail.mean()) if tail.size else np.nan
    rng = float(np.ptp(tail)) if tail.size else np.nan
    n, lvl_iv, rng_iv = 0, NAN2, NAN2
    if by_head is not None and tail.size:
        h = np.asarray(by_head, dtype=np.float64)
        n = int(np.isfinite(h).any(1).sum())
        h = h[np.isfinite(h).any(1)]
        lvl_iv = bootstrap_interval(lambda i: _tail_stats(ns, h[i])[0], n, min_n=MIN_UNITS)
        rng_iv = bootstrap_interval(lambda i: _tail_stats(ns, h[i])[1], n, min_n=MIN_UNITS)
    at2 = r[ns == 2][0] if 2 in ns else np.nan
    text = (
        f"N_s/N for N>=16: mean {fmt(lvl)} {_iv_text(lvl_iv)} (paper 0.70-0.85), range "
        f"{fmt(rng)} {_iv_text(rng_iv)}, over {n} heads; N=2: {fmt(at2)}"
    )
    series = {"N_s / N (values)": r}
    lvl_resid = np.nan
    if "ns_over_n_resid" in table:  # the spec's option, reported beside; the verdict is on values
        res = table["ns_over_n_resid"].to_numpy(np.float64)
        series["N_s / N (residual stream)"] = res
        lvl_resid = float(res[ns >= 16].mean()) if tail.size else np.nan
        text += f"; residual-stream inputs: N>=16 mean {fmt(lvl_resid)}"
    plot = plot_data(ns, series, xlabel="N", ylabel="N_s / N", logx=True, band=(0.70, 0.85))
    nums = {
        "tail_mean": lvl, "tail_range": rng, "tail_mean_interval": list(lvl_iv),
        "tail_mean_resid": lvl_resid,
        "tail_range_interval": list(rng_iv), "heads": n,
        "by_n": dict(zip(ns.tolist(), r.tolist(), strict=True)),
    }  # fmt: skip
    verdict = recall_saturation_verdict(lvl_iv, rng_iv, n)
    return Finding(nums, text, verdict, plot, n, lvl_iv if _finite(lvl_iv) else None)


def recall_saturation_verdict(level: Interval, spread: Interval, n: int) -> Verdict:
    """``N_s / N`` declines up to N about 16, then saturates around 0.70-0.85.

    Tail: the grid points with ``N >= 16``. ``level``: the 95% interval of the tail's
    mean; ``spread``: of its range (max - min); ``n``: heads. In the band: the level's
    interval lies inside ``[0.70, 0.85]``; out: it lies outside the band. Flat: the
    spread's interval lies at or below 0.15; not flat: above. Reproduced both, partly
    one, not neither; inconclusive: an interval straddles its edge (too few heads to
    tell), is not finite, or ``n < 10``.

    >>> recall_saturation_verdict((0.74, 0.8), (0.02, 0.05), 200)
    'reproduced'
    >>> recall_saturation_verdict((0.35, 0.4), (0.02, 0.05), 200)
    'partly'
    >>> recall_saturation_verdict((0.3, 0.4), (0.4, 0.5), 200)
    'not reproduced'
    >>> recall_saturation_verdict((0.65, 0.8), (0.02, 0.05), 200)
    'inconclusive'
    """
    if n < MIN_UNITS or not (_finite(level) and _finite(spread)):
        return INCONCLUSIVE
    band = True if level[0] >= 0.7 and level[1] <= 0.85 else None
    band = False if level[1] < 0.7 or level[0] > 0.85 else band
    flat = True if spread[1] <= 0.15 else False if spread[0] > 0.15 else None
    if band is None or flat is None:
        return INCONCLUSIVE
    return REPRODUCED if band and flat else PARTLY if band or flat else NOT
