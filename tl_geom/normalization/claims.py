"""The normalization paper's claims (arXiv 2508.17821; spec ``normalization.md``) and verdicts.

Each ``claim_*`` function takes a table of the normalization experiments (d~ against L
and N, the KS critical N, N_s/N, the gradient sensitivity) and returns a
:class:`~tl_geom.claim.Finding`: the numbers it looked at, a one-line ``measured`` text,
the verdict of its rule (the ``*_verdict`` function beside it, restated in the
docstring) and the data of its plot. :data:`CLAIMS` holds the claim texts and sections.
Thresholds are ours **[ours]** (:mod:`tl_geom.claim`). No model runs here:
:mod:`tl_geom.app.reproduce` runs the experiments and calls these.
"""

import math

import numpy as np
import pandas as pd

from tl_geom.claim import (
    INCONCLUSIVE,
    NOT,
    PARTLY,
    REPRODUCED,
    ClaimText,
    Finding,
    Numbers,
    Verdict,
    arrays,
    fmt,
    is_finite,
    loglog_slope,
    plot_data,
)
from tl_geom.errors import TlGeomError
from tl_geom.normalization.critical import MIN_WINDOWS

__all__ = [
    "CLAIMS",
    "PAPER",
    "claim_critical_n",
    "claim_distance_length",
    "claim_distance_plateau",
    "claim_gradient_sensitivity",
    "claim_recall_saturation",
    "critical_n_verdict",
    "distance_length_verdict",
    "distance_plateau_verdict",
    "gradient_sensitivity_verdict",
    "recall_saturation_verdict",
]

PAPER = "arXiv 2508.17821"

CLAIMS: dict[str, ClaimText] = {
    "distance_length": ClaimText(
        "d~ grows linearly with L at N = 5", PAPER, "Experiments (d~ vs L)"
    ),
    "distance_plateau": ClaimText("d~ flattens for N > 20", PAPER, "Experiments (d~ vs N)"),
    "critical_n": ClaimText(
        "KS critical N about 0.06 L (per head, windows as samples)", PAPER, "Experiments (KS test)"
    ),
    "recall_saturation": ClaimText(
        "N_s/N declines to N ~ 16, then saturates at 0.70-0.85",
        PAPER,
        "Experiments (distinguishability)",
    ),
    "gradient_sensitivity": ClaimText(
        "gradient sensitivity g(T, eps) ~ 1/T below T = 0.1, ~100x lower at T >= 1",
        PAPER,
        "Experiments (temperature)",
    ),
}
"""Claim id -> text, paper and section (spec: normalization.md)."""


def claim_distance_length(table: pd.DataFrame) -> Finding:
    """``d~_5`` of the top-5 set against L; log-log slope.

    Verdict (:func:`distance_length_verdict`): slope 0.8-1.2 with
    ``R^2 >= 0.9`` reproduced, slope ``>= 0.3`` partly, else not.
    """
    ls, d = table["length"].to_numpy(np.float64), table["d_top"].to_numpy(np.float64)
    k, r2 = loglog_slope(ls, d)
    text = f"d~_5 ~ L^{fmt(k)} (R^2 {fmt(r2)}) for L = {int(ls.min())}-{int(ls.max())}"
    plot = plot_data(
        ls, {"top-5": d, "random 5": table["d_random"].to_numpy(np.float64)},
        xlabel="L", ylabel="d~_5", logx=True, logy=True,
    )  # fmt: skip
    return Finding({"slope": k, "r2": r2}, text, distance_length_verdict(ls, d), plot)


