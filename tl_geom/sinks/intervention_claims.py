"""The sinks paper's intervention claims (arXiv 2605.06611; spec ``sinks.md``), with verdicts.

The self-only mask, variance amplification (against the norm-matched control) and the
HeadNorm pretraining study; the claim texts are in :data:`tl_geom.sinks.claims.CLAIMS`.
Thresholds are ours **[ours]** (:mod:`tl_geom.claim`). No model runs here.
"""

from typing import Any

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
    fmt,
    is_finite,
    plot_data,
)

__all__ = [
    "claim_headnorm",
    "claim_self_only",
    "claim_variance_amplification",
    "combine_verdicts",
    "headnorm_verdict",
    "self_only_verdict",
    "variance_amplification_verdict",
]


def _sink_formed(before: float, after: float) -> bool:
    return is_finite(before) and is_finite(after) and after >= 0.1 and after >= 5 * before


def claim_self_only(
    before: np.ndarray, after: np.ndarray, position: int, *, chain: dict[str, Any] | None = None
) -> Finding:
    """``imp(k)`` per layer (mean over heads and samples) before and under the self-only mask.

    ``chain`` (reported, not judged): the super neuron's write into the massive dim at
    position 0, at k, and at k under the mask -- does the mask make k a "first token"?

    Verdict (:func:`self_only_verdict`) on the means over layers:
    ``after >= 0.1`` and ``>= 5x before`` reproduced, ``>= 2x`` partly, else not.
    """
    b, a = float(before.mean()), float(after.mean())
    text = f"mean imp({position}) {fmt(b, '.3f')} -> {fmt(a, '.3f')} (max layer {fmt(after.max())})"
    if chain:
        text += (
            f"; super neuron L{int(chain['layer'])}/{int(chain['neuron'])} writes dim "
            f"{int(chain['dim'])}: {fmt(chain['write_at_0'], '.4g')} at 0, "
            f"{fmt(chain['write_at_k'], '.4g')} at {position}, "
            f"{fmt(chain['write_at_k_masked'], '.4g')} at {position} masked"
        )
    plot = plot_data(
        range(len(before)), {"before": before, "self-only mask": after},
        xlabel="layer", ylabel=f"imp({position})",
    )  # fmt: skip
    nums = {"before": b, "after": a, "chain": chain}
    return Finding(nums, text, self_only_verdict(b, a), plot)


def self_only_verdict(before: float, after: float) -> Verdict:
    """A self-only mask at k creates a sink at k downstream.

    ``imp(k)`` averaged over layers and heads, before and under the mask. Reproduced
    ``after >= 0.1`` and ``after >= 5 before``; partly ``after >= 2 before``; else not.

    >>> self_only_verdict(0.01, 0.26), self_only_verdict(0.01, 0.03), self_only_verdict(0.01, 0.01)
    ('reproduced', 'partly', 'not reproduced')
    """
    if _sink_formed(before, after):
        return REPRODUCED
    return PARTLY if is_finite(before) and is_finite(after) and after >= 2 * before else NOT


Z = 2.0
"""Half-width of the intervals, in standard errors (about 95%) [ours]."""
MIN_SAMPLES = 10
"""Fewer samples than this: no standard error is trusted, the verdict is inconclusive [ours]."""


def _best_edits(summary: pd.DataFrame) -> pd.DataFrame:
    """Per k: the edited layer whose treatment at the largest lam has the largest lower bound."""
    top = summary[(summary["arm"] == "amplify") & (summary["lam"] == summary["lam"].max())]
    lo = top["imp_k_after"] - Z * top["delta_k_se"]
    best = top.assign(lo=lo).sort_values("lo").groupby("k").tail(1)
    return pd.DataFrame(best[["k", "edited_layer"]])


