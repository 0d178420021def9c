"""Verdict rules of ``tl-geom reproduce``: measured numbers -> reproduced / partly / not.

One pure function per claim of the three papers (spec: geometry.md, normalization.md,
sinks.md). Each takes the few numbers its claim is about (already measured by the
library) and returns a :data:`Verdict`; its docstring states the rule. Every threshold
is ours **[ours]**: the papers give shapes ("about", "saturates"), not tests. The rules
were written before the models were run and are not tuned to the outcome: a claim that
fails is a finding. NaN inputs never count as evidence for a claim.
"""

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from tl_geom.errors import TlGeomError

__all__ = [
    "NOT",
    "PARTLY",
    "REPRODUCED",
    "VERDICTS",
    "Numbers",
    "Verdict",
    "by_share",
    "cosine_decay_verdict",
    "critical_n_verdict",
    "distance_length_verdict",
    "distance_plateau_verdict",
    "first_position_variance_verdict",
    "four_phase_verdict",
    "gradient_sensitivity_verdict",
    "head_regimes_verdict",
    "headnorm_verdict",
    "loglog_slope",
    "massive_activation_verdict",
    "peak_small_n_verdict",
    "recall_saturation_verdict",
    "rho0_recall_verdict",
    "self_only_verdict",
    "sparsify_verdict",
    "super_neuron_verdict",
    "top_beats_random_verdict",
    "value_norms_verdict",
    "variance_amplification_verdict",
]

Verdict = Literal["reproduced", "partly", "not reproduced"]
REPRODUCED: Verdict = "reproduced"
PARTLY: Verdict = "partly"
NOT: Verdict = "not reproduced"
Numbers = Sequence[int | float] | np.ndarray
"""A 1-d sequence of numbers: a list or a numpy array."""
VERDICTS: tuple[Verdict, ...] = (REPRODUCED, PARTLY, NOT)


def _finite(x: float) -> bool:
    return isinstance(x, int | float | np.floating | np.integer) and math.isfinite(float(x))


def _arrays(**named: Numbers) -> list[np.ndarray]:
    out = [np.asarray(v, dtype=np.float64) for v in named.values()]
    sizes = {a.shape for a in out}
    if len(sizes) != 1 or out[0].ndim != 1 or out[0].size == 0:
        shapes = {k: np.shape(v) for k, v in named.items()}
        raise TlGeomError(f"need equally long non-empty 1-d sequences, got shapes {shapes}")
    return out


def by_share(share: float, high: float = 0.5, low: float = 0.2) -> Verdict:
    """A share of heads/layers where a property holds: ``>= high`` reproduced, ``>= low`` partly.

    >>> by_share(0.6), by_share(0.3), by_share(0.1), by_share(float("nan"))
    ('reproduced', 'partly', 'not reproduced', 'not reproduced')
    """
    if not _finite(share):
        return NOT
    return REPRODUCED if share >= high else PARTLY if share >= low else NOT


def loglog_slope(x: Numbers, y: Numbers) -> tuple[float, float]:
    """Least-squares slope k and R^2 of ``log y = c + k log x`` on the positive finite pairs.

    (nan, nan) with fewer than two such pairs.

    >>> [round(v, 6) for v in loglog_slope([1, 2, 4], [3, 6, 12])]
    [1.0, 1.0]
    """
    xs, ys = _arrays(x=x, y=y)
    ok = np.isfinite(xs) & np.isfinite(ys) & (xs > 0) & (ys > 0)
    if ok.sum() < 2 or np.ptp(np.log(xs[ok])) == 0:
        return math.nan, math.nan
    lx, ly = np.log(xs[ok]), np.log(ys[ok])
    k, c = np.polyfit(lx, ly, 1)
    resid = ly - (c + k * lx)
    tot = ((ly - ly.mean()) ** 2).sum()
    r2 = 1.0 - (resid**2).sum() / tot if tot > 0 else 1.0
    return float(k), float(r2)