def distance_length_verdict(lengths: Numbers, distance: Numbers) -> Verdict:
    """``d~`` grows about linearly with the context length L at N = 5.

    Log-log fit ``d~ ~ L^k`` (:func:`loglog_slope`). Reproduced ``0.8 <= k <= 1.2`` and
    ``R^2 >= 0.9``; partly ``k >= 0.3`` (grows, not linearly); else not.

    >>> distance_length_verdict([32, 64, 128], [1.0, 2.0, 4.1])
    'reproduced'
    >>> distance_length_verdict([32, 64, 128], [1.0, 1.4, 2.0])
    'partly'
    >>> distance_length_verdict([32, 64], [1.0, 1.0])
    'not reproduced'
    """
    k, r2 = loglog_slope(lengths, distance)
    if not is_finite(k):
        return NOT
    if 0.8 <= k <= 1.2 and r2 >= 0.9:
        return REPRODUCED
    return PARTLY if k >= 0.3 else NOT


def claim_distance_plateau(table: pd.DataFrame, length: int) -> Finding:
    """``d~_N`` against N at the longest L; the verdict on the paper's grid N <= 100.

    The paper's grid is N in 1, 5, 10, 20, 100; larger N in ``table`` are shown and
    reported, not judged. Verdict (:func:`distance_plateau_verdict`):
    change from N = 20 to N = 100 ``<= 10%`` (and the early change at least twice that)
    reproduced, ``<= 25%`` partly, else not.
    """
    ns, d = table["n"].to_numpy(np.float64), table["d_top"].to_numpy(np.float64)
    paper = ns <= 100
    shown = ", ".join(f"{int(n)}:{fmt(v, '.3g')}" for n, v in zip(ns, d, strict=True))
    text = f"L={length}, N:d~ {shown}"
    plot = plot_data(
        ns, {"top-N": d, "random N": table["d_random"].to_numpy(np.float64)},
        xlabel="N", ylabel="d~_N", logx=True,
    )  # fmt: skip
    nums = {"length": length, "d_by_n": dict(zip(ns.tolist(), d.tolist(), strict=True))}
    return Finding(nums, text, distance_plateau_verdict(ns[paper], d[paper]), plot)


def distance_plateau_verdict(ns: Numbers, distance: Numbers) -> Verdict:
    """``d~`` as N grows flattens beyond N about 20 (at the longest L).

    ``late = |d(N_max) - d(20)| / d(20)`` and ``early = |d(20) - d(1)| / d(1)`` (the
    grid must hold 1, 20 and a larger N). Reproduced ``late <= 0.1`` and ``early >= 2
    late`` (it flattens after changing); partly ``late <= 0.25``; else not.

    >>> distance_plateau_verdict([1, 5, 20, 100], [10.0, 6.0, 5.0, 4.9])
    'reproduced'
    >>> distance_plateau_verdict([1, 5, 20, 100], [5.0, 5.0, 5.0, 4.5])
    'partly'
    >>> distance_plateau_verdict([1, 5, 20, 100], [10.0, 8.0, 5.0, 2.0])
    'not reproduced'
    """
    n, d = arrays(ns=ns, distance=distance)
    if 1 not in n or 20 not in n or n.max() <= 20:
        raise TlGeomError(f"the N grid must hold 1, 20 and a larger N, got {n.tolist()}")
    d1, d20, dmax = d[n == 1][0], d[n == 20][0], d[int(np.argmax(n))]
    if not all(is_finite(x) and x > 0 for x in (d1, d20)) or not is_finite(dmax):
        return NOT
    late, early = abs(dmax - d20) / d20, abs(d20 - d1) / d1
    if late <= 0.1 and early >= 2 * late:
        return REPRODUCED
    return PARTLY if late <= 0.25 else NOT


def _head_fractions(table: pd.DataFrame) -> tuple[np.ndarray, list[np.ndarray], int]:
    """Lengths, the per-head ``N*/L`` at each (NaN -> inf: rejects at every N), windows."""
    heads = table.drop_duplicates(["length", "head"])
    length = heads["length"].to_numpy(np.float64)
    star = heads["n_star"].to_numpy(np.float64)
    ls = np.unique(length)
    fr = [np.where(np.isfinite(star[length == x]), star[length == x] / x, np.inf) for x in ls]
    return ls, fr, int(heads["windows"].to_numpy().min())


