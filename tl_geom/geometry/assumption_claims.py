"""The separability paper's empirical assumptions and head regimes, each with its verdict.

arXiv 2602.01893, spec ``geometry.md``: value norms, cosine decay, the 4-phase profile,
rho0 vs Recall (Empirical assumptions 1-4) and the Retriever / Reset / Mixer regimes
(Head taxonomy, in :mod:`tl_geom.geometry.regimes_claims`, re-exported here); their
texts are in :data:`tl_geom.geometry.claims.CLAIMS`, the paper's other claims in
:mod:`tl_geom.geometry.claims`. Each ``claim_*`` function takes the
tables of ``analyze`` and returns a :class:`~tl_geom.claim.Finding` judged by the
``*_verdict`` rule beside it (thresholds **[ours]**, :mod:`tl_geom.claim`).
"""

import math
from typing import Any

import numpy as np
import pandas as pd

from tl_geom.claim import (
    INCONCLUSIVE,
    NOT,
    PARTLY,
    REPRODUCED,
    Finding,
    Verdict,
    bootstrap_interval,
    fmt,
    is_finite,
    plot_data,
    share_verdict,
    wilson_interval,
)
from tl_geom.geometry.regimes_claims import claim_head_regimes, head_regimes_verdict
from tl_geom.geometry.rho0_claims import claim_rho0_recall, kv_units, rho0_recall_verdict

__all__ = [
    "claim_cosine_decay",
    "claim_four_phase",
    "claim_head_regimes",
    "claim_rho0_recall",
    "claim_value_norms",
    "cosine_decay_verdict",
    "four_phase_verdict",
    "head_regimes_verdict",
    "kv_units",
    "rho0_recall_verdict",
    "value_norms_verdict",
]


def _share_plot(share: float, label: str) -> dict[str, Any]:
    return plot_data(
        ["holds", "fails"], {label: [share, 1 - share]}, kind="bar", ylabel="share of heads"
    )


def _median_interval(x: np.ndarray) -> tuple[float, tuple[float, float]]:
    x = x[np.isfinite(x)]
    if not x.size:
        return math.nan, (math.nan, math.nan)
    iv = bootstrap_interval(lambda i: float(np.median(x[i])), x.size)
    return float(np.median(x)), iv


def claim_value_norms(heads: pd.DataFrame) -> Finding:
    """Value-norm CV over positions (median over KV heads) and the sink's compression.

    ``norm_cv_positions`` (CV over positions of the mean norm across windows, sampling
    part removed) is the reading compared with the paper's 0.02-0.05; the CV over the
    tokens of one window is reported beside it. Verdict: :func:`value_norms_verdict`
    on the bootstrap interval of the median over KV heads and the KV heads compressed.
    """
    kv = kv_units(heads)
    cv_col = "norm_cv_positions" if "norm_cv_positions" in kv else "norm_cv_tokens"
    med, iv = _median_interval(kv[cv_col].to_numpy(np.float64))
    tok = float(np.nanmedian(kv["norm_cv_tokens"].to_numpy(np.float64)))
    comp = kv["sink_compressed"].to_numpy(np.float64) >= 0.5
    lam = float(np.nanmedian(kv["sink_lambda"].to_numpy(np.float64)))
    text = (
        f"median CV over positions {fmt(med, '.3f')} [{fmt(iv[0], '.3f')}, {fmt(iv[1], '.3f')}]"
        f" (paper 0.02-0.05; over tokens {fmt(tok, '.3f')}); sink compressed in "
        f"{comp.mean():.0%} of {len(kv)} KV heads (median lambda {fmt(lam)})"
    )
    cv = kv[cv_col].to_numpy(np.float64)
    qs = np.nanquantile(cv, [0.1, 0.25, 0.5, 0.75, 0.9]) if np.isfinite(cv).any() else [np.nan] * 5
    plot = plot_data(
        ["q10", "q25", "median", "q75", "q90"], {cv_col: qs},
        kind="bar", xlabel="quantile over KV heads", ylabel="CV of ||v_i||", band=(0.02, 0.05),
    )  # fmt: skip
    nums = {"median_cv_positions": med, "median_cv_tokens": tok, "compressed": int(comp.sum()),
            "kv_heads": len(kv), "median_lambda": lam}  # fmt: skip
    verdict = value_norms_verdict(iv, int(comp.sum()), len(kv))
    return Finding(nums, text, verdict, plot, n=len(kv), interval=iv)


