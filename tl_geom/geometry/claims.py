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

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from tl_geom.claim import (
    NOT,
    PARTLY,
    REPRODUCED,
    ClaimText,
    Finding,
    Numbers,
    Verdict,
    arrays,
    by_share,
    fmt,
    plot_data,
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

    Verdict (:func:`top_beats_random_verdict`): reproduced ``>= 0.8``,
    partly ``>= 0.5``, else not.
    """
    small = pd.DataFrame(metrics[(metrics["n"] >= 2) & (metrics["n"] <= 4)])
    small = small.assign(gap=small["f1"] - small["f1_random"])
    gap = pd.Series(small.groupby(["layer", "head"])["gap"].mean()).to_numpy(np.float64)
    share = float((gap > 0).mean())
    f1, rnd = _by_n(metrics, "f1"), _by_n(metrics, "f1_random")
    n0 = 2 if 2 in f1.index else int(f1.index[min(1, len(f1) - 1)])
    text = (
        f"{share:.0%} of {len(gap)} heads beat random at N=2-4; "
        f"F1 {fmt(float(f1.loc[n0]))} vs random {fmt(float(rnd.loc[n0]))} at N={n0}"
    )
    plot = plot_data(
        f1.index, {"top-N": f1.to_numpy(), "random N-subsets": rnd.to_numpy()},
        xlabel="N", ylabel="mean F1 over heads", logx=True,
    )  # fmt: skip
    nums = {"share_heads": share, "heads": len(gap)}
    return Finding(nums, text, top_beats_random_verdict(share), plot)


def top_beats_random_verdict(share: float) -> Verdict:
    """Top-N separability exceeds random N-subsets.

    ``share``: fraction of heads whose top-N F1 exceeds the random-subset F1, averaged
    over the small N (2 <= N <= 4). Reproduced ``>= 0.8``, partly ``>= 0.5``, else not.

    >>> [top_beats_random_verdict(s) for s in (0.9, 0.6, 0.2)]
    ['reproduced', 'partly', 'not reproduced']
    """
    return by_share(share, high=0.8, low=0.5)


def claim_peak_small_n(metrics: pd.DataFrame) -> Finding:
    """Where the mean F1 over heads peaks, over N >= 2.

    Verdict (:func:`peak_small_n_verdict`): reproduced ``N* <= 4``,
    partly ``N* <= 8``, else not.
    """
    f1 = _by_n(metrics, "f1")
    ns, vals = f1.index.to_numpy(np.float64), f1.to_numpy(np.float64)
    ok = ns >= 2
    n_star = int(ns[ok][int(np.nanargmax(vals[ok]))]) if ok.any() else -1
    shown = ", ".join(f"{int(n)}:{fmt(v)}" for n, v in zip(ns, vals, strict=True) if n >= 2)
    text = f"F1 peaks at N={n_star} over N>=2 (N:F1 {shown})"
    plot = plot_data(ns, {"top-N F1": vals}, xlabel="N", ylabel="mean F1 over heads", logx=True)
    nums = {"n_star": n_star, "f1_by_n": dict(zip(ns.tolist(), vals.tolist(), strict=True))}
    return Finding(nums, text, peak_small_n_verdict(ns, vals), plot)


def peak_small_n_verdict(ns: Numbers, f1: Numbers) -> Verdict:
    """Strongest non-trivial separation at N about 1-4.

    ``N* = argmax_{N >= 2} F1(N)`` of the mean F1 over heads (N = 1 is trivially
    perfect). Reproduced ``N* <= 4``, partly ``N* <= 8``, else (or no finite F1) not.

    >>> peak_small_n_verdict([1, 2, 4, 8, 16], [1.0, 0.7, 0.5, 0.4, 0.3])
    'reproduced'
    >>> peak_small_n_verdict([1, 2, 4, 8, 16], [1.0, 0.3, 0.4, 0.6, 0.5])
    'partly'
    """
    n, f = arrays(ns=ns, f1=f1)
    ok = (n >= 2) & np.isfinite(f)
    if not ok.any():
        return NOT
    n_star = n[ok][int(np.argmax(f[ok]))]
    return REPRODUCED if n_star <= 4 else PARTLY if n_star <= 8 else NOT


def claim_sparsify(table: pd.DataFrame) -> Finding:
    """Loss change per removed fraction: the type rule vs random and the heuristics (zero ablation).

    Verdict (:func:`sparsify_verdict`): type below random at >= 75% of
    the fractions and not below every heuristic at all of them reproduced; type below
    random at >= 50% partly; else not.
    """
    t = pd.DataFrame(table[(table["fraction"] > 0) & (table["ablation"] == "zero")])
    curve = t.pivot_table(index="rule", columns="fraction", values="delta_loss", aggfunc="mean")
    fr = curve.columns.to_numpy(np.float64)
    heur = {r: curve.loc[r].to_numpy() for r in ("entropy", "sink_mass", "last_token")}
    typ, rnd = curve.loc["type"].to_numpy(), curve.loc["random"].to_numpy()
    best = min(heur, key=lambda r: float(np.nanmean(heur[r])))
    text = (
        "delta loss at "
        + "/".join(f"{f:g}" for f in fr)
        + f": type {'/'.join(fmt(x) for x in typ)}, random {'/'.join(fmt(x) for x in rnd)}, "
        f"best heuristic {best} {'/'.join(fmt(x) for x in heur[best])}"
    )
    plot = plot_data(
        fr, {r: curve.loc[r].to_numpy() for r in curve.index},
        xlabel="fraction of heads zeroed", ylabel="delta loss (nats)",
    )  # fmt: skip
    nums: dict[str, Any] = {str(r): curve.loc[r].tolist() for r in curve.index}
    nums["fractions"] = fr.tolist()
    return Finding(nums, text, sparsify_verdict(typ, rnd, heur), plot)


def sparsify_verdict(
    type_delta: Numbers,
    random_delta: Numbers,
    heuristic_delta: Mapping[str, Numbers],
) -> Verdict:
    """Type-guided head removal beats random, not consistently the single-metric heuristics.

    Loss changes per removed fraction (> 0), lower is better. ``beats_random``: share of
    fractions where the type rule is below the random rule (mean over seeds);
    ``beats_all``: share where it is below every heuristic (entropy, sink mass, last
    token). Reproduced ``beats_random >= 0.75`` and ``beats_all < 1``; partly
    ``beats_random >= 0.5`` (including the case where it also always beats the
    heuristics, which is more than the paper claims); else not.

    >>> sparsify_verdict([0.1, 0.2], [0.5, 0.6], {"entropy": [0.05, 0.3]})
    'reproduced'
    >>> sparsify_verdict([0.1, 0.2], [0.5, 0.6], {"entropy": [0.5, 0.6]})
    'partly'
    >>> sparsify_verdict([0.9, 0.9], [0.5, 0.6], {"entropy": [0.5, 0.6]})
    'not reproduced'
    """
    t, r = arrays(type_delta=type_delta, random_delta=random_delta)
    if not heuristic_delta:
        raise TlGeomError("heuristic_delta is empty; give at least one heuristic rule")
    h = np.stack([arrays(type_delta=t, h=v)[1] for v in heuristic_delta.values()])
    ok = np.isfinite(t) & np.isfinite(r)
    if not ok.any():
        return NOT
    beats_random = float((t[ok] < r[ok]).mean())
    beats_all = float((t[ok] < np.nanmin(h[:, ok], axis=0)).mean())
    if beats_random >= 0.75 and beats_all < 1:
        return REPRODUCED
    return PARTLY if beats_random >= 0.5 else NOT