def claim_critical_n(table: pd.DataFrame) -> Finding:
    """Per-head KS critical N against L (``critical.critical_n_by_head``).

    ``table``: ``HeadCriticalN.to_frame(L)`` rows for every L (windows as samples, the
    same number at every L). Reports, per L, the median and quartiles of ``N*_h / L``
    over heads and the median KS statistic at the smallest N. Verdict
    (:func:`critical_n_verdict`) on the medians.
    """
    ls, fr, windows = _head_fractions(table)
    med = np.array([np.median(f) for f in fr])
    q1 = np.array([np.quantile(f, 0.25) for f in fr])
    q3 = np.array([np.quantile(f, 0.75) for f in fr])
    n_col, stat = table["n"].to_numpy(), table["statistic"].to_numpy(np.float64)
    t_len = table["length"].to_numpy(np.float64)
    first = n_col == n_col.min()
    small = {float(x): float(np.median(stat[first & (t_len == x)])) for x in ls}
    shown = ", ".join(
        f"{int(x)}: {fmt(m, '.3f')} [{fmt(a, '.3f')}, {fmt(b, '.3f')}]"
        for x, m, a, b in zip(ls, med, q1, q3, strict=True)
    )
    text = f"median N*/L over heads (paper 0.06), {windows} windows per test; L: {shown}"
    fin = lambda a: np.where(np.isfinite(a), a, np.nan)  # noqa: E731
    plot = plot_data(
        ls, {"median N*/L": fin(med), "quartile 1": fin(q1), "quartile 3": fin(q3),
             "0.06 (paper)": [0.06] * len(ls)},
        xlabel="L", ylabel="N*/L over heads", logx=True,
    )  # fmt: skip
    nums = {
        "median_fraction": dict(zip(ls.tolist(), fin(med).tolist(), strict=True)),
        "quartiles": {x: [float(a), float(b)] for x, a, b in zip(ls.tolist(), q1, q3, strict=True)},
        "ks_statistic_smallest_n": small,
        "windows": windows,
        "heads": len(fr[0]) if fr else 0,
    }
    verdict = critical_n_verdict(ls, med, windows)
    finite = med[np.isfinite(med)]
    interval = (float(finite.min()), float(finite.max())) if finite.size else None
    return Finding(nums, text, verdict, plot, windows, interval)


def critical_n_verdict(lengths: Numbers, median_fraction: Numbers, windows: int) -> Verdict:
    """The critical N (top-N no longer told from random by KS at 0.01) scales like 0.06 L.

    ``median_fraction``: per L, the median over heads of ``N*_h / L`` (inf where most
    heads reject at every N); ``windows``: the per-head sample size. Inconclusive:
    fewer than :data:`~tl_geom.normalization.critical.MIN_WINDOWS` (32) windows or fewer
    than two lengths. Reproduced: every median in 0.03-0.12 (within 2x of 0.06), so
    ``N*`` grows like L; partly: the median of the medians in 0.015-0.24 (within 4x);
    else not.

    >>> critical_n_verdict([128, 256, 512], [0.06, 0.05, 0.07], 32)
    'reproduced'
    >>> critical_n_verdict([128, 256], [0.02, 0.15], 64)
    'partly'
    >>> critical_n_verdict([128, 256], [0.06, 0.06], 8)
    'inconclusive'
    >>> critical_n_verdict([128, 256], [0.004, 0.002], 64)
    'not reproduced'
    """
    ls, fr = arrays(lengths=lengths, median_fraction=median_fraction)
    if windows < MIN_WINDOWS or ls.size < 2 or np.isnan(fr).any():
        return INCONCLUSIVE
    if np.all((fr >= 0.03) & (fr <= 0.12)):
        return REPRODUCED
    mid = float(np.median(fr))
    return PARTLY if 0.015 <= mid <= 0.24 else NOT


