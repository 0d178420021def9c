"""Three head regimes and their depth order, with a bootstrap over KV groups (head taxonomy).

Spec: geometry.md, "Head taxonomy": the paper finds Retriever, Reset and Mixer heads, in
that order with depth, in LLaMA-2-7B. A head's type is a per-query-head label, but the
query heads of one KV group share their values, so their labels are not independent: the
interval resamples KV groups (``layer, kv_head``) with all their query heads, each group
counted once **[ours]**. Thresholds **[ours]** (:mod:`tl_geom.claim`).
"""

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from tl_geom.claim import (
    INCONCLUSIVE,
    NOT,
    PARTLY,
    REPRODUCED,
    Finding,
    Verdict,
    fmt,
    is_finite,
    plot_data,
)

__all__ = ["ORDER", "PRESENT", "claim_head_regimes", "head_regimes_verdict", "regime_bootstrap"]

ORDER = ("Retriever", "Reset", "Mixer")
"""The paper's depth order (LLaMA-2-7B)."""
PRESENT = 0.05
"""A regime is present when at least this share of heads has its type [ours]."""
DRAWS = 2000
"""Bootstrap resamples of the KV groups [ours]."""
MIN_GROUPS = 10
"""Fewer KV groups give no interval (inconclusive) [ours], as in ``claim.bootstrap_interval``."""


def regime_bootstrap(
    heads: pd.DataFrame, *, draws: int = DRAWS, seed: int = 0
) -> dict[str, np.ndarray]:
    """Type shares, mean relative depths and the order gap, observed and per resample.

    depth_t = mean over heads of type t of (layer - min layer) / (layer span);
    gap = min(depth_Reset - depth_Retriever, depth_Mixer - depth_Reset) (> 0 iff the
    paper's order holds). KV groups are resampled with replacement (``draws`` times,
    one batch: counts ``C [draws, groups]``; per type ``N_t = C @ n_gt``, ``S_t = C @ s_gt``).

    Returns:
        ``share``, ``depth`` ``[draws + 1, 3]`` (row 0 the observed sample, columns in
        :data:`ORDER`), ``gap`` ``[draws + 1]``, ``groups`` (a 1-element array).
    """
    h = heads if "kv_head" in heads else heads.assign(kv_head=heads["head"])
    layers = h["layer"].to_numpy(np.float64)
    span = max(float(layers.max() - layers.min()), 1.0)
    depth = (layers - layers.min()) / span
    group = h.groupby(["layer", "kv_head"], sort=True).ngroup().to_numpy()
    n_groups = int(group.max()) + 1
    kinds = h["type"].astype(str).to_numpy()
    onehot = np.stack([kinds == t for t in ORDER], -1).astype(np.float64)  # [heads, 3]
    n_gt = np.zeros((n_groups, 3))
    s_gt = np.zeros((n_groups, 3))
    np.add.at(n_gt, group, onehot)
    np.add.at(s_gt, group, onehot * depth[:, None])
    size = np.bincount(group, minlength=n_groups).astype(np.float64)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n_groups, (draws, n_groups))
    counts = np.zeros((draws + 1, n_groups))
    counts[0] = 1.0
    np.add.at(counts, (np.arange(1, draws + 1)[:, None], picks), 1.0)
    n_t, s_t = counts @ n_gt, counts @ s_gt
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_depth = np.where(n_t > 0, s_t / n_t, np.nan)
    share = n_t / (counts @ size)[:, None]
    gap = np.minimum(mean_depth[:, 1] - mean_depth[:, 0], mean_depth[:, 2] - mean_depth[:, 1])
    return {"share": share, "depth": mean_depth, "gap": gap, "groups": np.array([n_groups])}


def _interval(x: np.ndarray, groups: int) -> tuple[float, float]:
    """Percentile 95% interval of the resamples.

    nan with fewer than ``MIN_GROUPS`` groups, or when fewer than half of the resamples
    are finite (a type missing from most of them) [ours].
    """
    ok = x[np.isfinite(x)]
    if groups < MIN_GROUPS or ok.size < x.size / 2:
        return math.nan, math.nan
    return float(np.quantile(ok, 0.025)), float(np.quantile(ok, 0.975))