# --- geometry.md (arXiv 2602.01893) -------------------------------------------------------


def top_beats_random_verdict(share: float) -> Verdict:
    """Top-N separability exceeds random N-subsets.

    ``share``: fraction of heads whose top-N F1 exceeds the random-subset F1, averaged
    over the small N (2 <= N <= 4). Reproduced ``>= 0.8``, partly ``>= 0.5``, else not.

    >>> [top_beats_random_verdict(s) for s in (0.9, 0.6, 0.2)]
    ['reproduced', 'partly', 'not reproduced']
    """
    return by_share(share, high=0.8, low=0.5)


def peak_small_n_verdict(ns: Numbers, f1: Numbers) -> Verdict:
    """Strongest non-trivial separation at N about 1-4.

    ``N* = argmax_{N >= 2} F1(N)`` of the mean F1 over heads (N = 1 is trivially
    perfect). Reproduced ``N* <= 4``, partly ``N* <= 8``, else (or no finite F1) not.

    >>> peak_small_n_verdict([1, 2, 4, 8, 16], [1.0, 0.7, 0.5, 0.4, 0.3])
    'reproduced'
    >>> peak_small_n_verdict([1, 2, 4, 8, 16], [1.0, 0.3, 0.4, 0.6, 0.5])
    'partly'
    """
    n, f = _arrays(ns=ns, f1=f1)
    ok = (n >= 2) & np.isfinite(f)
    if not ok.any():
        return NOT
    n_star = n[ok][int(np.argmax(f[ok]))]
    return REPRODUCED if n_star <= 4 else PARTLY if n_star <= 8 else NOT


def rho0_recall_verdict(ns: Numbers, spearman: Numbers) -> Verdict:
    """Recall correlates positively with rho0 across heads, peaking near N = 3-6.

    Over N >= 2 (Recall is 1 at N = 1): the peak ``N*`` of the Spearman correlation and
    its value ``rho*``. Reproduced ``rho* > 0.2`` and ``3 <= N* <= 6``; partly
    ``rho* > 0.2`` with the peak elsewhere; else not.

    >>> rho0_recall_verdict([2, 4, 8], [0.3, 0.5, 0.2])
    'reproduced'
    >>> rho0_recall_verdict([2, 4, 8], [0.5, 0.3, 0.2])
    'partly'
    >>> rho0_recall_verdict([2, 4, 8], [-0.1, 0.1, 0.0])
    'not reproduced'
    """
    n, r = _arrays(ns=ns, spearman=spearman)
    ok = (n >= 2) & np.isfinite(r)
    if not ok.any():
        return NOT
    i = int(np.argmax(r[ok]))
    peak, n_star = r[ok][i], n[ok][i]
    if peak <= 0.2:
        return NOT
    return REPRODUCED if 3 <= n_star <= 6 else PARTLY


def value_norms_verdict(median_cv: float, share_compressed: float) -> Verdict:
    """Stable value norms (paper: CV about 0.02-0.05) with a compressed sink value.

    Stable: median over heads of the value-norm CV ``<= 0.1`` (the diagnostic's own
    threshold). Compressed: ``lambda < 0.5`` in at least half of the heads. Reproduced
    both, partly one, not neither.

    >>> [value_norms_verdict(*x) for x in ((0.04, 0.9), (0.3, 0.9), (0.3, 0.1))]
    ['reproduced', 'partly', 'not reproduced']
    """
    stable = _finite(median_cv) and median_cv <= 0.1
    compressed = _finite(share_compressed) and share_compressed >= 0.5
    return REPRODUCED if stable and compressed else PARTLY if stable or compressed else NOT


def cosine_decay_verdict(share: float) -> Verdict:
    """Exponential decay of value cosine similarity with distance.

    ``share``: heads whose log-linear fit has ``beta > 0`` and ``R^2 >= 0.5`` (the
    diagnostic). Reproduced ``>= 0.5``, partly ``>= 0.2``, else not (:func:`by_share`).

    >>> cosine_decay_verdict(0.7), cosine_decay_verdict(0.25), cosine_decay_verdict(0.04)
    ('reproduced', 'partly', 'not reproduced')
    """
    return by_share(share)