def claim_recall_saturation(table: pd.DataFrame) -> Finding:
    """``N_s / N`` against N.

    Verdict (:func:`recall_saturation_verdict`): the N >= 16 tail flat
    (range ``<= 0.15``) and its mean in 0.70-0.85 reproduced, one of the two partly,
    else not.
    """
    ns, r = table["n"].to_numpy(np.float64), table["ns_over_n"].to_numpy(np.float64)
    tail = r[ns >= 16]
    lvl = float(tail.mean()) if tail.size else np.nan
    rng = float(np.ptp(tail)) if tail.size else np.nan
    at2 = r[ns == 2][0] if 2 in ns else np.nan
    text = f"N_s/N for N>=16: mean {fmt(lvl)} (paper 0.70-0.85), range {fmt(rng)}; N=2: {fmt(at2)}"
    series = {"N_s / N (values)": r}
    if "ns_over_n_resid" in table:  # the spec's option, reported beside; the verdict is on values
        res = table["ns_over_n_resid"].to_numpy(np.float64)
        series["N_s / N (residual stream)"] = res
        lvl_resid = float(res[ns >= 16].mean()) if tail.size else np.nan
        text += f"; residual-stream inputs: N>=16 mean {fmt(lvl_resid)}"
    plot = plot_data(ns, series, xlabel="N", ylabel="N_s / N", logx=True, band=(0.70, 0.85))
    nums = {
        "tail_mean": lvl,
        "tail_range": rng,
        "by_n": dict(zip(ns.tolist(), r.tolist(), strict=True)),
    }
    return Finding(nums, text, recall_saturation_verdict(ns, r), plot)


def recall_saturation_verdict(ns: Numbers, ratio: Numbers) -> Verdict:
    """``N_s / N`` declines up to N about 16, then saturates around 0.70-0.85.

    Tail: the grid points with ``N >= 16``. Saturates: the tail's range
    (max - min) ``<= 0.15``. Level: the tail's mean in ``[0.70, 0.85]``. Reproduced both;
    partly one; not neither (or no N >= 16 on the grid).

    >>> recall_saturation_verdict([2, 16, 64], [0.9, 0.8, 0.75])
    'reproduced'
    >>> recall_saturation_verdict([2, 16, 64], [0.9, 0.4, 0.3])
    'partly'
    >>> recall_saturation_verdict([2, 16, 64], [0.9, 0.9, 0.2])
    'not reproduced'
    """
    n, r = arrays(ns=ns, ratio=ratio)
    tail = r[(n >= 16) & np.isfinite(r)]
    if tail.size == 0:
        return NOT
    flat = float(np.ptp(tail)) <= 0.15
    level = 0.70 <= float(tail.mean()) <= 0.85
    return REPRODUCED if flat and level else PARTLY if flat or level else NOT


