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
    combine_verdicts,
    fmt,
    is_finite,
    mean_interval,
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


def claim_self_only(
    before: np.ndarray, after: np.ndarray, position: int, *, chain: dict[str, Any] | None = None
) -> Finding:
    """``imp(k)`` per sample and layer (mean over heads), before and under the self-only mask.

    ``before``, ``after``: ``[sample, layer]`` on the same samples (paired). ``chain``
    (reported, not judged): the super neuron's write into the massive dim at position 0,
    at k, and at k under the mask -- does the mask make k a "first token"?

    Verdict (:func:`self_only_verdict`) on the per-sample means over layers; ``n``:
    samples; interval: ``mean -+ 2 se`` of ``imp(k)`` under the mask.
    """
    before, after = np.atleast_2d(before), np.atleast_2d(after)
    b_s, a_s = before.mean(1), after.mean(1)  # per sample
    b, a = float(b_s.mean()), float(a_s.mean())
    iv = mean_interval(a_s, Z, MIN_SAMPLES)
    text = (
        f"mean imp({position}) {fmt(b, '.3f')} -> {fmt(a, '.3f')} [{fmt(iv[0], '.3f')}, "
        f"{fmt(iv[1], '.3f')}] over {len(a_s)} samples (max layer {fmt(after.mean(0).max())})"
    )
    if chain:
        text += (
            f"; super neuron L{int(chain['layer'])}/{int(chain['neuron'])} writes dim "
            f"{int(chain['dim'])}: {fmt(chain['write_at_0'], '.4g')} at 0, "
            f"{fmt(chain['write_at_k'], '.4g')} at {position}, "
            f"{fmt(chain['write_at_k_masked'], '.4g')} at {position} masked"
        )
    plot = plot_data(
        range(before.shape[1]), {"before": before.mean(0), "self-only mask": after.mean(0)},
        xlabel="layer", ylabel=f"imp({position})",
    )  # fmt: skip
    nums = {"before": b, "after": a, "after_interval": list(iv), "chain": chain}
    interval = iv if is_finite(iv[0]) else None
    return Finding(nums, text, self_only_verdict(b_s, a_s), plot, len(a_s), interval)


def self_only_verdict(before: Numbers, after: Numbers) -> Verdict:
    """A self-only mask at k creates a sink at k downstream.

    ``before``, ``after``: per sample, ``imp(k)`` averaged over layers and heads without
    and under the mask (paired). Intervals ``mean -+ 2 se`` over the samples of
    ``after``, ``after - 5 before`` and ``after - 2 before``. Reproduced: a sink surely
    forms (``after``'s interval at or above 0.1 and ``after - 5 before``'s at or above
    0). Surely no sink: ``after``'s below 0.1 or ``after - 5 before``'s below 0; then
    partly when ``after - 2 before``'s lies above 0, not when at or below 0.
    Inconclusive: fewer than 10 samples, or an interval straddles its threshold.

    >>> self_only_verdict([0.01] * 20, [0.26] * 20), self_only_verdict([0.01] * 20, [0.03] * 20)
    ('reproduced', 'partly')
    >>> self_only_verdict([0.01] * 20, [0.01] * 20), self_only_verdict([0.01] * 5, [0.26] * 5)
    ('not reproduced', 'inconclusive')
    """
    b, a = arrays(before=before, after=after)
    ok = np.isfinite(b) & np.isfinite(a)
    b, a = b[ok], a[ok]
    if a.size < MIN_SAMPLES:
        return INCONCLUSIVE
    after_iv = mean_interval(a, Z, MIN_SAMPLES)
    five, two = mean_interval(a - 5 * b, Z, MIN_SAMPLES), mean_interval(a - 2 * b, Z, MIN_SAMPLES)
    if after_iv[0] >= 0.1 and five[0] >= 0:
        return REPRODUCED
    if not (after_iv[1] < 0.1 or five[1] < 0):
        return INCONCLUSIVE
    return PARTLY if two[0] > 0 else NOT if two[1] <= 0 else INCONCLUSIVE


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
