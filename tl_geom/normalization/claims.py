"""The normalization paper's claims (arXiv 2508.17821; spec ``normalization.md``) and verdicts.

Each ``claim_*`` function takes a table of the normalization experiments (d~ against L
and N, the KS critical N, N_s/N, the gradient sensitivity) and returns a
:class:`~tl_geom.claim.Finding`: the numbers it looked at, a one-line ``measured`` text,
the verdict of its rule (the ``*_verdict`` function beside it, restated in the
docstring) and the data of its plot. :data:`CLAIMS` holds the claim texts and sections.
Thresholds are ours **[ours]** (:mod:`tl_geom.claim`). No model runs here:
:mod:`tl_geom.app.reproduce` runs the experiments and calls these.
"""

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
    plot_data,
)
from tl_geom.normalization.critical import MIN_WINDOWS
from tl_geom.normalization.distance_claims import (
    claim_distance_length,
    claim_distance_plateau,
    claim_recall_saturation,
    distance_length_verdict,
    distance_plateau_verdict,
    plateau_changes,
    recall_saturation_verdict,
)
from tl_geom.normalization.gradient_claims import (
    claim_gradient_sensitivity,
    gradient_sensitivity_verdict,
    sensitivity_stats,
)

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
    "plateau_changes",
    "recall_saturation_verdict",
    "sensitivity_stats",
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
    (:func:`critical_n_verdict`) on the medians. The finding's ``interval`` is the range
    of those per-L medians, what the verdict reads (every one within 2x of 0.06), not a
    confidence interval [ours]: the per-head tests already carry their sample size
    (``windows``), and with most heads rejecting at every N the medians are inf.
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