def claim_gradient_sensitivity(table: pd.DataFrame, saturated: float = math.nan) -> Finding:
    """``g(T, eps)`` against T, one curve per eps; the verdict of each eps, combined.

    An eps whose cap ``2/eps`` binds (``capped`` at any T <= 1: the change reaches half
    its maximum) is reported but dropped from the verdict, and the text says so; the
    analytic ``E ||J(z + eps xi, T) xi||`` is reported beside g. ``saturated``: the
    share of rows whose top logit gap exceeds ``log L`` (at T = 1). Verdict:
    :func:`gradient_sensitivity_verdict` per kept eps; reproduced if every kept eps
    reproduces, not if none is at least partly, else partly; inconclusive if every eps
    is capped.
    """
    parts, series, nums = [], {}, {}
    per_eps: list[Verdict] = []
    dropped: list[str] = []
    for eps, grp in table.groupby("eps"):
        grp = grp.sort_values("temperature")
        if "capped" in grp and bool(grp[grp["temperature"] <= 1.0]["capped"].any()):
            dropped.append(f"{float(eps):g}")  # type: ignore[arg-type]
            series[f"eps={float(eps):g} (capped)"] = grp["sensitivity"].to_numpy(np.float64)  # type: ignore[arg-type]
            continue
        t, g = grp["temperature"].to_numpy(np.float64), grp["sensitivity"].to_numpy(np.float64)
        low = t <= 0.1
        k = loglog_slope(t[low], g[low])[0]
        drop = float(g[t == 0.01][0] / g[t == 1.0][0]) if 0.01 in t and 1.0 in t else np.nan
        per_eps.append(gradient_sensitivity_verdict(t, g))
        parts.append(f"eps {float(eps):g}: slope {fmt(k)}, g(0.01)/g(1) {fmt(drop, '.3g')}")  # type: ignore[arg-type]
        series[f"eps={float(eps):g}"] = g  # type: ignore[arg-type]
        if "jacobian_at" in grp:
            series[f"E||J(z+eps xi)|| eps={float(eps):g}"] = grp["jacobian_at"].to_numpy(np.float64)  # type: ignore[arg-type]
        nums[f"eps={float(eps):g}"] = {"slope_below_0.1": k, "drop_0.01_to_1": drop}  # type: ignore[arg-type]
    temps = sorted(table["temperature"].unique())
    verdict: Verdict = (
        INCONCLUSIVE
        if not per_eps
        else REPRODUCED
        if all(v == REPRODUCED for v in per_eps)
        else NOT
        if all(v == NOT for v in per_eps)
        else PARTLY
    )
    text = "; ".join(parts) + " (1/T: slope -1, 100x)"
    if dropped:
        text += f"; eps {', '.join(dropped)} dropped (the cap 2/eps binds)"
    if is_finite(saturated):
        text += f"; {saturated:.0%} of rows saturated (top logit gap > log L)"
    nums["dropped_eps"] = dropped
    nums["saturated_share"] = saturated
    plot = plot_data(temps, series, xlabel="T", ylabel="g(T, eps)", logx=True, logy=True)
    return Finding(nums, text, verdict, plot)


def gradient_sensitivity_verdict(temperatures: Numbers, sensitivity: Numbers) -> Verdict:
    """``g(T, eps)`` scales like 1/T for T < 0.1, about 100x smaller at T = 1 than at 0.01.

    For one eps: the log-log slope k of g against T over ``T <= 0.1`` and the drop
    ``g(0.01) / g(1)`` (1/T predicts k = -1 and 100). Reproduced ``-1.5 <= k <= -0.5``
    and drop ``>= 30``; partly ``k <= -0.25`` or drop ``>= 3``; else not.

    >>> ts = [0.001, 0.01, 0.1, 1.0]
    >>> gradient_sensitivity_verdict(ts, [1000.0, 100.0, 10.0, 1.0])
    'reproduced'
    >>> gradient_sensitivity_verdict(ts, [1.0, 1.0, 1.0, 0.2])
    'partly'
    >>> gradient_sensitivity_verdict(ts, [1.0, 1.0, 1.0, 1.0])
    'not reproduced'
    """
    t, g = arrays(temperatures=temperatures, sensitivity=sensitivity)
    if 0.01 not in t or 1.0 not in t:
        raise TlGeomError(f"the T grid must hold 0.01 and 1, got {t.tolist()}")
    low = t <= 0.1
    k = loglog_slope(t[low], g[low])[0] if low.sum() >= 2 else math.nan
    g1 = g[t == 1.0][0]
    drop = g[t == 0.01][0] / g1 if is_finite(g1) and g1 > 0 else math.nan
    if is_finite(k) and -1.5 <= k <= -0.5 and is_finite(drop) and drop >= 30:
        return REPRODUCED
    return PARTLY if (is_finite(k) and k <= -0.25) or (is_finite(drop) and drop >= 3) else NOT
