"""The normalization paper's gradient-sensitivity claim, with intervals over rows, and its verdict.

arXiv 2508.17821, spec ``normalization.md``, "Experiments to reproduce": ``g(T, eps)``
scales like 1/T for T < 0.1 and drops by about 100x for T >= 1. The text is in
:data:`tl_geom.normalization.claims.CLAIMS`. Thresholds are ours **[ours]**
(:mod:`tl_geom.claim`), fixed before any model was run.
"""

import math

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
    combine_verdicts,
    fmt,
    is_finite,
    loglog_slope,
    plot_data,
)
from tl_geom.errors import TlGeomError
from tl_geom.normalization.distance_claims import DRAWS, MIN_UNITS

__all__ = ["claim_gradient_sensitivity", "gradient_sensitivity_verdict", "sensitivity_stats"]

Interval = tuple[float, float]


def sensitivity_stats(temperatures: Numbers, sensitivity: Numbers) -> tuple[float, float]:
    """The log-log slope k of g over ``T <= 0.1`` and the drop ``g(0.01) / g(1)``.

    1/T predicts k = -1 and a drop of 100. The T grid must hold 0.01 and 1.

    >>> [round(v, 6) for v in sensitivity_stats([0.001, 0.01, 0.1, 1.0], [1e3, 1e2, 10.0, 1.0])]
    [-1.0, 100.0]
    """
    t, g = arrays(temperatures=temperatures, sensitivity=sensitivity)
    if 0.01 not in t or 1.0 not in t:
        raise TlGeomError(f"the T grid must hold 0.01 and 1, got {t.tolist()}")
    low = t <= 0.1
    k = loglog_slope(t[low], g[low])[0] if low.sum() >= 2 else math.nan
    g1 = g[t == 1.0][0]
    drop = float(g[t == 0.01][0] / g1) if is_finite(g1) and g1 > 0 else math.nan
    return k, drop


def _intervals(t: np.ndarray, per_row: np.ndarray, seed: int = 0) -> tuple[Interval, Interval]:
    """95% bootstrap intervals (rows resampled) of the slope and the drop; vectorised."""
    n = per_row.shape[0]
    nan2 = (math.nan, math.nan)
    if n < MIN_UNITS:
        return nan2, nan2
    idx = np.random.default_rng(seed).integers(0, n, (DRAWS, n))
    m = per_row[idx].mean(1)  # [draws, T]
    low = t <= 0.1
    lx = np.log(t[low]) - np.log(t[low]).mean()
    pos = (m[:, low] > 0).all(1)
    ly = np.log(np.where(m[:, low] > 0, m[:, low], 1.0))[pos]
    ks = (ly - ly.mean(1, keepdims=True)) @ lx / float(lx @ lx)
    g1 = m[:, t == 1.0][:, 0]
    drops = np.where(g1 > 0, m[:, t == 0.01][:, 0] / np.where(g1 > 0, g1, 1.0), np.nan)
    drops = drops[np.isfinite(drops)]

    def q(x: np.ndarray) -> Interval:
        return (float(np.quantile(x, 0.025)), float(np.quantile(x, 0.975))) if x.size else nan2

    return q(ks), q(drops)