def four_phase_verdict(share: float) -> Verdict:
    """Four-phase attention profile (sink, plateau, oscillating band, recency ramp).

    ``share``: heads whose mean final-query profile fits the 4 segments (the
    diagnostic). Reproduced ``>= 0.5``, partly ``>= 0.2``, else not (:func:`by_share`).

    >>> four_phase_verdict(0.5), four_phase_verdict(0.2), four_phase_verdict(0.19)
    ('reproduced', 'partly', 'not reproduced')
    """
    return by_share(share)


def head_regimes_verdict(shares: Mapping[str, float], depth: Mapping[str, float]) -> Verdict:
    """Three head regimes (Retriever, Mixer, Reset), depth order Retriever -> Reset -> Mixer.

    ``shares``: fraction of heads of each type; ``depth``: mean relative depth (layer /
    (layers - 1)) of each type. Present: a share ``>= 0.05``. Reproduced: all three
    present and ``depth`` increasing Retriever < Reset < Mixer (the paper's order on
    LLaMA-2-7B); partly: all three present, another order; not: fewer than three.

    >>> s = {"Retriever": 0.1, "Mixer": 0.2, "Reset": 0.2}
    >>> head_regimes_verdict(s, {"Retriever": 0.2, "Reset": 0.5, "Mixer": 0.7})
    'reproduced'
    >>> head_regimes_verdict(s, {"Retriever": 0.2, "Reset": 0.7, "Mixer": 0.5})
    'partly'
    >>> head_regimes_verdict({**s, "Mixer": 0.01}, {"Retriever": 0.2, "Reset": 0.5, "Mixer": 0.7})
    'not reproduced'
    """
    types = ("Retriever", "Reset", "Mixer")
    if not all(_finite(shares.get(t, math.nan)) and shares[t] >= 0.05 for t in types):
        return NOT
    d = [depth.get(t, math.nan) for t in types]
    ordered = all(_finite(x) for x in d) and d[0] < d[1] < d[2]
    return REPRODUCED if ordered else PARTLY


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
    t, r = _arrays(type_delta=type_delta, random_delta=random_delta)
    if not heuristic_delta:
        raise TlGeomError("heuristic_delta is empty; give at least one heuristic rule")
    h = np.stack([_arrays(type_delta=t, h=v)[1] for v in heuristic_delta.values()])
    ok = np.isfinite(t) & np.isfinite(r)
    if not ok.any():
        return NOT
    beats_random = float((t[ok] < r[ok]).mean())
    beats_all = float((t[ok] < np.nanmin(h[:, ok], axis=0)).mean())
    if beats_random >= 0.75 and beats_all < 1:
        return REPRODUCED
    return PARTLY if beats_random >= 0.5 else NOT


# --- normalization.md (arXiv 2508.17821) --------------------------------------------------


def distance_length_verdict(lengths: Numbers, distance: Numbers) -> Verdict:
    """``d~`` grows about linearly with the context length L at N = 5.

    Log-log fit ``d~ ~ L^k`` (:func:`loglog_slope`). Reproduced ``0.8 <= k <= 1.2`` and
    ``R^2 >= 0.9``; partly ``k >= 0.3`` (grows, not linearly); else not.

    >>> distance_length_verdict([32, 64, 128], [1.0, 2.0, 4.1])
    'reproduced'
    >>> distance_length_verdict([32, 64, 128], [1.0, 1.4, 2.0])
    'partly'
    >>> distance_length_verdict([32, 64], [1.0, 1.0])
    'not reproduced'
    """
    k, r2 = loglog_slope(lengths, distance)
    if not _finite(k):
        return NOT
    if 0.8 <= k <= 1.2 and r2 >= 0.9:
        return REPRODUCED
    return PARTLY if k >= 0.3 else NOT