def claim_head_regimes(heads: pd.DataFrame, kmeans_ari: float) -> Finding:
    """Type shares and mean relative depths, with bootstrap intervals over KV groups.

    Verdict: :func:`head_regimes_verdict` on the share intervals and the interval of the
    order gap ``min(depth_Reset - depth_Retriever, depth_Mixer - depth_Reset)``.
    """
    boot = regime_bootstrap(heads)
    groups = int(boot["groups"][0])
    share0, depth0, gap0 = boot["share"][0], boot["depth"][0], float(boot["gap"][0])
    share_iv = {t: _interval(boot["share"][1:, i], groups) for i, t in enumerate(ORDER)}
    gap_iv = _interval(boot["gap"][1:], groups)
    shares = {t: float(share0[i]) for i, t in enumerate(ORDER)}
    depth = {t: float(depth0[i]) for i, t in enumerate(ORDER)}
    order = " -> ".join(sorted((t for t in ORDER if np.isfinite(depth[t])), key=depth.__getitem__))
    text = (
        "shares " + ", ".join(f"{t} {shares[t]:.0%}" for t in ORDER)
        + f"; depth order {order or 'n/a'}; gap to the paper's order {fmt(gap0)} "
        f"[{fmt(gap_iv[0])}, {fmt(gap_iv[1])}] over {groups} KV groups; "
        f"k-means ARI {fmt(kmeans_ari)}"
    )  # fmt: skip
    plot = plot_data(
        list(ORDER), {"mean relative depth": [depth[t] for t in ORDER]},
        kind="bar", ylabel="mean layer / (layers - 1)",
    )  # fmt: skip
    nums = {"shares": shares, "depth": depth, "gap": gap0, "kmeans_ari": kmeans_ari,
            "share_intervals": {t: list(v) for t, v in share_iv.items()}}  # fmt: skip
    verdict = head_regimes_verdict(share_iv, gap_iv)
    return Finding(nums, text, verdict, plot, n=groups, interval=gap_iv)


def head_regimes_verdict(
    share_intervals: Mapping[str, tuple[float, float]], gap_interval: tuple[float, float]
) -> Verdict:
    """Three head regimes, depth order Retriever -> Reset -> Mixer (the paper's, LLaMA-2-7B).

    ``share_intervals``: 95% interval of each type's share of heads; ``gap_interval``:
    95% interval of ``min(depth_Reset - depth_Retriever, depth_Mixer - depth_Reset)``
    (mean relative depths; > 0 iff the paper's order holds). Not reproduced: some
    type's share lies below 0.05 (fewer than three regimes). Reproduced: every share at
    or above 0.05 and the gap above 0. Partly: three regimes, the gap below 0 (another
    order). Inconclusive: a share or the gap straddles its threshold, or no interval
    (too few KV groups).

    >>> s = {"Retriever": (0.1, 0.2), "Reset": (0.2, 0.3), "Mixer": (0.1, 0.3)}
    >>> head_regimes_verdict(s, (0.05, 0.2)), head_regimes_verdict(s, (-0.3, -0.1))
    ('reproduced', 'partly')
    >>> head_regimes_verdict({**s, "Mixer": (0.0, 0.01)}, (0.05, 0.2))
    'not reproduced'
    >>> head_regimes_verdict(s, (-0.1, 0.2)), head_regimes_verdict(s, (math.nan, math.nan))
    ('inconclusive', 'inconclusive')
    """
    ivs = [share_intervals.get(t, (math.nan, math.nan)) for t in ORDER]
    if any(is_finite(hi) and hi < PRESENT for _, hi in ivs):
        return NOT
    if not all(is_finite(lo) and lo >= PRESENT for lo, _ in ivs):
        return INCONCLUSIVE
    lo, hi = gap_interval
    if is_finite(lo) and lo > 0:
        return REPRODUCED
    if is_finite(hi) and hi < 0:
        return PARTLY
    return INCONCLUSIVE