def claim_variance_amplification(summary: pd.DataFrame) -> Finding:
    """:func:`~tl_geom.sinks.shift.shift_summary` of a sweep: ``imp(k)`` downstream of each edit.

    Per k, the edited layer whose treatment at the largest lam has the largest lower
    bound ``imp - 2 se`` is judged [ours: a selection over layers, reported]; per arm the
    ``imp(k)`` by lam with its se. Verdict per k :func:`variance_amplification_verdict`,
    combined by :func:`combine_verdicts`.
    """
    rows: list[dict[str, Any]] = []
    verdicts: list[Verdict] = []
    text: list[str] = []
    col = {c: summary[c].to_numpy() for c in ("arm", "k", "lam", "edited_layer", "n")}
    imp, se = (
        summary["imp_k_after"].to_numpy(np.float64),
        summary["delta_k_se"].to_numpy(np.float64),
    )
    imp0 = summary["imp_k_before"].to_numpy(np.float64)
    for k, layer in _best_edits(summary).itertuples(index=False):
        here = (col["k"] == k) & (col["edited_layer"] == layer)
        a_i = np.flatnonzero(here & (col["arm"] == "amplify"))
        c_i = np.flatnonzero(here & (col["arm"] == "control"))
        a_i, c_i = a_i[np.argsort(col["lam"][a_i])], c_i[np.argsort(col["lam"][c_i])]
        before = float(imp0[a_i].mean())
        n_k = int(col["n"][here].min())
        v = variance_amplification_verdict(before, imp[a_i], se[a_i], imp[c_i], se[c_i], n_k)
        verdicts.append(v)
        a, c, se_a, se_c = (
            float(x[i[-1]]) for x, i in ((imp, a_i), (imp, c_i), (se, a_i), (se, c_i))
        )
        rows.append(
            {"k": int(k), "layer": int(layer), "before": before, "amplify": a,
             "amplify_se": se_a, "control": c, "control_se": se_c, "verdict": v}
        )  # fmt: skip
        text.append(
            f"k={int(k)} (edit L{int(layer)}): {fmt(before, '.3f')} -> amplify "
            f"{fmt(a, '.3f')}±{fmt(Z * se_a, '.3f')}, "
            f"control {fmt(c, '.3f')}±{fmt(Z * se_c, '.3f')}"
        )
    n = int(col["n"].min())
    lam = float(col["lam"].max())
    layers = sorted({int(x) for x in col["edited_layer"]})
    at_lam = col["lam"] == lam
    series = {
        arm: [float(imp[at_lam & (col["arm"] == arm) & (col["edited_layer"] == x)].mean())
              for x in layers]
        for arm in ("amplify", "control")
    }  # fmt: skip
    plot = plot_data(
        layers, series, xlabel="edited layer", ylabel=f"imp(k) downstream, lam {lam:g}"
    )
    measured = f"lam {lam:g}, n={n}: " + "; ".join(text)
    interval = None
    if rows:
        interval = (rows[0]["amplify"] - Z * rows[0]["amplify_se"],
                    rows[0]["amplify"] + Z * rows[0]["amplify_se"])  # fmt: skip
    return Finding(
        {"by_k": rows, "lam": lam}, measured, combine_verdicts(verdicts), plot, n, interval
    )


def combine_verdicts(verdicts: list[Verdict]) -> Verdict:
    """One verdict from several (e.g. per k).

    All alike -> that one; any reproduced or partly among others -> partly; otherwise
    (inconclusive mixed with not) -> inconclusive.

    >>> combine_verdicts(["reproduced"] * 2), combine_verdicts(["reproduced", "not reproduced"])
    ('reproduced', 'partly')
    >>> combine_verdicts(["not reproduced", "inconclusive"]), combine_verdicts([])
    ('inconclusive', 'inconclusive')
    """
    if not verdicts:
        return INCONCLUSIVE
    if len(set(verdicts)) == 1:
        return verdicts[0]
    return PARTLY if REPRODUCED in verdicts or PARTLY in verdicts else INCONCLUSIVE


def variance_amplification_verdict(
    before: float, amplify: Numbers, amplify_se: Numbers, control: Numbers, control_se: Numbers,
    n: int,
) -> Verdict:  # fmt: skip
    """Variance amplification at k creates a sink there, growing with lam; the control not.

    ``amplify``/``control``: ``imp(k)`` by increasing lam with standard errors over the
    ``n`` samples. A sink at the largest lam: ``imp >= max(0.1, 5 before)``; "surely" when
    the lower bound ``imp - 2 se`` clears it, "surely not" when the upper bound
    ``imp + 2 se`` does not. Growing: no step down by more than ``2 se + 0.01``.
    Not reproduced: the treatment surely forms no sink. Inconclusive: ``n < 10``, or the
    treatment's or the control's interval straddles the threshold. Reproduced: the
    treatment surely forms a sink, growing, and the control surely none. Partly: the
    treatment surely forms one but so does the control, or it does not grow.

    >>> se = [0.01, 0.01, 0.01]
    >>> variance_amplification_verdict(0.01, [0.05, 0.2, 0.3], se, [0.01, 0.02, 0.02], se, 100)
    'reproduced'
    >>> variance_amplification_verdict(0.01, [0.05, 0.2, 0.3], se, [0.01, 0.2, 0.3], se, 100)
    'partly'
    >>> variance_amplification_verdict(0.01, [0.01, 0.02, 0.02], se, [0.01, 0.01, 0.01], se, 100)
    'not reproduced'
    >>> variance_amplification_verdict(0.01, [0.05, 0.2, 0.3], [0.2] * 3, [0.0] * 3, se, 100)
    'inconclusive'
    """
    amp, se_a, ctl, se_c = arrays(amplify=amplify, amplify_se=amplify_se, control=control,
                                  control_se=control_se)  # fmt: skip
    bar = max(0.1, 5 * before) if is_finite(before) else np.nan
    vals = (bar, amp[-1], se_a[-1], ctl[-1], se_c[-1])
    if n < MIN_SAMPLES or not all(is_finite(float(v)) for v in vals):
        return INCONCLUSIVE
    if amp[-1] + Z * se_a[-1] < bar:
        return NOT
    if amp[-1] - Z * se_a[-1] < bar:
        return INCONCLUSIVE
    grows = bool(np.all(np.diff(amp) >= -(Z * np.maximum(se_a[1:], se_a[:-1]) + 0.01)))
    if ctl[-1] - Z * se_c[-1] >= bar:
        return PARTLY
    if ctl[-1] + Z * se_c[-1] >= bar:
        return INCONCLUSIVE
    return REPRODUCED if grows else PARTLY