def distance_plateau_verdict(ns: Numbers, distance: Numbers) -> Verdict:
    """``d~`` as N grows flattens beyond N about 20 (at the longest L).

    ``late = |d(N_max) - d(20)| / d(20)`` and ``early = |d(20) - d(1)| / d(1)`` (the
    grid must hold 1, 20 and a larger N). Reproduced ``late <= 0.1`` and ``early >= 2
    late`` (it flattens after changing); partly ``late <= 0.25``; else not.

    >>> distance_plateau_verdict([1, 5, 20, 100], [10.0, 6.0, 5.0, 4.9])
    'reproduced'
    >>> distance_plateau_verdict([1, 5, 20, 100], [5.0, 5.0, 5.0, 4.5])
    'partly'
    >>> distance_plateau_verdict([1, 5, 20, 100], [10.0, 8.0, 5.0, 2.0])
    'not reproduced'
    """
    n, d = _arrays(ns=ns, distance=distance)
    if 1 not in n or 20 not in n or n.max() <= 20:
        raise TlGeomError(f"the N grid must hold 1, 20 and a larger N, got {n.tolist()}")
    d1, d20, dmax = d[n == 1][0], d[n == 20][0], d[int(np.argmax(n))]
    if not all(_finite(x) and x > 0 for x in (d1, d20)) or not _finite(dmax):
        return NOT
    late, early = abs(dmax - d20) / d20, abs(d20 - d1) / d1
    if late <= 0.1 and early >= 2 * late:
        return REPRODUCED
    return PARTLY if late <= 0.25 else NOT


def critical_n_verdict(lengths: Numbers, critical: Numbers) -> Verdict:
    """The critical N (top-N no longer told from random by KS at 0.01) scales like 0.06 L.

    On the lengths with a finite critical N (NaN: the test rejected at every N of the
    grid): slope through the origin ``c = sum(N* L) / sum(L^2)`` and whether N* grows
    (largest L above smallest L). Reproduced ``0.03 <= c <= 0.12`` (within 2x of 0.06)
    and growing; partly ``0.015 <= c <= 0.24`` (within 4x) or growing; else (or fewer
    than two finite lengths) not.

    >>> critical_n_verdict([128, 256, 512], [8, 16, 32]), critical_n_verdict([128, 256], [2, 4])
    ('reproduced', 'partly')
    >>> critical_n_verdict([128, 256], [1, 1])
    'not reproduced'
    """
    ls, cs = _arrays(lengths=lengths, critical=critical)
    ok = np.isfinite(ls) & np.isfinite(cs)
    if ok.sum() < 2:
        return NOT
    ls, cs = ls[ok], cs[ok]
    c = float((cs * ls).sum() / (ls**2).sum())
    grows = cs[int(np.argmax(ls))] > cs[int(np.argmin(ls))]
    if 0.03 <= c <= 0.12 and grows:
        return REPRODUCED
    return PARTLY if 0.015 <= c <= 0.24 or grows else NOT


def recall_saturation_verdict(ns: Numbers, ratio: Numbers) -> Verdict:
    """``N_s / N`` declines up to N about 16, then saturates around 0.70-0.85.

    Tail: the grid points with ``N >= 16``. Saturates: the tail's range
    (max - min) ``<= 0.15``. Level: the tail's mean in ``[0.70, 0.85]``. Reproduced both;
    partly one; not neither (or no N >= 16 on the grid).

    >>> recall_saturation_verdict([2, 16, 64], [0.9, 0.8, 0.75])
    'reproduced'
    >>> recall_saturation_verdict([2, 16, 64], [0.9, 0.4, 0.3])
    'partly'
    >>> recall_saturation_verdict([2, 16, 64], [0.9, 0.9, 0.2])
    'not reproduced'
    """
    n, r = _arrays(ns=ns, ratio=ratio)
    tail = r[(n >= 16) & np.isfinite(r)]
    if tail.size == 0:
        return NOT
    flat = float(np.ptp(tail)) <= 0.15
    level = 0.70 <= float(tail.mean()) <= 0.85
    return REPRODUCED if flat and level else PARTLY if flat or level else NOT


