"""The separability paper's empirical assumptions and head regimes, each with its verdict.

arXiv 2602.01893, spec ``geometry.md``: value norms, cosine decay, the 4-phase profile,
rho0 vs Recall (Empirical assumptions 1-4) and the Retriever / Reset / Mixer regimes
(Head taxonomy); their texts are in :data:`tl_geom.geometry.claims.CLAIMS`, the paper's
other claims in :mod:`tl_geom.geometry.claims`. Each ``claim_*`` function takes the
tables of ``analyze`` and returns a :class:`~tl_geom.claim.Finding` judged by the
``*_verdict`` rule beside it (thresholds **[ours]**, :mod:`tl_geom.claim`).
"""

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from tl_geom.claim import (
    NOT,
    PARTLY,
    REPRODUCED,
    Finding,
    Numbers,
    Verdict,
    arrays,
    by_share,
    fmt,
    is_finite,
    plot_data,
)
from tl_geom.geometry.diagnostics import sink_recall_correlation

__all__ = [
    "claim_cosine_decay",
    "claim_four_phase",
    "claim_head_regimes",
    "claim_rho0_recall",
    "claim_value_norms",
    "cosine_decay_verdict",
    "four_phase_verdict",
    "head_regimes_verdict",
    "rho0_recall_verdict",
    "value_norms_verdict",
]


def _share_plot(share: float, label: str) -> dict[str, Any]:
    return plot_data(
        ["holds", "fails"], {label: [share, 1 - share]}, kind="bar", ylabel="share of heads"
    )


def claim_rho0_recall(metrics: pd.DataFrame, heads: pd.DataFrame) -> Finding:
    """Spearman correlation of rho0 with Recall across heads, per N (N >= 2).

    Verdict (:func:`rho0_recall_verdict`): reproduced peak ``> 0.2`` at
    ``3 <= N* <= 6``, partly ``> 0.2`` elsewhere, else not.
    """
    rec = metrics.pivot_table(index=["layer", "head"], columns="n", values="recall")
    rec = rec[sorted(c for c in rec.columns if c >= 2)]
    rho0 = heads.set_index(["layer", "head"])["rho0"].reindex(rec.index)
    ok = np.isfinite(rho0.to_numpy()) & np.isfinite(rec.to_numpy()).all(1)
    ns = rec.columns.to_numpy(np.float64)
    if ok.sum() >= 2:
        corr = sink_recall_correlation(
            torch.tensor(rho0.to_numpy()[ok]), torch.tensor(rec.to_numpy()[ok])
        ).spearman.numpy()
    else:
        corr = np.full(len(ns), np.nan)
    fin = np.isfinite(corr)
    i = int(np.nanargmax(np.where(fin, corr, -np.inf))) if fin.any() else 0
    shown = ", ".join(f"{int(n)}:{fmt(c)}" for n, c in zip(ns, corr, strict=True))
    text = (
        f"peak Spearman {fmt(corr[i] if fin.any() else np.nan)} at N={int(ns[i])} (N:rho {shown})"
    )
    plot = plot_data(ns, {"Spearman(rho0, R_N)": corr}, xlabel="N", ylabel="Spearman", logx=True)
    nums = {"spearman_by_n": dict(zip(ns.tolist(), corr.tolist(), strict=True))}
    return Finding(nums, text, rho0_recall_verdict(ns, corr), plot)


def rho0_recall_verdict(ns: Numbers, spearman: Numbers) -> Verdict:
    """Recall correlates positively with rho0 across heads, peaking near N = 3-6.

    Over N >= 2 (Recall is 1 at N = 1): the peak ``N*`` of the Spearman correlation and
    its value ``rho*``. Reproduced ``rho* > 0.2`` and ``3 <= N* <= 6``; partly
    ``rho* > 0.2`` with the peak elsewhere; else not.

    >>> rho0_recall_verdict([2, 4, 8], [0.3, 0.5, 0.2])
    'reproduced'
    >>> rho0_recall_verdict([2, 4, 8], [0.5, 0.3, 0.2])
    'partly'
    >>> rho0_recall_verdict([2, 4, 8], [-0.1, 0.1, 0.0])
    'not reproduced'
    """
    n, r = arrays(ns=ns, spearman=spearman)
    ok = (n >= 2) & np.isfinite(r)
    if not ok.any():
        return NOT
    i = int(np.argmax(r[ok]))
    peak, n_star = r[ok][i], n[ok][i]
    if peak <= 0.2:
        return NOT
    return REPRODUCED if 3 <= n_star <= 6 else PARTLY