def claim_headnorm(summary: pd.DataFrame, steps: int) -> Finding:
    """The HeadNorm study's summary (one row per arm).

    Verdict (:func:`headnorm_verdict`): inconclusive without a baseline sink (rate
    > 0.3); else DomRatio >= 10% lower and the sink rate halved reproduced, one partly,
    neither not.
    """
    s = summary.set_index("arm")
    b, h = s.loc["baseline"], s.loc["headnorm"]
    step = float(b["sink_step"]) if "sink_step" in s.columns else float("nan")
    formed = (
        f"baseline sink from step {int(step)}" if is_finite(step) else "no baseline sink logged"
    )
    text = (
        f"{steps} steps ({formed}): DomRatio {fmt(b['dom_ratio'])} -> {fmt(h['dom_ratio'])}, "
        f"sink rate {fmt(b['sink_rate'])} -> {fmt(h['sink_rate'])}, val loss "
        f"{fmt(b['val_loss'], '.3f')} -> {fmt(h['val_loss'], '.3f')}, eff. rank "
        f"{fmt(b['effective_rank'], '.1f')} -> {fmt(h['effective_rank'], '.1f')}"
    )
    cols = ("dom_ratio", "sink_rate", "val_loss", "effective_rank")
    plot = plot_data(
        list(cols), {"baseline": [b[c] for c in cols], "HeadNorm": [h[c] for c in cols]},
        kind="bar", ylabel="value",
    )  # fmt: skip
    nums = {arm: {c: float(s.loc[arm, c]) for c in cols} for arm in ("baseline", "headnorm")}
    verdict = headnorm_verdict(
        float(b["dom_ratio"]), float(h["dom_ratio"]), float(b["sink_rate"]), float(h["sink_rate"])
    )
    return Finding(nums, text, verdict, plot)


SINK_RATE = 0.3
"""A model "has a sink" when its sink rate exceeds this (spec: sinks.md, eps = 0.3) [ours]."""


def headnorm_verdict(
    dom_baseline: float, dom_headnorm: float, sink_baseline: float, sink_headnorm: float
) -> Verdict:
    """HeadNorm lowers dimension disparity and sink rate (paper: 82.67 -> 33.74, no sink).

    The comparison needs a baseline with a sink (sink rate ``> 0.3``): without one it is
    inconclusive, whatever the DomRatios do. Lowers disparity: ``DomRatio`` of the first
    token at least 10% lower. Lowers sinks: HeadNorm's rate at most half the baseline's.
    Reproduced both; partly one; not neither.

    >>> headnorm_verdict(80.0, 30.0, 0.4, 0.0), headnorm_verdict(80.0, 30.0, 0.0, 0.0)
    ('reproduced', 'inconclusive')
    >>> headnorm_verdict(80.0, 30.0, 0.5, 0.5), headnorm_verdict(2.75, 3.06, 0.5, 0.45)
    ('partly', 'not reproduced')
    """
    vals = (dom_baseline, dom_headnorm, sink_baseline, sink_headnorm)
    if not all(is_finite(v) for v in vals) or sink_baseline <= SINK_RATE:
        return INCONCLUSIVE
    disparity = dom_headnorm <= 0.9 * dom_baseline
    sinks = sink_headnorm <= 0.5 * sink_baseline
    return REPRODUCED if disparity and sinks else PARTLY if disparity or sinks else NOT