def value_norms_verdict(
    cv_interval: tuple[float, float], compressed: int, kv_heads: int
) -> Verdict:
    """Stable value norms (paper: CV about 0.02-0.05) with a compressed sink value.

    Stable: the 95% interval of the median CV lies at or below 0.1 (the diagnostic's
    threshold); unstable: above it. Compressed: the Wilson interval of the share of KV
    heads with ``lambda < 0.5`` lies at or above 0.5; not: below. Reproduced both,
    partly one, not neither; inconclusive when either interval straddles its threshold.

    >>> value_norms_verdict((0.01, 0.04), 80, 90), value_norms_verdict((0.2, 0.3), 80, 90)
    ('reproduced', 'partly')
    >>> value_norms_verdict((0.2, 0.3), 2, 90), value_norms_verdict((0.05, 0.2), 80, 90)
    ('not reproduced', 'inconclusive')
    """
    lo, hi = cv_interval
    stable = True if is_finite(hi) and hi <= 0.1 else False if is_finite(lo) and lo > 0.1 else None
    c_lo, c_hi = wilson_interval(compressed, kv_heads)
    comp = True if kv_heads and c_lo >= 0.5 else False if kv_heads and c_hi < 0.5 else None
    if stable is None or comp is None:
        return INCONCLUSIVE
    return REPRODUCED if stable and comp else PARTLY if stable or comp else NOT


def claim_cosine_decay(heads: pd.DataFrame) -> Finding:
    """Share of KV heads where the exponential decay to a plateau holds (>= half the windows).

    Verdict (:func:`cosine_decay_verdict`) on the Wilson interval of that share.
    """
    kv = kv_units(heads)
    k, n = int((kv["decay_holds"].to_numpy(np.float64) >= 0.5).sum()), len(kv)
    r2 = float(np.nanmedian(kv["beta_r2"].to_numpy(np.float64)))
    beta = float(np.nanmedian(kv["beta"].to_numpy(np.float64)))
    c_inf = kv["c_inf"].to_numpy(np.float64) if "c_inf" in kv else np.array([np.nan])
    text = (
        f"exponential decay holds in {k} of {n} KV heads (median beta {fmt(beta, '.3g')}, "
        f"plateau c_inf {fmt(float(np.nanmedian(c_inf)))}, R^2 {fmt(r2)})"
    )
    nums = {"holds": k, "kv_heads": n, "median_r2": r2, "median_beta": beta}
    share = k / n if n else math.nan
    return Finding(
        nums, text, cosine_decay_verdict(k, n), _share_plot(share, "decay"),
        n=n, interval=wilson_interval(k, n),
    )  # fmt: skip


def cosine_decay_verdict(holds: int, kv_heads: int) -> Verdict:
    """Exponential decay of value cosine similarity with distance.

    ``holds`` of ``kv_heads`` KV heads pass the diagnostic (``decay.cosine_decay``).
    :func:`tl_geom.claim.share_verdict`: reproduced ``>= 0.5``, partly ``>= 0.2``, not
    below, on the Wilson interval; inconclusive when it straddles a threshold.

    >>> cosine_decay_verdict(80, 90), cosine_decay_verdict(30, 90), cosine_decay_verdict(2, 90)
    ('reproduced', 'partly', 'not reproduced')
    >>> cosine_decay_verdict(2, 3)
    'inconclusive'
    """
    return share_verdict(holds, kv_heads)


def claim_four_phase(heads: pd.DataFrame) -> Finding:
    """Share of heads whose mean final-query profile fits the four phases.

    Verdict (:func:`four_phase_verdict`): ``>= 0.5`` reproduced,
    ``>= 0.2`` partly, else not.
    """
    holds = heads["profile_holds"].astype(str).str.lower().isin(["true", "1", "1.0"])
    k, n = int(holds.sum()), len(holds)
    share = k / n if n else math.nan
    r2 = float(np.nanmedian(heads["profile_r2"].to_numpy(np.float64)))
    text = f"4-phase fit holds in {k} of {n} heads (median R^2 {fmt(r2)})"
    nums = {"share_heads": share, "median_r2": r2}
    return Finding(
        nums, text, four_phase_verdict(k, n), _share_plot(share, "4-phase"),
        n=n, interval=wilson_interval(k, n),
    )  # fmt: skip


def four_phase_verdict(holds: int, heads: int) -> Verdict:
    """Four-phase attention profile (sink, plateau, oscillating band, recency ramp).

    ``holds`` of ``heads`` mean final-query profiles fit the 4 segments (the
    diagnostic); :func:`tl_geom.claim.share_verdict` (0.5 / 0.2, Wilson interval).

    >>> four_phase_verdict(90, 100), four_phase_verdict(30, 100), four_phase_verdict(5, 100)
    ('reproduced', 'partly', 'not reproduced')
    """
    return share_verdict(holds, heads)