def claim_value_norms(heads: pd.DataFrame) -> Finding:
    """Median value-norm CV over heads and the share of heads with a compressed sink value.

    Verdict (:func:`value_norms_verdict`): reproduced median CV
    ``<= 0.1`` and compressed (``lambda < 0.5`` in >= half the windows) in >= half the
    heads; partly one; not neither.
    """
    cv = heads["norm_cv_tokens"].to_numpy(np.float64)
    med = float(np.nanmedian(cv))
    share = float((heads["sink_compressed"].to_numpy(np.float64) >= 0.5).mean())
    lam = float(np.nanmedian(heads["sink_lambda"].to_numpy(np.float64)))
    text = (
        f"median CV {fmt(med, '.3f')} (paper 0.02-0.05); sink compressed in {share:.0%} "
        f"(median lambda {fmt(lam)})"
    )
    qs = np.nanquantile(cv, [0.1, 0.25, 0.5, 0.75, 0.9])
    plot = plot_data(
        ["q10", "q25", "median", "q75", "q90"], {"value-norm CV": qs},
        kind="bar", xlabel="quantile over heads", ylabel="CV of ||v_i||", band=(0.02, 0.05),
    )  # fmt: skip
    nums = {"median_cv": med, "share_compressed": share, "median_lambda": lam}
    return Finding(nums, text, value_norms_verdict(med, share), plot)


def value_norms_verdict(median_cv: float, share_compressed: float) -> Verdict:
    """Stable value norms (paper: CV about 0.02-0.05) with a compressed sink value.

    Stable: median over heads of the value-norm CV ``<= 0.1`` (the diagnostic's own
    threshold). Compressed: ``lambda < 0.5`` in at least half of the heads. Reproduced
    both, partly one, not neither.

    >>> [value_norms_verdict(*x) for x in ((0.04, 0.9), (0.3, 0.9), (0.3, 0.1))]
    ['reproduced', 'partly', 'not reproduced']
    """
    stable = is_finite(median_cv) and median_cv <= 0.1
    compressed = is_finite(share_compressed) and share_compressed >= 0.5
    return REPRODUCED if stable and compressed else PARTLY if stable or compressed else NOT


def claim_cosine_decay(heads: pd.DataFrame) -> Finding:
    """Share of heads where the exponential cosine decay holds (in >= half the windows).

    Verdict (:func:`cosine_decay_verdict`): ``>= 0.5`` reproduced,
    ``>= 0.2`` partly, else not.
    """
    share = float((heads["decay_holds"].to_numpy(np.float64) >= 0.5).mean())
    r2 = float(np.nanmedian(heads["beta_r2"].to_numpy(np.float64)))
    text = f"exponential decay holds in {share:.0%} of heads (median R^2 {fmt(r2)})"
    nums = {"share_heads": share, "median_r2": r2}
    return Finding(nums, text, cosine_decay_verdict(share), _share_plot(share, "decay"))


def cosine_decay_verdict(share: float) -> Verdict:
    """Exponential decay of value cosine similarity with distance.

    ``share``: heads whose log-linear fit has ``beta > 0`` and ``R^2 >= 0.5`` (the
    diagnostic). Reproduced ``>= 0.5``, partly ``>= 0.2``, else not (:func:`by_share`).

    >>> cosine_decay_verdict(0.7), cosine_decay_verdict(0.25), cosine_decay_verdict(0.04)
    ('reproduced', 'partly', 'not reproduced')
    """
    return by_share(share)


