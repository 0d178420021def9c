"""The sinks paper's claims (arXiv 2605.06611; spec ``sinks.md``), each with its verdict.

Sink origins (variance discrepancy, massive activations, super neurons), the two
interventions (self-only mask, variance amplification) and the HeadNorm pretraining
study (the last three in :mod:`tl_geom.sinks.intervention_claims`). Each ``claim_*``
function takes what the sink measures and experiments returned
and gives a :class:`~tl_geom.claim.Finding`: the numbers it looked at, a one-line
``measured`` text, the verdict of its rule (the ``*_verdict`` function beside it,
restated in the docstring) and the data of its plot. :data:`CLAIMS` holds the claim
texts and sections. Thresholds are ours **[ours]** (:mod:`tl_geom.claim`). No model runs
here: :mod:`tl_geom.app.reproduce` runs the experiments and calls these.
"""

import numpy as np
import pandas as pd

from tl_geom.claim import (
    NOT,
    PARTLY,
    REPRODUCED,
    ClaimText,
    Finding,
    Verdict,
    by_share,
    fmt,
    is_finite,
    plot_data,
)

__all__ = [
    "CLAIMS",
    "PAPER",
    "claim_first_position_variance",
    "claim_massive_activations",
    "claim_super_neurons",
    "first_position_variance_verdict",
    "massive_activation_verdict",
    "super_neuron_verdict",
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