def gradient_sensitivity_verdict(temperatures: Numbers, sensitivity: Numbers) -> Verdict:
    """``g(T, eps)`` scales like 1/T for T < 0.1, about 100x smaller at T = 1 than at 0.01.

    For one eps: the log-log slope k of g against T over ``T <= 0.1`` and the drop
    ``g(0.01) / g(1)`` (1/T predicts k = -1 and 100). Reproduced ``-1.5 <= k <= -0.5``
    and drop ``>= 30``; partly ``k <= -0.25`` or drop ``>= 3``; else not.

    >>> ts = [0.001, 0.01, 0.1, 1.0]
    >>> gradient_sensitivity_verdict(ts, [1000.0, 100.0, 10.0, 1.0])
    'reproduced'
    >>> gradient_sensitivity_verdict(ts, [1.0, 1.0, 1.0, 0.2])
    'partly'
    >>> gradient_sensitivity_verdict(ts, [1.0, 1.0, 1.0, 1.0])
    'not reproduced'
    """
    t, g = _arrays(temperatures=temperatures, sensitivity=sensitivity)
    if 0.01 not in t or 1.0 not in t:
        raise TlGeomError(f"the T grid must hold 0.01 and 1, got {t.tolist()}")
    low = t <= 0.1
    k = loglog_slope(t[low], g[low])[0] if low.sum() >= 2 else math.nan
    g1 = g[t == 1.0][0]
    drop = g[t == 0.01][0] / g1 if _finite(g1) and g1 > 0 else math.nan
    if _finite(k) and -1.5 <= k <= -0.5 and _finite(drop) and drop >= 30:
        return REPRODUCED
    return PARTLY if (_finite(k) and k <= -0.25) or (_finite(drop) and drop >= 3) else NOT


# --- sinks.md (arXiv 2605.06611) -----------------------------------------------------------


def first_position_variance_verdict(share_layers: float) -> Verdict:
    """Position 0 has the largest aggregation variance (random tokens, causal aggregation).

    ``share_layers``: layers where the variance of the head outputs is largest at
    position 0. Reproduced ``>= 0.8``, partly ``>= 0.2``, else not.

    >>> [first_position_variance_verdict(s) for s in (0.9, 0.3, 0.1)]
    ['reproduced', 'partly', 'not reproduced']
    """
    return by_share(share_layers, high=0.8, low=0.2)


def massive_activation_verdict(max_abs: float, max_ratio: float) -> Verdict:
    """Massive activations exist: a residual entry ``> 100`` and ``> 1000x`` the median.

    Over layers: the largest ``|h|`` and its ratio to the median. Reproduced both
    thresholds met; partly one of them, or both at a tenth (``> 10``, ``> 100x``); else not.

    >>> [massive_activation_verdict(*x) for x in ((2e4, 2e4), (50.0, 500.0), (5.0, 5.0))]
    ['reproduced', 'partly', 'not reproduced']
    """
    big = _finite(max_abs) and max_abs > 100
    ratio = _finite(max_ratio) and max_ratio > 1000
    if big and ratio:
        return REPRODUCED
    weak = _finite(max_abs) and _finite(max_ratio) and max_abs > 10 and max_ratio > 100
    return PARTLY if big or ratio or weak else NOT