def claim_four_phase(heads: pd.DataFrame) -> Finding:
    """Share of heads whose mean final-query profile fits the four phases.

    Verdict (:func:`four_phase_verdict`): ``>= 0.5`` reproduced,
    ``>= 0.2`` partly, else not.
    """
    holds = heads["profile_holds"].astype(str).str.lower().isin(["true", "1", "1.0"])
    share = float(holds.mean())
    r2 = float(np.nanmedian(heads["profile_r2"].to_numpy(np.float64)))
    text = f"4-phase fit holds in {share:.0%} of heads (median R^2 {fmt(r2)})"
    nums = {"share_heads": share, "median_r2": r2}
    return Finding(nums, text, four_phase_verdict(share), _share_plot(share, "4-phase"))


def four_phase_verdict(share: float) -> Verdict:
    """Four-phase attention profile (sink, plateau, oscillating band, recency ramp).

    ``share``: heads whose mean final-query profile fits the 4 segments (the
    diagnostic). Reproduced ``>= 0.5``, partly ``>= 0.2``, else not (:func:`by_share`).

    >>> four_phase_verdict(0.5), four_phase_verdict(0.2), four_phase_verdict(0.19)
    ('reproduced', 'partly', 'not reproduced')
    """
    return by_share(share)


def claim_head_regimes(heads: pd.DataFrame, kmeans_ari: float) -> Finding:
    """Type shares and mean relative depth of Retriever, Reset and Mixer heads.

    Verdict (:func:`head_regimes_verdict`): all three types >= 5% of
    heads and depth Retriever < Reset < Mixer reproduced; other order partly; else not.
    """
    layers = heads["layer"].to_numpy(np.float64)
    span = max(layers.max() - layers.min(), 1.0)
    depth_all = (layers - layers.min()) / span
    types = ("Retriever", "Reset", "Mixer")
    kinds = heads["type"].astype(str).to_numpy()
    shares = {t: float((kinds == t).mean()) for t in types}
    depth = {t: float(depth_all[kinds == t].mean()) if shares[t] else np.nan for t in types}
    order = " -> ".join(sorted((t for t in types if np.isfinite(depth[t])), key=depth.__getitem__))
    text = (
        "shares "
        + ", ".join(f"{t} {shares[t]:.0%}" for t in types)
        + f"; depth order {order or 'n/a'}; k-means ARI {fmt(kmeans_ari)}"
    )
    plot = plot_data(
        list(types), {"mean relative depth": [depth[t] for t in types]},
        kind="bar", ylabel="mean layer / (layers - 1)",
    )  # fmt: skip
    nums = {"shares": shares, "depth": depth, "kmeans_ari": kmeans_ari}
    return Finding(nums, text, head_regimes_verdict(shares, depth), plot)


def head_regimes_verdict(shares: Mapping[str, float], depth: Mapping[str, float]) -> Verdict:
    """Three head regimes (Retriever, Mixer, Reset), depth order Retriever -> Reset -> Mixer.

    ``shares``: fraction of heads of each type; ``depth``: mean relative depth (layer /
    (layers - 1)) of each type. Present: a share ``>= 0.05``. Reproduced: all three
    present and ``depth`` increasing Retriever < Reset < Mixer (the paper's order on
    LLaMA-2-7B); partly: all three present, another order; not: fewer than three.

    >>> s = {"Retriever": 0.1, "Mixer": 0.2, "Reset": 0.2}
    >>> head_regimes_verdict(s, {"Retriever": 0.2, "Reset": 0.5, "Mixer": 0.7})
    'reproduced'
    >>> head_regimes_verdict(s, {"Retriever": 0.2, "Reset": 0.7, "Mixer": 0.5})
    'partly'
    >>> head_regimes_verdict({**s, "Mixer": 0.01}, {"Retriever": 0.2, "Reset": 0.5, "Mixer": 0.7})
    'not reproduced'
    """
    types = ("Retriever", "Reset", "Mixer")
    if not all(is_finite(shares.get(t, math.nan)) and shares[t] >= 0.05 for t in types):
        return NOT
    d = [depth.get(t, math.nan) for t in types]
    ordered = all(is_finite(x) for x in d) and d[0] < d[1] < d[2]
    return REPRODUCED if ordered else PARTLY