def _by_temperature(
    grp: pd.DataFrame,
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
    """The T grid, the means over rows per T of each column, and ``[row, T]`` of g (or None)."""
    t_all = grp["temperature"].to_numpy(np.float64)
    t = np.unique(t_all)
    cols = [c for c in ("sensitivity", "change", "jacobian_at") if c in grp]
    means = {}
    for c in cols:
        v = grp[c].to_numpy(np.float64)
        means[c] = np.array([v[t_all == x].mean() for x in t])
    if "capped" in grp and "change" not in grp:
        flag = grp["capped"].to_numpy(np.float64)
        means["capped"] = np.array([flag[t_all == x].max() for x in t])
    per_row = None
    if "row" in grp:
        rows = grp["row"].to_numpy()
        ids = np.unique(rows)
        per_row = np.full((ids.size, t.size), np.nan)
        per_row[np.searchsorted(ids, rows), np.searchsorted(t, t_all)] = grp[
            "sensitivity"
        ].to_numpy(np.float64)
        per_row = per_row[np.isfinite(per_row).all(1)]
    return t, means, per_row


def _capped(t: np.ndarray, means: dict[str, np.ndarray]) -> bool:
    """Whether the cap ``2/eps`` binds at some T <= 1: the mean change over rows >= 1."""
    if "change" in means:
        return bool((means["change"][t <= 1.0] >= 1.0).any())
    return bool((means["capped"][t <= 1.0] > 0).any()) if "capped" in means else False


def claim_gradient_sensitivity(table: pd.DataFrame, saturated: float = math.nan) -> Finding:
    """``g(T, eps)`` against T, one curve per eps; the verdict of each eps, combined.

    ``table``: :func:`~tl_geom.normalization.softmax_bounds.gradient_sensitivity` with
    ``by_row=True`` (a ``row`` column: the rows are the units of the intervals, ``n``);
    without ``row`` there is no interval and every kept eps is inconclusive. An eps
    whose cap ``2/eps`` binds (the mean change reaches 1, half its maximum, at some
    T <= 1) is reported but dropped from the verdict, and the text says so; the
    analytic ``E ||J(z + eps xi, T) xi||`` is reported beside g. ``saturated``: the
    share of rows whose top logit gap exceeds ``log L`` (at T = 1). Verdict:
    :func:`gradient_sensitivity_verdict` per kept eps, combined by
    :func:`~tl_geom.claim.combine_verdicts`; inconclusive if every eps is capped.
    """
    parts, series, nums = [], {}, {}
    per_eps: list[Verdict] = []
    dropped: list[str] = []
    n, first_iv = 0, None
    for eps, grp in table.groupby("eps"):
        e = f"{float(eps):g}"  # type: ignore[arg-type]
        t, means, per_row = _by_temperature(pd.DataFrame(grp))
        g = means["sensitivity"]
        if _capped(t, means):
            dropped.append(e)
            series[f"eps={e} (capped)"] = g
            continue
        k, drop = sensitivity_stats(t, g)
        k_iv, d_iv = (math.nan, math.nan), (math.nan, math.nan)
        if per_row is not None:
            n = per_row.shape[0]
            k_iv, d_iv = _intervals(t, per_row)
        first_iv = first_iv or k_iv
        per_eps.append(gradient_sensitivity_verdict(k_iv, d_iv, n))
        parts.append(
            f"eps {e}: slope {fmt(k)} [{fmt(k_iv[0])}, {fmt(k_iv[1])}], g(0.01)/g(1) "
            f"{fmt(drop, '.3g')} [{fmt(d_iv[0], '.3g')}, {fmt(d_iv[1], '.3g')}]"
        )
        series[f"eps={e}"] = g
        if "jacobian_at" in means:
            series[f"E||J(z+eps xi)|| eps={e}"] = means["jacobian_at"]
        nums[f"eps={e}"] = {"slope_below_0.1": k, "drop_0.01_to_1": drop,
                            "slope_interval": list(k_iv), "drop_interval": list(d_iv)}  # fmt: skip
    temps = sorted(table["temperature"].unique())
    verdict = combine_verdicts(per_eps)
    text = "; ".join(parts) + f" over {n} rows (1/T: slope -1, 100x)"
    if dropped:
        text += f"; eps {', '.join(dropped)} dropped (the cap 2/eps binds)"
    if is_finite(saturated):
        text += f"; {saturated:.0%} of rows saturated (top logit gap > log L)"
    nums.update(dropped_eps=dropped, saturated_share=saturated, rows=n)
    plot = plot_data(temps, series, xlabel="T", ylabel="g(T, eps)", logx=True, logy=True)
    iv = first_iv if first_iv and all(is_finite(v) for v in first_iv) else None
    return Finding(nums, text, verdict, plot, n or None, iv)


def gradient_sensitivity_verdict(slope: Interval, drop: Interval, n: int) -> Verdict:
    """``g(T, eps)`` scales like 1/T for T < 0.1, about 100x smaller at T = 1 than at 0.01.

    For one eps: the 95% intervals (rows resampled) of the log-log slope k of g over
    ``T <= 0.1`` and of the drop ``g(0.01) / g(1)`` (:func:`sensitivity_stats`; 1/T
    predicts -1 and 100); ``n``: rows. Reproduced: k's interval inside ``[-1.5, -0.5]``
    and the drop's above 30. Not: k's interval above -0.25 and the drop's below 3
    (surely no 1/T trace). Partly: surely not reproduced (k's interval outside
    ``[-1.5, -0.5]`` or the drop's below 30) but surely some trace (k's interval at or
    below -0.25 or the drop's at or above 3). Otherwise, or with ``n < 10``,
    inconclusive.

    >>> gradient_sensitivity_verdict((-1.1, -0.9), (80.0, 120.0), 128)
    'reproduced'
    >>> gradient_sensitivity_verdict((-0.1, 0.0), (4.0, 6.0), 128)
    'partly'
    >>> gradient_sensitivity_verdict((-0.05, 0.05), (0.9, 1.1), 128)
    'not reproduced'
    >>> gradient_sensitivity_verdict((-1.1, -0.3), (10.0, 120.0), 128)
    'inconclusive'
    """
    (k_lo, k_hi), (d_lo, d_hi) = slope, drop
    if n < MIN_UNITS or not all(is_finite(v) for v in (k_lo, k_hi, d_lo, d_hi)):
        return INCONCLUSIVE
    if -1.5 <= k_lo and k_hi <= -0.5 and d_lo >= 30:
        return REPRODUCED
    if k_lo > -0.25 and d_hi < 3:
        return NOT
    surely_not = k_hi < -1.5 or k_lo > -0.5 or d_hi < 30
    trace = k_hi <= -0.25 or d_lo >= 3
    return PARTLY if surely_not and trace else INCONCLUSIVE
