"""The separability paper's claims (arXiv 2602.01893; spec ``geometry.md``), each with its verdict.

:data:`CLAIMS` holds the texts of all the paper's claims. Here: top-N vs random N-subsets,
the peak at small N and sparsification; the empirical assumptions and the head regimes
are in :mod:`tl_geom.geometry.assumption_claims`. Each ``claim_*`` function takes what the
library measured (the tables of ``analyze``, ``sparsify``) and returns a
:class:`~tl_geom.claim.Finding`: the numbers it looked at, a one-line ``measured`` text,
the verdict of its rule (the ``*_verdict`` function beside it, restated in the
docstring) and the data of its plot. Thresholds are ours **[ours]** (:mod:`tl_geom.claim`).
No model runs here: :mod:`tl_geom.app.reproduce` runs the experiments and calls these.
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any

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
    plot_data,
    share_verdict,
    wilson_interval,
)
from tl_geom.errors import TlGeomError

__all__ = [
    "CLAIMS",
    "PAPER",
    "claim_peak_small_n",
    "claim_sparsify",
    "claim_top_beats_random",
    "peak_small_n_verdict",
    "sparsify_verdict",
    "top_beats_random_verdict",
]

PAPER = "arXiv 2602.01893"

CLAIMS: dict[str, ClaimText] = {
    "top_beats_random": ClaimText(
        "top-N separability exceeds random N-subsets", PAPER, "Metrics, random baseline"
    ),
    "peak_small_n": ClaimText(
        "strongest non-trivial separation at N about 1-4", PAPER, "Protocol, headline results"
    ),
    "rho0_recall": ClaimText(
        "Recall correlates with rho0 across heads, peak near N = 3-6",
        PAPER,
        "Empirical assumptions 4",
    ),
    "value_norms": ClaimText(
        "value norms stable (CV about 0.02-0.05) with a compressed sink value",
        PAPER,
        "Empirical assumptions 1",
    ),
    "cosine_decay": ClaimText(
        "value cosine similarity decays exponentially with distance",
        PAPER,
        "Empirical assumptions 2",
    ),
    "four_phase": ClaimText(
        "four-phase attention profile (sink, plateau, band, ramp)",
        PAPER,
        "Empirical assumptions 3",
    ),
    "head_regimes": ClaimText(
        "three head regimes, depth order Retriever -> Reset -> Mixer", PAPER, "Head taxonomy"
    ),
    "sparsify": ClaimText(
        "type-guided sparsification beats random, not consistently the heuristics",
        PAPER,
        "Sparsification",
    ),
}
"""Claim id -> text, paper and section (spec: geometry.md)."""


def _by_n(metrics: pd.DataFrame, col: str) -> pd.Series:
    return pd.Series(metrics.groupby("n")[col].mean())


def claim_top_beats_random(metrics: pd.DataFrame) -> Finding:
    """Share of heads whose mean top-N F1 over 2 <= N <= 4 beats the random-subset F1.

    Verdict (:func:`top_beats_random_verdict`) on the Wilson interval of that share over
    the query heads (each head's F1 is its own: its weights pick its top N).
    """
    small = pd.DataFrame(metrics[(metrics["n"] >= 2) & (metrics["n"] <= 4)])
    small = small.assign(gap=small["f1"] - small["f1_random"])
    gap = pd.Series(small.groupby(["layer", "head"])["gap"].mean()).to_numpy(np.float64)
    gap = gap[np.isfinite(gap)]
    k, n = int((gap > 0).sum()), len(gap)
    share = k / n if n else math.nan
    f1, rnd = _by_n(metrics, "f1"), _by_n(metrics, "f1_random")
    n0 = 2 if 2 in f1.index else int(f1.index[min(1, len(f1) - 1)])
    iv = wilson_interval(k, n)
    text = (
        f"{share:.0%} [{iv[0]:.0%}, {iv[1]:.0%}] of {n} heads beat random at N=2-4; "
        f"F1 {fmt(float(f1.loc[n0]))} vs random {fmt(float(rnd.loc[n0]))} at N={n0}"
    )
    plot = plot_data(
        f1.index, {"top-N": f1.to_numpy(), "random N-subsets": rnd.to_numpy()},
        xlabel="N", ylabel="mean F1 over heads", logx=True,
    )  # fmt: skip
    nums = {"share_heads": share, "heads": n}
    return Finding(nums, text, top_beats_random_verdict(k, n), plot, n=n, interval=iv)


def top_beats_random_verdict(beats: int, heads: int) -> Verdict:
    """Top-N separability exceeds random N-subsets.

    ``beats`` of ``heads`` heads have a top-N F1 above the random-subset F1, averaged
    over the small N (2 <= N <= 4). :func:`tl_geom.claim.share_verdict` with thresholds
    0.8 / 0.5 on the Wilson 95% interval: reproduced at or above 0.8, not below 0.5,
    partly inside, inconclusive when it straddles a threshold (too few heads).

    >>> [top_beats_random_verdict(k, 270) for k in (260, 180, 40)]
    ['reproduced', 'partly', 'not reproduced']
    >>> top_beats_random_verdict(5, 6)
    'inconclusive'
    """
    return share_verdict(beats, heads, high=0.8, low=0.5)


PEAK_DRAWS = 2000
"""Bootstrap resamples of the heads for the interval of ``N*`` [ours]."""


def peak_bootstrap(f1: np.ndarray, ns: np.ndarray, *, draws: int = PEAK_DRAWS, seed: int = 0):
    """``N* = argmax_{N >= 2}`` of the mean F1 over heads, and its 95% bootstrap interval.

    Heads (rows of ``f1 [heads, N]``, N >= 2 columns, finite rows) resampled with
    replacement in one batch (counts ``C [draws, heads]``, means ``C @ f1 / heads``);
    the interval is the 2.5% and 97.5% percentiles of the resampled ``N*``, nan with
    fewer than 10 heads [ours: as :func:`tl_geom.claim.bootstrap_interval`].
    """
    n_heads = f1.shape[0]
    if not n_heads or not ns.size:
        return math.nan, (math.nan, math.nan)
    n_star = float(ns[int(np.argmax(f1.mean(0)))])
    if n_heads < 10:
        return n_star, (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    counts = np.zeros((draws, n_heads))
    np.add.at(counts, (np.arange(draws)[:, None], rng.integers(0, n_heads, (draws, n_heads))), 1)
    boot = ns[np.argmax(counts @ f1, axis=1)]
    return n_star, (float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975)))


def claim_peak_small_n(metrics: pd.DataFrame) -> Finding:
    """Where the mean F1 over heads peaks, over N >= 2, with a bootstrap interval over heads.

    Verdict (:func:`peak_small_n_verdict`) on the interval of ``N*``.
    """
    f1 = _by_n(metrics, "f1")
    ns, vals = f1.index.to_numpy(np.float64), f1.to_numpy(np.float64)
    per_head = pd.DataFrame(metrics[metrics["n"] >= 2]).pivot_table(
        index=["layer", "head"], columns="n", values="f1", aggfunc="mean"
    )
    table = per_head.to_numpy(np.float64)
    table = table[np.isfinite(table).all(1)] if table.size else table
    n_star, iv = peak_bootstrap(table, per_head.columns.to_numpy(np.float64))
    shown = ", ".join(f"{int(n)}:{fmt(v)}" for n, v in zip(ns, vals, strict=True) if n >= 2)
    text = (
        f"F1 peaks at N={fmt(n_star, '.0f')} [{fmt(iv[0], '.0f')}, {fmt(iv[1], '.0f')}] over "
        f"N>=2 and {len(table)} heads (N:F1 {shown})"
    )
    plot = plot_data(ns, {"top-N F1": vals}, xlabel="N", ylabel="mean F1 over heads", logx=True)
    nums = {"n_star": n_star, "f1_by_n": dict(zip(ns.tolist(), vals.tolist(), strict=True))}
    return Finding(nums, text, peak_small_n_verdict(iv), plot, n=len(table), interval=iv)


def peak_small_n_verdict(n_star_interval: tuple[float, float]) -> Verdict:
    """Strongest non-trivial separation at N about 1-4.

    ``n_star_interval``: the 95% bootstrap interval (heads resampled) of ``N* =
    argmax_{N >= 2} F1(N)`` of the mean F1 over heads (N = 1 is trivially perfect).
    Reproduced: it lies at or below 4; partly: inside (4, 8]; not: above 8;
    inconclusive: it straddles 4 or 8, or there is none (too few heads).

    >>> [peak_small_n_verdict(iv) for iv in ((2.0, 4.0), (6.0, 8.0), (16.0, 32.0), (2.0, 8.0))]
    ['reproduced', 'partly', 'not reproduced', 'inconclusive']
    """
    lo, hi = n_star_interval
    if not (is_finite(lo) and is_finite(hi)):
        return INCONCLUSIVE
    if hi <= 4:
        return REPRODUCED
    if lo > 8:
        return NOT
    return PARTLY if lo > 4 and hi <= 8 else INCONCLUSIVE


def claim_sparsify(table: pd.DataFrame) -> Finding:
    """Loss change per removed fraction: the type rule vs random seeds and the heuristics.

    Zero ablation. Verdict (:func:`sparsify_verdict`) on the type curve, every random
    seed's curve and the heuristics' curves; ``n`` is the number of random seeds.
    """
    t = pd.DataFrame(table[(table["fraction"] > 0) & (table["ablation"] == "zero")])
    curve = t.pivot_table(index="rule", columns="fraction", values="delta_loss", aggfunc="mean")
    fr = curve.columns.to_numpy(np.float64)
    heur = {r: curve.loc[r].to_numpy() for r in ("entropy", "sink_mass", "last_token")}
    typ, rnd = curve.loc["type"].to_numpy(), curve.loc["random"].to_numpy()
    seeds = pd.DataFrame(t[t["rule"] == "random"]).pivot_table(
        index="seed", columns="fraction", values="delta_loss", aggfunc="mean"
    )
    per_seed = seeds.reindex(columns=curve.columns).to_numpy(np.float64)
    best = min(heur, key=lambda r: float(np.nanmean(heur[r])))
    lo, hi = beats_random_interval(typ, per_seed)
    text = (
        "delta loss at "
        + "/".join(f"{f:g}" for f in fr)
        + f": type {'/'.join(fmt(x) for x in typ)}, random {'/'.join(fmt(x) for x in rnd)} "
        f"(mean of {len(per_seed)} seeds), best heuristic {best} "
        f"{'/'.join(fmt(x) for x in heur[best])}; type below every random seed at "
        f"{fmt(lo)}-{fmt(hi)} of the fractions"
    )
    plot = plot_data(
        fr, {r: curve.loc[r].to_numpy() for r in curve.index},
        xlabel="fraction of heads zeroed", ylabel="delta loss (nats)",
    )  # fmt: skip
    nums: dict[str, Any] = {str(r): curve.loc[r].tolist() for r in curve.index}
    nums["fractions"] = fr.tolist()
    nums["random_seeds"] = len(per_seed)
    verdict = sparsify_verdict(typ, per_seed, heur)
    return Finding(nums, text, verdict, plot, n=len(per_seed), interval=(lo, hi))


MIN_SEEDS = 3
"""Random seeds needed before a fraction can count as beaten or lost [ours]."""


def beats_random_interval(type_delta: Numbers, random_delta: np.ndarray) -> tuple[float, float]:
    """Bounds on the share of fractions where the type rule beats random removal.

    A fraction is beaten when the type rule's loss change lies below every random seed's
    (``random_delta [seeds, fractions]``), lost when above every seed's, undecided
    between (or with fewer than :data:`MIN_SEEDS` seeds) [ours]. Returns
    ``(beaten / F, 1 - lost / F)`` over the F fractions with finite values; (nan, nan)
    with none.
    """
    t = np.asarray(type_delta, dtype=np.float64)
    r = np.asarray(random_delta, dtype=np.float64).reshape(-1, t.size)
    ok = np.isfinite(t) & np.isfinite(r).all(0) if r.shape[0] else np.zeros(t.size, bool)
    if not ok.any():
        return math.nan, math.nan
    if r.shape[0] < MIN_SEEDS:
        return 0.0, 1.0
    beaten = (t[ok] < r[:, ok].min(0)).mean()
    lost = (t[ok] > r[:, ok].max(0)).mean()
    return float(beaten), float(1.0 - lost)


def sparsify_verdict(
    type_delta: Numbers,
    random_delta: Sequence[Numbers] | np.ndarray,
    heuristic_delta: Mapping[str, Numbers],
) -> Verdict:
    """Type-guided head removal beats random, not consistently the single-metric heuristics.

    Loss changes per removed fraction (> 0), lower is better; ``random_delta`` is
    ``[seeds, fractions]``. ``[lo, hi]``: :func:`beats_random_interval`, bounds on the
    share of fractions where the type rule is below random; ``beats_all``: share where
    it is below every heuristic (entropy, sink mass, last token). Reproduced ``lo >=
    0.75`` and ``beats_all < 1``; partly ``lo >= 0.5`` with ``hi < 0.75`` or ``beats_all
    = 1`` (beating the heuristics too is more than the paper claims); not ``hi < 0.5``;
    inconclusive otherwise: too few seeds (< 3) or fractions to tell.

    >>> r = [[0.5, 0.6], [0.4, 0.7], [0.6, 0.5]]
    >>> sparsify_verdict([0.1, 0.2], r, {"entropy": [0.05, 0.3]})
    'reproduced'
    >>> sparsify_verdict([0.1, 0.2], r, {"entropy": [0.5, 0.6]})
    'partly'
    >>> sparsify_verdict([0.9, 0.9], r, {"entropy": [0.5, 0.6]})
    'not reproduced'
    >>> sparsify_verdict([0.1, 0.2], r[:2], {"entropy": [0.05, 0.3]})
    'inconclusive'
    """
    t = arrays(type_delta=type_delta)[0]
    if not heuristic_delta:
        raise TlGeomError("heuristic_delta is empty; give at least one heuristic rule")
    r = np.asarray(random_delta, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] != t.size:
        raise TlGeomError(f"random_delta has shape {r.shape}; expected [seeds, {t.size}]")
    h = np.stack([arrays(type_delta=t, h=v)[1] for v in heuristic_delta.values()])
    lo, hi = beats_random_interval(t, r)
    if not (is_finite(lo) and is_finite(hi)):
        return INCONCLUSIVE
    ok = np.isfinite(t)
    beats_all = float((t[ok] < np.nanmin(h[:, ok], axis=0)).mean())
    if lo >= 0.75:
        return REPRODUCED if beats_all < 1 else PARTLY
    if hi < 0.5:
        return NOT
    return PARTLY if lo >= 0.5 and (hi < 0.75 or beats_all >= 1) else INCONCLUSIVE
