"""rho0 vs Recall across KV heads, with a bootstrap interval (separability paper, assumption 4).

Spec: geometry.md, "Empirical assumptions", item 4. ``rho0`` is a property of a KV head
(its values), copied to the G query heads of the group in ``heads.csv``; the statistic
counts each KV group once, with the group's mean Recall, so that no value is counted G
times. Thresholds **[ours]** (:mod:`tl_geom.claim`).
"""

import math
import warnings

import numpy as np
import pandas as pd
import scipy.stats

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
    plot_data,
)

__all__ = ["claim_rho0_recall", "kv_recall", "kv_units", "rho0_recall_verdict"]


def kv_units(heads: pd.DataFrame) -> pd.DataFrame:
    """One row per KV group (``layer, kv_head``): a per-KV-head signal counted once.

    The value diagnostics are per KV head and repeated to its query heads in
    ``heads.csv``; counting them per query head would count each value G times. Tables
    without ``kv_head`` (older runs) count every head as its own group.
    """
    h = heads if "kv_head" in heads else heads.assign(kv_head=heads["head"])
    return h.groupby(["layer", "kv_head"], sort=True).first().reset_index()


def kv_recall(metrics: pd.DataFrame, heads: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Mean Recall of each KV group per N (``[groups, N]``, N >= 2) and its ``rho0``."""
    h = heads if "kv_head" in heads else heads.assign(kv_head=heads["head"])
    kv_of = h.set_index(["layer", "head"])["kv_head"]
    m = pd.DataFrame(metrics[metrics["n"] >= 2])
    keys = pd.MultiIndex.from_arrays([m["layer"].to_numpy(), m["head"].to_numpy()])
    m = m.assign(kv_head=kv_of.reindex(keys).to_numpy())
    rec = m.pivot_table(index=["layer", "kv_head"], columns="n", values="recall", aggfunc="mean")
    rho0 = pd.Series(kv_units(heads).set_index(["layer", "kv_head"])["rho0"].reindex(rec.index))
    return rec, rho0


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """``scipy.stats.spearmanr(x, y)``, as :func:`tl_geom.geometry.diagnostics.spearman`.

    On numpy arrays, without the tensor checks: the bootstrap calls it a thousand times.
    nan for fewer than 3 points [ours] or a constant input.
    """
    if x.size < 3:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.stats.ConstantInputWarning)
        return float(scipy.stats.spearmanr(x, y).statistic)  # pyright: ignore[reportAttributeAccessIssue]


def _within_layers(x: np.ndarray, layer: np.ndarray) -> np.ndarray:
    """``x`` minus its layer's mean: what varies between KV heads of one layer."""
    means = pd.Series(x).groupby(layer).transform("mean").to_numpy(np.float64)
    return x - means


def claim_rho0_recall(metrics: pd.DataFrame, heads: pd.DataFrame) -> Finding:
    """Spearman of rho0 with the KV group's mean Recall, per N >= 2, over KV heads.

    The peak ``N*`` over N, its 95% bootstrap interval (KV heads resampled), and the
    same within layers (rho0 and Recall minus their layer means). Verdict:
    :func:`rho0_recall_verdict`.
    """
    rec, rho0 = kv_recall(metrics, heads)
    ok = np.isfinite(rho0.to_numpy()) & np.isfinite(rec.to_numpy()).all(1)
    x, y = rho0.to_numpy(np.float64)[ok], rec.to_numpy(np.float64)[ok]
    layer = rec.index.get_level_values("layer").to_numpy()[ok]
    ns = rec.columns.to_numpy(np.float64)
    corr = np.array([_spearman(x, y[:, j]) for j in range(len(ns))])
    fin = np.isfinite(corr)
    j = int(np.nanargmax(np.where(fin, corr, -np.inf))) if fin.any() else 0
    iv = bootstrap_interval(lambda i: _spearman(x[i], y[i, j]), x.size) if fin.any() else None
    xw, yw = _within_layers(x, layer), _within_layers(y[:, j], layer) if fin.any() else x
    within = _spearman(xw, yw) if fin.any() else math.nan
    iv_w = bootstrap_interval(lambda i: _spearman(xw[i], yw[i]), x.size) if fin.any() else None
    shown = ", ".join(f"{int(n)}:{fmt(c)}" for n, c in zip(ns, corr, strict=True))
    peak = corr[j] if fin.any() else math.nan
    iv_text = f" [{fmt(iv[0])}, {fmt(iv[1])}]" if iv else ""
    text = (
        f"peak Spearman {fmt(peak)}{iv_text} at N={int(ns[j]) if ns.size else 0} over "
        f"{x.size} KV heads; within layers {fmt(within)} (N:rho {shown})"
    )
    plot = plot_data(ns, {"Spearman(rho0, R_N)": corr}, xlabel="N", ylabel="Spearman", logx=True)
    nums = {
        "spearman_by_n": dict(zip(ns.tolist(), corr.tolist(), strict=True)),
        "within_layers": within,
        "within_interval": list(iv_w) if iv_w else None,
        "kv_heads": int(x.size),
    }
    verdict = rho0_recall_verdict(ns, corr, iv or (math.nan, math.nan))
    return Finding(nums, text, verdict, plot, n=int(x.size), interval=iv)


def rho0_recall_verdict(ns: Numbers, spearman: Numbers, interval: tuple[float, float]) -> Verdict:
    """Recall correlates positively with rho0 across KV heads, peaking near N = 3-6.

    Over N >= 2 (Recall is 1 at N = 1): the peak ``N*`` of the Spearman correlation and
    the 95% bootstrap ``interval`` of the correlation at ``N*``. Not reproduced: the
    interval lies at or below 0.2 (at most a weak correlation); reproduced: it lies
    above 0 and ``3 <= N* <= 6``; partly: above 0 with the peak elsewhere; inconclusive:
    it contains 0 and reaches above 0.2 (too few KV heads), or there is no finite value.

    >>> rho0_recall_verdict([2, 4, 8], [0.3, 0.5, 0.2], (0.2, 0.7))
    'reproduced'
    >>> rho0_recall_verdict([2, 4, 8], [0.5, 0.3, 0.2], (0.2, 0.7))
    'partly'
    >>> rho0_recall_verdict([2, 4, 8], [-0.1, 0.1, 0.0], (-0.1, 0.15))
    'not reproduced'
    >>> rho0_recall_verdict([2, 4, 8], [0.1, 0.3, 0.0], (-0.2, 0.6))
    'inconclusive'
    """
    n, r = arrays(ns=ns, spearman=spearman)
    ok = (n >= 2) & np.isfinite(r)
    lo, hi = interval
    if not ok.any() or not (is_finite(lo) and is_finite(hi)):
        return INCONCLUSIVE
    n_star = n[ok][int(np.argmax(r[ok]))]
    if hi <= 0.2:
        return NOT
    if lo > 0:
        return REPRODUCED if 3 <= n_star <= 6 else PARTLY
    return INCONCLUSIVE
