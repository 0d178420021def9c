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

Each verdict rests on the samples (token windows or random-token inputs) as units:
``n`` is their number and the interval the 95% interval the rule used; too few samples
to tell give "inconclusive".
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
    Verdict,
    fmt,
    is_finite,
    plot_data,
    wilson_interval,
)

__all__ = [
    "CLAIMS",
    "PAPER",
    "by_samples",
    "claim_first_position_variance",
    "claim_massive_activations",
    "claim_super_neurons",
    "first_position_ratio_interval",
    "first_position_variance_verdict",
    "massive_activation_verdict",
    "massive_grade",
    "super_neuron_grade",
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


MIN_SAMPLES = 10
"""Fewer samples than this: the bootstrap is not trusted, the verdict is inconclusive [ours]."""
DRAWS = 1000
"""Bootstrap resamples [ours]."""


def first_position_ratio_interval(per_sample: np.ndarray, seed: int = 0) -> np.ndarray:
    """Per layer, the 95% bootstrap interval of ``var(pos 0) / max_{p > 0} var(p)``: ``[layer, 2]``.

    ``per_sample``: ``[sample, layer, pos]``, each sample's share of the variance (its
    mean over samples is the variance, :class:`~tl_geom.sinks.origins.VarianceDiscrepancy`).
    Samples resampled with replacement (one resample shared by all layers), the ratio
    per draw from the resampled means; vectorised over draws as a weight matrix.
    """
    n = per_sample.shape[0]
    idx = np.random.default_rng(seed).integers(0, n, (DRAWS, n))
    weights = np.zeros((DRAWS, n))
    np.add.at(weights, (np.arange(DRAWS)[:, None], idx), 1.0 / n)
    var = (weights @ per_sample.reshape(n, -1)).reshape(DRAWS, *per_sample.shape[1:])
    ratio = var[..., 0] / var[..., 1:].max(-1)  # [draws, layer]
    return np.quantile(ratio, [0.025, 0.975], axis=0).T


def claim_first_position_variance(
    samples: np.ndarray, dims: np.ndarray, *, upto: int | None = None
) -> Finding:
    """Variance of the head outputs by position on random tokens, per layer, with intervals.

    ``samples``: ``[sample, layer, pos]``, each sample's share of the variance across
    samples (the spec's argument: position 0 averages one value); ``dims``:
    ``[layer, pos]``, the variance over ``d_head`` ([ours], the quantity
    ``amplify_variance`` scales), reported. The verdict uses ``samples`` on layers
    ``0..upto``: the claim concerns the layers before the sink forms (``upto``: the
    first layer whose sink rate exceeds 0.3; None: all layers, the model forms no sink).
    Per layer the bootstrap interval of ``var(0) / max_{p>0} var(p)``
    (:func:`first_position_ratio_interval`): position 0 surely largest when it lies
    above 1, surely not when below 1, else undecided. ``n``: samples; interval: the
    share of judged layers, from the surely largest to those plus the undecided.
    Verdict: :func:`first_position_variance_verdict`.
    """
    samples = np.asarray(samples, dtype=np.float64)
    var = samples.mean(0)
    n = samples.shape[0]
    n_layers = var.shape[0] if upto is None else min(upto + 1, var.shape[0])
    largest = undecided = 0
    if n >= MIN_SAMPLES:
        iv = first_position_ratio_interval(samples)[:n_layers]
        largest, undecided = (
            int((iv[:, 0] > 1).sum()),
            int(((iv[:, 0] <= 1) & (iv[:, 1] >= 1)).sum()),
        )
    share = float((var[:n_layers].argmax(-1) == 0).mean())
    ratio = var[:, 0] / var[:, 1:].mean(-1)
    ratio_d = dims[:, 0] / dims[:, 1:].mean(-1)
    scope = "all: no sink forms" if upto is None else f"0-{upto}: the sink forms at {upto}"
    text = (
        f"position 0 surely largest in {largest} of {n_layers} layers ({scope}), {undecided} "
        f"undecided (point estimate {share:.0%}), {n} samples; var(0)/var(rest) "
        f"{fmt(ratio.min())}-{fmt(ratio.max())}; over d_head "
        f"{fmt(ratio_d.min())}-{fmt(ratio_d.max())}"
    )
    plot = plot_data(
        range(len(ratio)), {"across samples": ratio, "over d_head": ratio_d},
        xlabel="layer", ylabel="var(pos 0) / mean var(pos > 0)", logy=True,
    )  # fmt: skip
    nums = {
        "share_layers": share, "largest": largest, "undecided": undecided, "layers": n_layers,
        "upto": upto, "ratio_by_layer": ratio.tolist(), "ratio_dims": ratio_d.tolist(),
    }  # fmt: skip
    verdict = first_position_variance_verdict(largest, undecided, n_layers, n)
    interval = (largest / n_layers, (largest + undecided) / n_layers) if n >= MIN_SAMPLES else None
    return Finding(nums, text, verdict, plot, n, interval)


def first_position_variance_verdict(largest: int, undecided: int, layers: int, n: int) -> Verdict:
    """Position 0 has the largest aggregation variance (random tokens, causal aggregation).

    Of ``layers`` judged layers, position 0 is surely largest in ``largest`` and
    undecided in ``undecided`` (bootstrap over the ``n`` samples); the share lies in
    ``[largest, largest + undecided] / layers``. Reproduced: that range at or above 0.8;
    not: below 0.2; partly: inside ``[0.2, 0.8)``; inconclusive: it straddles 0.2 or
    0.8, or ``n < 10``.

    >>> first_position_variance_verdict(9, 1, 10, 64), first_position_variance_verdict(4, 1, 10, 64)
    ('reproduced', 'partly')
    >>> first_position_variance_verdict(0, 1, 10, 64), first_position_variance_verdict(5, 5, 10, 64)
    ('not reproduced', 'inconclusive')
    """
    if n < MIN_SAMPLES or layers <= 0:
        return INCONCLUSIVE
    lo, hi = largest / layers, (largest + undecided) / layers
    if lo >= 0.8:
        return REPRODUCED
    if hi < 0.2:
        return NOT
    return PARTLY if lo >= 0.2 and hi < 0.8 else INCONCLUSIVE


def by_samples(full: int, weak: int, samples: int) -> Verdict:
    """A property shown fully by ``full`` and at least weakly by ``weak`` of ``samples``.

    ``weak`` counts the full ones too. On Wilson 95% intervals, "most" meaning half
    [ours]: reproduced when ``full / samples`` lies at or above 0.5; not when
    ``weak / samples`` lies below 0.5; partly when the full share lies below 0.5 and
    the weak one at or above; inconclusive otherwise (too few samples) or with none.

    >>> by_samples(16, 16, 16), by_samples(1, 15, 16)
    ('reproduced', 'partly')
    >>> by_samples(0, 1, 16), by_samples(2, 2, 3)
    ('not reproduced', 'inconclusive')
    """
    if samples <= 0:
        return INCONCLUSIVE
    f_lo, f_hi = wilson_interval(full, samples)
    w_lo, w_hi = wilson_interval(weak, samples)
    if f_lo >= 0.5:
        return REPRODUCED
    if w_hi < 0.5:
        return NOT
    return PARTLY if f_hi < 0.5 and w_lo >= 0.5 else INCONCLUSIVE


def massive_grade(max_abs: float, max_ratio: float) -> int:
    """2: ``|h| > 100`` and ``> 1000x`` the median; 1: one of them, or both at a tenth; else 0.

    >>> [massive_grade(*x) for x in ((2e4, 2e4), (50.0, 500.0), (5.0, 5.0))]
    [2, 1, 0]
    """
    big = is_finite(max_abs) and max_abs > 100
    ratio = is_finite(max_ratio) and max_ratio > 1000
    if big and ratio:
        return 2
    weak = is_finite(max_abs) and is_finite(max_ratio) and max_abs > 10 and max_ratio > 100
    return 1 if big or ratio or weak else 0


def claim_massive_activations(
    top: np.ndarray, ratio: np.ndarray, position: np.ndarray, dim: np.ndarray
) -> Finding:
    """Largest residual magnitude per sample and layer, its ratio to the median and its place.

    ``top``, ``ratio``: ``[sample, layer]``; ``position``, ``dim``: ``[layer]`` (where
    the largest sits, reported). Per sample, over layers, the largest ``|h|`` and the
    largest ratio, graded by :func:`massive_grade`. Verdict
    (:func:`massive_activation_verdict`) on how many samples show it; ``n``: samples;
    interval: the Wilson interval of the share showing it fully.
    """
    top, ratio = np.atleast_2d(top).astype(np.float64), np.atleast_2d(ratio).astype(np.float64)
    grade = np.array([massive_grade(a, r) for a, r in zip(top.max(1), ratio.max(1), strict=True)])
    n, full, weak = len(grade), int((grade == 2).sum()), int((grade >= 1).sum())
    mean_top, mean_ratio = top.mean(0), ratio.mean(0)
    i = int(np.argmax(mean_top))
    text = (
        f"massive (|h| > 100, > 1000x median) in {full} of {n} samples ({weak} at least "
        f"weakly); mean max |h| {fmt(mean_top[i], '.4g')} = {fmt(mean_ratio[i], '.3g')}x median "
        f"at layer {i} (position {int(position[i])}, dim {int(dim[i])})"
    )
    plot = plot_data(
        range(len(mean_top)), {"top |h|": mean_top, "ratio to median": mean_ratio},
        xlabel="layer", ylabel="magnitude", logy=True,
    )  # fmt: skip
    nums = {"max_abs": float(mean_top[i]), "max_ratio": float(mean_ratio.max()), "layer": i,
            "samples_full": full, "samples_weak": weak, "samples": n}  # fmt: skip
    verdict = massive_activation_verdict(full, weak, n)
    return Finding(nums, text, verdict, plot, n, wilson_interval(full, n))


def massive_activation_verdict(full: int, weak: int, samples: int) -> Verdict:
    """Massive activations exist: a residual entry ``> 100`` and ``> 1000x`` the median.

    ``full``: samples whose largest ``|h|`` over layers exceeds 100 and whose largest
    ratio to the median exceeds 1000; ``weak``: samples with at least one of them, or
    both at a tenth (``> 10``, ``> 100x``), the full ones included
    (:func:`massive_grade`). Decided by :func:`by_samples` (half of the
    samples, Wilson intervals).

    >>> massive_activation_verdict(8, 8, 8), massive_activation_verdict(0, 8, 8)
    ('reproduced', 'partly')
    >>> massive_activation_verdict(0, 0, 8), massive_activation_verdict(1, 2, 3)
    ('not reproduced', 'inconclusive')
    """
    return by_samples(full, weak, samples)


def claim_super_neurons(
    frame: pd.DataFrame,
    dim: int,
    contributions: np.ndarray | None = None,
    writes: np.ndarray | None = None,
) -> Finding:
    """Neuron writes into the massive dimension at position 0 (``SuperNeurons.to_frame()``).

    The super neuron is the largest batch-mean ``|c|`` of ``frame``; ``contributions``
    ``[sample, layer, neuron]`` and ``writes`` ``[sample, layer]`` (``SuperNeurons``'
    per-sample fields, layers in ``frame``'s order) say in how many samples it writes
    ``|c| >= 100`` with ``>= 50%`` of its MLP's write (full), or with the layer's top
    three (by batch mean) ``>= 50%`` (weak). Verdict: :func:`super_neuron_verdict`;
    without per-sample data inconclusive. ``n``: samples; interval: the Wilson interval
    of the share with a full write.
    """
    top = frame.loc[frame["abs_contribution"].idxmax()]
    layer, neuron = int(top["layer"]), int(top["neuron"])
    same = pd.DataFrame(frame[frame["layer"] == layer]).sort_values(
        "abs_contribution", ascending=False
    )
    top3 = float(same["share"].iloc[:3].sum())
    full = weak = n = 0
    if contributions is not None and writes is not None:
        li = list(dict.fromkeys(frame["layer"].to_numpy().tolist())).index(layer)
        c, w = np.asarray(contributions, np.float64)[:, li], np.asarray(writes, np.float64)[:, li]
        three = same["neuron"].to_numpy()[:3].astype(int)
        grade = [super_neuron_grade(abs(a[neuron]), a[neuron] / b, a[three].sum() / b)
                 for a, b in zip(c, w, strict=True)]  # fmt: skip
        n, full, weak = len(grade), sum(g == 2 for g in grade), sum(g >= 1 for g in grade)
    text = (
        f"layer {layer} neuron {neuron} writes {fmt(float(top['contribution']), '+.4g')} into "
        f"dim {dim} ({float(top['share']):.0%} of the MLP's write; top 3: {top3:.0%}); a "
        f"super-neuron write in {full} of {n} samples ({weak} at least with the top 3)"
    )
    best = pd.Series(frame.groupby("layer")["abs_contribution"].max())
    plot = plot_data(
        best.index, {"largest |act * W_out|": best.to_numpy()},
        xlabel="layer", ylabel="|contribution|", logy=True,
    )  # fmt: skip
    nums = {"layer": layer, "neuron": neuron, "contribution": float(top["contribution"]),
            "share": float(top["share"]), "top3_share": top3, "dim": dim,
            "samples_full": full, "samples_weak": weak, "samples": n}  # fmt: skip
    interval = wilson_interval(full, n) if n else None
    return Finding(nums, text, super_neuron_verdict(full, weak, n), plot, n or None, interval)


def super_neuron_grade(top_abs: float, top_share: float, top3_share: float) -> int:
    """2: ``|c| >= 100`` and ``>= 50%`` of the MLP's write; 1: ``|c| >= 100``, top 3 ``>= 50%``; 0.

    >>> [super_neuron_grade(*x) for x in ((1e4, 0.7, 0.99), (1e4, 0.3, 0.6), (5.0, 0.9, 0.9))]
    [2, 1, 0]
    """
    if not (is_finite(top_abs) and top_abs >= 100):
        return 0
    if is_finite(top_share) and top_share >= 0.5:
        return 2
    return 1 if is_finite(top3_share) and top3_share >= 0.5 else 0


def super_neuron_verdict(full: int, weak: int, samples: int) -> Verdict:
    """Super neurons exist: one MLP unit writes the massive dimension at the first token.

    ``full``: samples where the super neuron writes ``|c| >= 100`` with ``>= 50%`` of
    its MLP's write into the dim; ``weak``: those plus the samples where ``|c| >= 100``
    and its layer's top three neurons write ``>= 50%`` (:func:`super_neuron_grade`).
    Decided by :func:`by_samples` (half of the samples, Wilson intervals).

    >>> super_neuron_verdict(16, 16, 16), super_neuron_verdict(2, 16, 16)
    ('reproduced', 'partly')
    >>> super_neuron_verdict(0, 0, 16), super_neuron_verdict(0, 0, 0)
    ('not reproduced', 'inconclusive')
    """
    return by_samples(full, weak, samples)