def super_neuron_verdict(top_abs: float, top_share: float, top3_share: float) -> Verdict:
    """Super neurons exist: one MLP unit writes the massive dimension at the first token.

    ``top_abs``: the largest ``|act[n] W_out[n, dim]|``; ``top_share``/``top3_share``:
    the share of its layer's MLP write into ``dim`` from that neuron / the top three.
    Reproduced ``top_abs >= 100`` and ``top_share >= 0.5``; partly ``top_abs >= 100``
    and ``top3_share >= 0.5`` (a few neurons share it); else not.

    >>> [super_neuron_verdict(*x) for x in ((1e4, 0.7, 0.99), (1e4, 0.3, 0.6), (5.0, 0.9, 0.9))]
    ['reproduced', 'partly', 'not reproduced']
    """
    if not (_finite(top_abs) and top_abs >= 100):
        return NOT
    if _finite(top_share) and top_share >= 0.5:
        return REPRODUCED
    return PARTLY if _finite(top3_share) and top3_share >= 0.5 else NOT


def _sink_formed(before: float, after: float) -> bool:
    return _finite(before) and _finite(after) and after >= 0.1 and after >= 5 * before


def self_only_verdict(before: float, after: float) -> Verdict:
    """A self-only mask at k creates a sink at k downstream.

    ``imp(k)`` averaged over layers and heads, before and under the mask. Reproduced
    ``after >= 0.1`` and ``after >= 5 before``; partly ``after >= 2 before``; else not.

    >>> self_only_verdict(0.01, 0.26), self_only_verdict(0.01, 0.03), self_only_verdict(0.01, 0.01)
    ('reproduced', 'partly', 'not reproduced')
    """
    if _sink_formed(before, after):
        return REPRODUCED
    return PARTLY if _finite(before) and _finite(after) and after >= 2 * before else NOT


def variance_amplification_verdict(before: float, amplify: Numbers, control: Numbers) -> Verdict:
    """Variance amplification at k creates a sink there, growing with lam; the control not.

    ``amplify``/``control``: ``imp(k)`` (mean over layers and heads) for increasing lam.
    Sink formed: at the largest lam ``imp >= 0.1`` and ``>= 5 before``. Monotone: no
    step down by more than 0.01. Reproduced: amplification forms a sink, monotonically,
    and the control forms none; partly: amplification forms a sink but the control does
    too or it is not monotone; not: amplification forms no sink.

    >>> variance_amplification_verdict(0.01, [0.05, 0.2, 0.3], [0.01, 0.02, 0.02])
    'reproduced'
    >>> variance_amplification_verdict(0.01, [0.05, 0.2, 0.3], [0.01, 0.2, 0.3])
    'partly'
    >>> variance_amplification_verdict(0.01, [0.01, 0.02, 0.02], [0.01, 0.01, 0.01])
    'not reproduced'
    """
    amp, ctl = _arrays(amplify=amplify, control=control)
    if not _sink_formed(before, float(amp[-1])):
        return NOT
    monotone = bool(np.all(np.diff(amp) >= -0.01))
    control_sink = _sink_formed(before, float(ctl[-1]))
    return REPRODUCED if monotone and not control_sink else PARTLY


def headnorm_verdict(
    dom_baseline: float, dom_headnorm: float, sink_baseline: float, sink_headnorm: float
) -> Verdict:
    """HeadNorm lowers dimension disparity and sink rate (paper: 82.67 -> 33.74, no sink).

    Lowers disparity: ``DomRatio`` of the first token at least 10% lower. Lowers sinks:
    the baseline has a sink (rate ``> 0.05``) and HeadNorm's rate is below it.
    Reproduced both; partly one; not neither.

    >>> headnorm_verdict(80.0, 30.0, 0.4, 0.0), headnorm_verdict(80.0, 30.0, 0.0, 0.0)
    ('reproduced', 'partly')
    >>> headnorm_verdict(2.75, 3.06, 0.0, 0.05)
    'not reproduced'
    """
    vals = (dom_baseline, dom_headnorm, sink_baseline, sink_headnorm)
    if not all(_finite(v) for v in vals):
        return NOT
    disparity = dom_headnorm <= 0.9 * dom_baseline
    sinks = sink_baseline > 0.05 and sink_headnorm < sink_baseline
    return REPRODUCED if disparity and sinks else PARTLY if disparity or sinks else NOT
