"""The sinks paper's claims (arXiv 2605.06611; spec ``sinks.md``), each with its verdict.

Sink origins (variance discrepancy, massive activations, super neurons), the two
interventions (self-only mask, variance amplification) and the HeadNorm pretraining
study. Each ``claim_*`` function takes what the sink measures and experiments returned
and gives a :class:`~tl_geom.claim.Finding`: the numbers it looked at, a one-line
``measured`` text, the verdict of its rule (the ``*_verdict`` function beside it,
restated in the docstring) and the data of its plot. :data:`CLAIMS` holds the claim
texts and sections. Thresholds are ours **[ours]** (:mod:`tl_geom.claim`). No model runs
here: :mod:`tl_geom.app.reproduce` runs the experiments and calls these.
"""

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
    by_share,
    fmt,
    is_finite,
    plot_data,
)

__all__ = [
    "CLAIMS",
    "PAPER",
    "claim_first_position_variance",
    "claim_headnorm",
    "claim_massive_activations",
    "claim_self_only",
    "claim_super_neurons",
    "claim_variance_amplification",
    "combine_verdicts",
    "first_position_variance_verdict",
    "headnorm_verdict",
    "massive_activation_verdict",
    "self_only_verdict",
    "super_neuron_verdict",
    "variance_amplification_verdict",
]

PAPER = "arXiv 2605.06611"

CLAIMS: dict[str, ClaimText] = {
    "first_position_variance": ClaimText(
        "position 0 has the largest aggregation variance", PAPER, "Variance discrepancy"
    ),
    "massive_activations": ClaimText(
        "massive activations exist (|h| > 100, ~1000x median)", PAPER, "Measures"
    ),
    "super_neurons": ClaimText(
        "super neurons write the massive dimension at the first token", PAPER, "Super neurons"
    ),
    "self_only_mask": ClaimText(
        "a self-only mask at k creates a sink at k", PAPER, "Interventions 1"
    ),
    "variance_amplification": ClaimText(
        "variance amplification at k creates a sink at k growing with lam; control does not",
        PAPER,
        "Interventions 2",
    ),
    "headnorm": ClaimText(
        "HeadNorm lowers dimension disparity and sink rate", PAPER, "Pretraining study"
    ),
}
"""Claim id -> text, paper and section (spec: sinks.md)."""


def claim_first_position_variance(
    samples: np.ndarray, dims: np.ndarray, *, upto: int | None = None, n: int | None = None
) -> Finding:
    """Variance of the head outputs by position on random tokens, ``[layer, pos]`` each.

    ``samples``: across samples (the spec's argument: position 0 averages one value);
    ``dims``: over ``d_head`` ([ours], the quantity ``amplify_variance`` scales). The
    verdict uses ``samples`` on layers ``0..upto``: the claim concerns the layers before
    the sink forms (``upto``: the first layer whose sink rate exceeds 0.3; None: all
    layers, the model forms no sink). ``n``: the random-token samples. Verdict
    (:func:`first_position_variance_verdict`):
    position 0 largest in ``>= 80%`` of those layers reproduced, ``>= 20%`` partly, else not.
    """
    judged = samples if upto is None else samples[: upto + 1]
    share = float((judged.argmax(-1) == 0).mean())
    ratio = samples[:, 0] / samples[:, 1:].mean(-1)
    ratio_d = dims[:, 0] / dims[:, 1:].mean(-1)
    scope = (
        "all layers (no sink forms)" if upto is None else f"layers 0-{upto} (sink forms at {upto})"
    )
    text = (
        f"position 0 largest in {share:.0%} of {scope}, across samples; var(0)/var(rest) "
        f"{fmt(ratio.min())}-{fmt(ratio.max())}; "
        f"over d_head {fmt(ratio_d.min())}-{fmt(ratio_d.max())}"
    )
    plot = plot_data(
        range(len(ratio)), {"across samples": ratio, "over d_head": ratio_d},
        xlabel="layer", ylabel="var(pos 0) / mean var(pos > 0)", logy=True,
    )  # fmt: skip
    nums = {
        "share_layers": share, "upto": upto, "ratio_by_layer": ratio.tolist(),
        "ratio_dims": ratio_d.tolist(),
    }  # fmt: skip
    return Finding(nums, text, first_position_variance_verdict(share), plot, n)


def first_position_variance_verdict(share_layers: float) -> Verdict:
    """Position 0 has the largest aggregation variance (random tokens, causal aggregation).

    ``share_layers``: layers where the variance of the head outputs is largest at
    position 0. Reproduced ``>= 0.8``, partly ``>= 0.2``, else not.

    >>> [first_position_variance_verdict(s) for s in (0.9, 0.3, 0.1)]
    ['reproduced', 'partly', 'not reproduced']
    """
    return by_share(share_layers, high=0.8, low=0.2)


def claim_massive_activations(
    top: np.ndarray, ratio: np.ndarray, position: np.ndarray, dim: np.ndarray
) -> Finding:
    """Largest residual magnitude per layer (batch mean), its ratio to the median and its place.

    Verdict (:func:`massive_activation_verdict`): ``> 100`` and
    ``> 1000x`` the median reproduced; one of them (or both at a tenth) partly; else not.
    """
    i = int(np.argmax(top))
    text = (
        f"max |h| {fmt(top[i], '.4g')} = {fmt(ratio[i], '.3g')}x median at layer {i} "
        f"(position {int(position[i])}, dim {int(dim[i])}); "
        f"{int(((top > 100) & (ratio > 1000)).sum())} of {len(top)} layers massive"
    )
    plot = plot_data(
        range(len(top)), {"top |h|": top, "ratio to median": ratio},
        xlabel="layer", ylabel="magnitude", logy=True,
    )  # fmt: skip
    nums = {"max_abs": float(top[i]), "max_ratio": float(ratio[i]), "layer": i}
    return Finding(nums, text, massive_activation_verdict(float(top[i]), float(ratio.max())), plot)


def massive_activation_verdict(max_abs: float, max_ratio: float) -> Verdict:
    """Massive activations exist: a residual entry ``> 100`` and ``> 1000x`` the median.

    Over layers: the largest ``|h|`` and its ratio to the median. Reproduced both
    thresholds met; partly one of them, or both at a tenth (``> 10``, ``> 100x``); else not.

    >>> [massive_activation_verdict(*x) for x in ((2e4, 2e4), (50.0, 500.0), (5.0, 5.0))]
    ['reproduced', 'partly', 'not reproduced']
    """
    big = is_finite(max_abs) and max_abs > 100
    ratio = is_finite(max_ratio) and max_ratio > 1000
    if big and ratio:
        return REPRODUCED
    weak = is_finite(max_abs) and is_finite(max_ratio) and max_abs > 10 and max_ratio > 100
    return PARTLY if big or ratio or weak else NOT


def claim_super_neurons(frame: pd.DataFrame, dim: int) -> Finding:
    """Neuron writes into the massive dimension at position 0 (``SuperNeurons.to_frame()``).

    Verdict (:func:`super_neuron_verdict`): one neuron ``|c| >= 100``
    with ``>= 50%`` of its MLP's write reproduced; the top three ``>= 50%`` partly; else not.
    """
    top = frame.loc[frame["abs_contribution"].idxmax()]
    same = pd.DataFrame(frame[frame["layer"] == top["layer"]])
    top3 = float(same.sort_values("abs_contribution", ascending=False)["share"].iloc[:3].sum())
    text = (
        f"layer {int(top['layer'])} neuron {int(top['neuron'])} writes "
        f"{fmt(float(top['contribution']), '+.4g')} into dim {dim} "
        f"({float(top['share']):.0%} of the MLP's write; top 3: {top3:.0%})"
    )
    best = pd.Series(frame.groupby("layer")["abs_contribution"].max())
    plot = plot_data(
        best.index, {"largest |act * W_out|": best.to_numpy()},
        xlabel="layer", ylabel="|contribution|", logy=True,
    )  # fmt: skip
    nums = {
        "layer": int(top["layer"]),
        "neuron": int(top["neuron"]),
        "contribution": float(top["contribution"]),
        "share": float(top["share"]),
        "top3_share": top3,
        "dim": dim,
    }
    verdict = super_neuron_verdict(float(top["abs_contribution"]), float(top["share"]), top3)
    return Finding(nums, text, verdict, plot)


def super_neuron_verdict(top_abs: float, top_share: float, top3_share: float) -> Verdict:
    """Super neurons exist: one MLP unit writes the massive dimension at the first token.

    ``top_abs``: the largest ``|act[n] W_out[n, dim]|``; ``top_share``/``top3_share``:
    the share of its layer's MLP write into ``dim`` from that neuron / the top three.
    Reproduced ``top_abs >= 100`` and ``top_share >= 0.5``; partly ``top_abs >= 100``
    and ``top3_share >= 0.5`` (a few neurons share it); else not.

    >>> [super_neuron_verdict(*x) for x in ((1e4, 0.7, 0.99), (1e4, 0.3, 0.6), (5.0, 0.9, 0.9))]
    ['reproduced', 'partly', 'not reproduced']
    """
    if not (is_finite(top_abs) and top_abs >= 100):
        return NOT
    if is_finite(top_share) and top_share >= 0.5:
        return REPRODUCED
    return PARTLY if is_finite(top3_share) and top3_share >= 0.5 else NOT


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
