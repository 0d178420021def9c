"""The papers' claims as small functions: measured tables in, numbers and a verdict out.

Each ``claim_*`` function takes what the library measured (the tables of ``analyze``,
``sparsify``, the normalization experiments, the sink measures) and returns a
:class:`Finding`: the numbers it looked at, a one-line ``measured`` text, the verdict of
its rule in :mod:`tl_geom.app.verdicts` (restated in the docstring) and the data of its plot.
:mod:`tl_geom.app.reproduce` runs the experiments and calls these; :data:`CLAIMS` holds the
claim texts, papers and sources. No model runs here.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from tl_geom.app import verdicts as vd
from tl_geom.geometry.diagnostics import sink_recall_correlation

__all__ = ["CLAIMS", "ClaimText", "Finding"]

GEOMETRY = "arXiv 2602.01893"
NORMALIZATION = "arXiv 2508.17821"
SINKS = "arXiv 2605.06611"


@dataclass(frozen=True)
class ClaimText:
    """What a paper states, where (paper and section), in one line."""

    claim: str
    paper: str
    source: str


CLAIMS: dict[str, ClaimText] = {
    "top_beats_random": ClaimText(
        "top-N separability exceeds random N-subsets", GEOMETRY, "Metrics, random baseline"
    ),
    "peak_small_n": ClaimText(
        "strongest non-trivial separation at N about 1-4", GEOMETRY, "Protocol, headline results"
    ),
    "rho0_recall": ClaimText(
        "Recall correlates with rho0 across heads, peak near N = 3-6",
        GEOMETRY,
        "Empirical assumptions 4",
    ),
    "value_norms": ClaimText(
        "value norms stable (CV about 0.02-0.05) with a compressed sink value",
        GEOMETRY,
        "Empirical assumptions 1",
    ),
    "cosine_decay": ClaimText(
        "value cosine similarity decays exponentially with distance",
        GEOMETRY,
        "Empirical assumptions 2",
    ),
    "four_phase": ClaimText(
        "four-phase attention profile (sink, plateau, band, ramp)",
        GEOMETRY,
        "Empirical assumptions 3",
    ),
    "head_regimes": ClaimText(
        "three head regimes, depth order Retriever -> Reset -> Mixer", GEOMETRY, "Head taxonomy"
    ),
    "sparsify": ClaimText(
        "type-guided sparsification beats random, not consistently the heuristics",
        GEOMETRY,
        "Sparsification",
    ),
    "distance_length": ClaimText(
        "d~ grows linearly with L at N = 5", NORMALIZATION, "Experiments (d~ vs L)"
    ),
    "distance_plateau": ClaimText("d~ flattens for N > 20", NORMALIZATION, "Experiments (d~ vs N)"),
    "critical_n": ClaimText("KS critical N about 0.06 L", NORMALIZATION, "Experiments (KS test)"),
    "recall_saturation": ClaimText(
        "N_s/N declines to N ~ 16, then saturates at 0.70-0.85",
        NORMALIZATION,
        "Experiments (distinguishability)",
    ),
    "gradient_sensitivity": ClaimText(
        "gradient sensitivity g(T, eps) ~ 1/T below T = 0.1, ~100x lower at T >= 1",
        NORMALIZATION,
        "Experiments (temperature)",
    ),
    "first_position_variance": ClaimText(
        "position 0 has the largest aggregation variance", SINKS, "Variance discrepancy"
    ),
    "massive_activations": ClaimText(
        "massive activations exist (|h| > 100, ~1000x median)", SINKS, "Measures"
    ),
    "super_neurons": ClaimText(
        "super neurons write the massive dimension at the first token", SINKS, "Super neurons"
    ),
    "self_only_mask": ClaimText(
        "a self-only mask at k creates a sink at k", SINKS, "Interventions 1"
    ),
    "variance_amplification": ClaimText(
        "variance amplification at k creates a sink at k growing with lam; control does not",
        SINKS,
        "Interventions 2",
    ),
    "headnorm": ClaimText(
        "HeadNorm lowers dimension disparity and sink rate", SINKS, "Pretraining study"
    ),
}
"""Claim id -> text, paper and section (spec: geometry.md, normalization.md, sinks.md)."""


@dataclass(frozen=True)
class Finding:
    """One claim measured on one model.

    Attributes:
        numbers: the figures the verdict used (JSON-serialisable).
        measured: the same, as a short text for ``claims.csv``.
        verdict: ``reproduced``, ``partly`` or ``not reproduced``.
        plot: ``kind`` (``line``/``bar``), ``x``, ``series`` (label -> ys), ``xlabel``,
            ``ylabel``, ``logx``, ``logy`` and an optional paper ``band`` (lo, hi).
    """

    numbers: dict[str, Any]
    measured: str
    verdict: vd.Verdict
    plot: dict[str, Any] = field(default_factory=dict[str, Any])


def _plot(x: Any, series: Mapping[Any, Any], **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "line", "logx": False, "logy": False, "band": None}
    out.update(kw)
    out["x"] = [v if isinstance(v, str) else float(v) for v in x]
    out["series"] = {str(k): [float(v) for v in vs] for k, vs in series.items()}
    return out


def _f(x: float, spec: str = ".2f") -> str:
    return "n/a" if not np.isfinite(x) else format(float(x), spec)


def _by_n(metrics: pd.DataFrame, col: str) -> pd.Series:
    return pd.Series(metrics.groupby("n")[col].mean())


# --- geometry -----------------------------------------------------------------------------


def claim_top_beats_random(metrics: pd.DataFrame) -> Finding:
    """Share of heads whose mean top-N F1 over 2 <= N <= 4 beats the random-subset F1.

    Verdict (:func:`~tl_geom.app.verdicts.top_beats_random_verdict`): reproduced ``>= 0.8``,
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
        f"F1 {_f(float(f1.loc[n0]))} vs random {_f(float(rnd.loc[n0]))} at N={n0}"
    )
    plot = _plot(
        f1.index, {"top-N": f1.to_numpy(), "random N-subsets": rnd.to_numpy()},
        xlabel="N", ylabel="mean F1 over heads", logx=True,
    )  # fmt: skip
    nums = {"share_heads": share, "heads": len(gap)}
    return Finding(nums, text, vd.top_beats_random_verdict(share), plot)


def claim_peak_small_n(metrics: pd.DataFrame) -> Finding:
    """Where the mean F1 over heads peaks, over N >= 2.

    Verdict (:func:`~tl_geom.app.verdicts.peak_small_n_verdict`): reproduced ``N* <= 4``,
    partly ``N* <= 8``, else not.
    """
    f1 = _by_n(metrics, "f1")
    ns, vals = f1.index.to_numpy(np.float64), f1.to_numpy(np.float64)
    ok = ns >= 2
    n_star = int(ns[ok][int(np.nanargmax(vals[ok]))]) if ok.any() else -1
    shown = ", ".join(f"{int(n)}:{_f(v)}" for n, v in zip(ns, vals, strict=True) if n >= 2)
    text = f"F1 peaks at N={n_star} over N>=2 (N:F1 {shown})"
    plot = _plot(ns, {"top-N F1": vals}, xlabel="N", ylabel="mean F1 over heads", logx=True)
    nums = {"n_star": n_star, "f1_by_n": dict(zip(ns.tolist(), vals.tolist(), strict=True))}
    return Finding(nums, text, vd.peak_small_n_verdict(ns, vals), plot)


def claim_rho0_recall(metrics: pd.DataFrame, heads: pd.DataFrame) -> Finding:
    """Spearman correlation of rho0 with Recall across heads, per N (N >= 2).

    Verdict (:func:`~tl_geom.app.verdicts.rho0_recall_verdict`): reproduced peak ``> 0.2`` at
    ``3 <= N* <= 6``, partly ``> 0.2`` elsewhere, else not.
    """
    rec = metrics.pivot_table(index=["layer", "head"], columns="n", values="recall")
    rec = rec[sorted(c for c in rec.columns if c >= 2)]
    rho0 = heads.set_index(["layer", "head"])["rho0"].reindex(rec.index)
    ok = np.isfinite(rho0.to_numpy()) & np.isfinite(rec.to_numpy()).all(1)
    ns = rec.columns.to_numpy(np.float64)
    if ok.sum() >= 2:
        corr = sink_recall_correlation(
            torch.tensor(rho0.to_numpy()[ok]), torch.tensor(rec.to_numpy()[ok])
        ).spearman.numpy()
    else:
        corr = np.full(len(ns), np.nan)
    fin = np.isfinite(corr)
    i = int(np.nanargmax(np.where(fin, corr, -np.inf))) if fin.any() else 0
    shown = ", ".join(f"{int(n)}:{_f(c)}" for n, c in zip(ns, corr, strict=True))
    text = f"peak Spearman {_f(corr[i] if fin.any() else np.nan)} at N={int(ns[i])} (N:rho {shown})"
    plot = _plot(ns, {"Spearman(rho0, R_N)": corr}, xlabel="N", ylabel="Spearman", logx=True)
    nums = {"spearman_by_n": dict(zip(ns.tolist(), corr.tolist(), strict=True))}
    return Finding(nums, text, vd.rho0_recall_verdict(ns, corr), plot)


def claim_value_norms(heads: pd.DataFrame) -> Finding:
    """Median value-norm CV over heads and the share of heads with a compressed sink value.

    Verdict (:func:`~tl_geom.app.verdicts.value_norms_verdict`): reproduced median CV
    ``<= 0.1`` and compressed (``lambda < 0.5`` in >= half the windows) in >= half the
    heads; partly one; not neither.
    """
    cv = heads["norm_cv"].to_numpy(np.float64)
    med = float(np.nanmedian(cv))
    share = float((heads["sink_compressed"].to_numpy(np.float64) >= 0.5).mean())
    lam = float(np.nanmedian(heads["sink_lambda"].to_numpy(np.float64)))
    text = (
        f"median CV {_f(med, '.3f')} (paper 0.02-0.05); sink compressed in {share:.0%} "
        f"(median lambda {_f(lam)})"
    )
    qs = np.nanquantile(cv, [0.1, 0.25, 0.5, 0.75, 0.9])
    plot = _plot(
        ["q10", "q25", "median", "q75", "q90"], {"value-norm CV": qs},
        kind="bar", xlabel="quantile over heads", ylabel="CV of ||v_i||", band=(0.02, 0.05),
    )  # fmt: skip
    nums = {"median_cv": med, "share_compressed": share, "median_lambda": lam}
    return Finding(nums, text, vd.value_norms_verdict(med, share), plot)


def _share_plot(share: float, label: str) -> dict[str, Any]:
    return _plot(
        ["holds", "fails"], {label: [share, 1 - share]}, kind="bar", ylabel="share of heads"
    )


def claim_cosine_decay(heads: pd.DataFrame) -> Finding:
    """Share of heads where the exponential cosine decay holds (in >= half the windows).

    Verdict (:func:`~tl_geom.app.verdicts.cosine_decay_verdict`): ``>= 0.5`` reproduced,
    ``>= 0.2`` partly, else not.
    """
    share = float((heads["decay_holds"].to_numpy(np.float64) >= 0.5).mean())
    r2 = float(np.nanmedian(heads["beta_r2"].to_numpy(np.float64)))
    text = f"exponential decay holds in {share:.0%} of heads (median R^2 {_f(r2)})"
    nums = {"share_heads": share, "median_r2": r2}
    return Finding(nums, text, vd.cosine_decay_verdict(share), _share_plot(share, "decay"))


def claim_four_phase(heads: pd.DataFrame) -> Finding:
    """Share of heads whose mean final-query profile fits the four phases.

    Verdict (:func:`~tl_geom.app.verdicts.four_phase_verdict`): ``>= 0.5`` reproduced,
    ``>= 0.2`` partly, else not.
    """
    holds = heads["profile_holds"].astype(str).str.lower().isin(["true", "1", "1.0"])
    share = float(holds.mean())
    r2 = float(np.nanmedian(heads["profile_r2"].to_numpy(np.float64)))
    text = f"4-phase fit holds in {share:.0%} of heads (median R^2 {_f(r2)})"
    nums = {"share_heads": share, "median_r2": r2}
    return Finding(nums, text, vd.four_phase_verdict(share), _share_plot(share, "4-phase"))


def claim_head_regimes(heads: pd.DataFrame, kmeans_ari: float) -> Finding:
    """Type shares and mean relative depth of Retriever, Reset and Mixer heads.

    Verdict (:func:`~tl_geom.app.verdicts.head_regimes_verdict`): all three types >= 5% of
    heads and depth Retriever < Reset < Mixer reproduced; other order partly; else not.
    """
    layers = heads["layer"].to_numpy(np.float64)
    span = max(layers.max() - layers.min(), 1.0)
    depth_all = (layers - layers.min()) / span
    types = ("Retriever", "Reset", "Mixer")
    kinds = heads["type"].astype(str).to_numpy()
    shares = {t: float((kinds == t).mean()) for t in types}
    depth = {t: float(depth_all[kinds == t].mean()) if shares[t] else np.nan for t in types}
    order = " -> ".join(sorted((t for t in types if np.isfinite(depth[t])), key=depth.__getitem__))
    text = (
        "shares "
        + ", ".join(f"{t} {shares[t]:.0%}" for t in types)
        + f"; depth order {order or 'n/a'}; k-means ARI {_f(kmeans_ari)}"
    )
    plot = _plot(
        list(types), {"mean relative depth": [depth[t] for t in types]},
        kind="bar", ylabel="mean layer / (layers - 1)",
    )  # fmt: skip
    nums = {"shares": shares, "depth": depth, "kmeans_ari": kmeans_ari}
    return Finding(nums, text, vd.head_regimes_verdict(shares, depth), plot)


def claim_sparsify(table: pd.DataFrame) -> Finding:
    """Loss change per removed fraction: the type rule vs random and the heuristics (zero ablation).

    Verdict (:func:`~tl_geom.app.verdicts.sparsify_verdict`): type below random at >= 75% of
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
        + f": type {'/'.join(_f(x) for x in typ)}, random {'/'.join(_f(x) for x in rnd)}, "
        f"best heuristic {best} {'/'.join(_f(x) for x in heur[best])}"
    )
    plot = _plot(
        fr, {r: curve.loc[r].to_numpy() for r in curve.index},
        xlabel="fraction of heads zeroed", ylabel="delta loss (nats)",
    )  # fmt: skip
    nums: dict[str, Any] = {str(r): curve.loc[r].tolist() for r in curve.index}
    nums["fractions"] = fr.tolist()
    return Finding(nums, text, vd.sparsify_verdict(typ, rnd, heur), plot)


# --- normalization ------------------------------------------------------------------------


def claim_distance_length(table: pd.DataFrame) -> Finding:
    """``d~_5`` of the top-5 set against L; log-log slope.

    Verdict (:func:`~tl_geom.app.verdicts.distance_length_verdict`): slope 0.8-1.2 with
    ``R^2 >= 0.9`` reproduced, slope ``>= 0.3`` partly, else not.
    """
    ls, d = table["length"].to_numpy(np.float64), table["d_top"].to_numpy(np.float64)
    k, r2 = vd.loglog_slope(ls, d)
    text = f"d~_5 ~ L^{_f(k)} (R^2 {_f(r2)}) for L = {int(ls.min())}-{int(ls.max())}"
    plot = _plot(
        ls, {"top-5": d, "random 5": table["d_random"].to_numpy(np.float64)},
        xlabel="L", ylabel="d~_5", logx=True, logy=True,
    )  # fmt: skip
    return Finding({"slope": k, "r2": r2}, text, vd.distance_length_verdict(ls, d), plot)


def claim_distance_plateau(table: pd.DataFrame, length: int) -> Finding:
    """``d~_N`` against N at the longest L; the verdict on the paper's grid N <= 100.

    The paper's grid is N in 1, 5, 10, 20, 100; larger N in ``table`` are shown and
    reported, not judged. Verdict (:func:`~tl_geom.app.verdicts.distance_plateau_verdict`):
    change from N = 20 to N = 100 ``<= 10%`` (and the early change at least twice that)
    reproduced, ``<= 25%`` partly, else not.
    """
    ns, d = table["n"].to_numpy(np.float64), table["d_top"].to_numpy(np.float64)
    paper = ns <= 100
    shown = ", ".join(f"{int(n)}:{_f(v, '.3g')}" for n, v in zip(ns, d, strict=True))
    text = f"L={length}, N:d~ {shown}"
    plot = _plot(
        ns, {"top-N": d, "random N": table["d_random"].to_numpy(np.float64)},
        xlabel="N", ylabel="d~_N", logx=True,
    )  # fmt: skip
    nums = {"length": length, "d_by_n": dict(zip(ns.tolist(), d.tolist(), strict=True))}
    return Finding(nums, text, vd.distance_plateau_verdict(ns[paper], d[paper]), plot)


def claim_critical_n(table: pd.DataFrame) -> Finding:
    """KS critical N against L (top-N vs random-N ``d~``, level 0.01).

    Verdict (:func:`~tl_geom.app.verdicts.critical_n_verdict`): slope ``N*/L`` 0.03-0.12 and
    growing reproduced, 0.015-0.24 or growing partly, else not.
    """
    ls, cs = table["length"].to_numpy(np.float64), table["critical_n"].to_numpy(np.float64)
    ok = np.isfinite(cs)
    c = float((cs[ok] * ls[ok]).sum() / (ls[ok] ** 2).sum()) if ok.any() else np.nan
    shown = ", ".join(
        f"{int(n)}:{'>' + str(int(g)) if not np.isfinite(v) else int(v)}"
        for n, v, g in zip(ls, cs, table["grid_max"], strict=True)
    )
    text = f"N*/L ~ {_f(c, '.3f')} (paper 0.06); L:N* {shown}"
    bound = np.where(np.isfinite(cs), np.nan, table["grid_max"].to_numpy(np.float64))
    plot = _plot(
        ls, {"critical N": cs, "N* > (rejects at every N)": bound, "0.06 L (paper)": 0.06 * ls},
        xlabel="L", ylabel="N*", logx=True, logy=True,
    )  # fmt: skip
    nums = {"slope": c, "critical_by_length": dict(zip(ls.tolist(), cs.tolist(), strict=True))}
    return Finding(nums, text, vd.critical_n_verdict(ls, cs), plot)


def claim_recall_saturation(table: pd.DataFrame) -> Finding:
    """``N_s / N`` against N.

    Verdict (:func:`~tl_geom.app.verdicts.recall_saturation_verdict`): the N >= 16 tail flat
    (range ``<= 0.15``) and its mean in 0.70-0.85 reproduced, one of the two partly,
    else not.
    """
    ns, r = table["n"].to_numpy(np.float64), table["ns_over_n"].to_numpy(np.float64)
    tail = r[ns >= 16]
    lvl = float(tail.mean()) if tail.size else np.nan
    rng = float(np.ptp(tail)) if tail.size else np.nan
    at2 = r[ns == 2][0] if 2 in ns else np.nan
    text = f"N_s/N for N>=16: mean {_f(lvl)} (paper 0.70-0.85), range {_f(rng)}; N=2: {_f(at2)}"
    plot = _plot(ns, {"N_s / N": r}, xlabel="N", ylabel="N_s / N", logx=True, band=(0.70, 0.85))
    nums = {
        "tail_mean": lvl,
        "tail_range": rng,
        "by_n": dict(zip(ns.tolist(), r.tolist(), strict=True)),
    }
    return Finding(nums, text, vd.recall_saturation_verdict(ns, r), plot)


def claim_gradient_sensitivity(table: pd.DataFrame) -> Finding:
    """``g(T, eps)`` against T, one curve per eps; the verdict of each eps, combined.

    Verdict: :func:`~tl_geom.app.verdicts.gradient_sensitivity_verdict` per eps; reproduced if
    every eps reproduces, not if none is at least partly, else partly.
    """
    parts, series, nums = [], {}, {}
    per_eps: list[vd.Verdict] = []
    for eps, grp in table.groupby("eps"):
        grp = grp.sort_values("temperature")
        t, g = grp["temperature"].to_numpy(np.float64), grp["sensitivity"].to_numpy(np.float64)
        low = t <= 0.1
        k = vd.loglog_slope(t[low], g[low])[0]
        drop = float(g[t == 0.01][0] / g[t == 1.0][0]) if 0.01 in t and 1.0 in t else np.nan
        per_eps.append(vd.gradient_sensitivity_verdict(t, g))
        parts.append(f"eps {float(eps):g}: slope {_f(k)}, g(0.01)/g(1) {_f(drop, '.3g')}")  # type: ignore[arg-type]
        series[f"eps={float(eps):g}"] = g  # type: ignore[arg-type]
        nums[f"eps={float(eps):g}"] = {"slope_below_0.1": k, "drop_0.01_to_1": drop}  # type: ignore[arg-type]
    temps = sorted(table["temperature"].unique())
    verdict: vd.Verdict = (
        vd.REPRODUCED
        if all(v == vd.REPRODUCED for v in per_eps)
        else vd.NOT
        if all(v == vd.NOT for v in per_eps)
        else vd.PARTLY
    )
    text = "; ".join(parts) + " (1/T: slope -1, 100x)"
    plot = _plot(temps, series, xlabel="T", ylabel="g(T, eps)", logx=True, logy=True)
    return Finding(nums, text, verdict, plot)


# --- sinks --------------------------------------------------------------------------------


def claim_first_position_variance(samples: np.ndarray, dims: np.ndarray) -> Finding:
    """Variance of the head outputs by position on random tokens, ``[layer, pos]`` each.

    ``samples``: across samples (the spec's argument: position 0 averages one value);
    ``dims``: over ``d_head`` ([ours], the quantity ``amplify_variance`` scales). The
    verdict uses ``samples``. Verdict
    (:func:`~tl_geom.app.verdicts.first_position_variance_verdict`):
    position 0 largest in ``>= 80%`` of layers reproduced, ``>= 20%`` partly, else not.
    """
    share = float((samples.argmax(-1) == 0).mean())
    ratio = samples[:, 0] / samples[:, 1:].mean(-1)
    ratio_d = dims[:, 0] / dims[:, 1:].mean(-1)
    text = (
        f"position 0 largest in {share:.0%} of layers (across samples); var(0)/var(rest) "
        f"{_f(ratio.min())}-{_f(ratio.max())}; over d_head {_f(ratio_d.min())}-{_f(ratio_d.max())}"
    )
    plot = _plot(
        range(len(ratio)), {"across samples": ratio, "over d_head": ratio_d},
        xlabel="layer", ylabel="var(pos 0) / mean var(pos > 0)", logy=True,
    )  # fmt: skip
    nums = {"share_layers": share, "ratio_by_layer": ratio.tolist(), "ratio_dims": ratio_d.tolist()}
    return Finding(nums, text, vd.first_position_variance_verdict(share), plot)


def claim_massive_activations(
    top: np.ndarray, ratio: np.ndarray, position: np.ndarray, dim: np.ndarray
) -> Finding:
    """Largest residual magnitude per layer (batch mean), its ratio to the median and its place.

    Verdict (:func:`~tl_geom.app.verdicts.massive_activation_verdict`): ``> 100`` and
    ``> 1000x`` the median reproduced; one of them (or both at a tenth) partly; else not.
    """
    i = int(np.argmax(top))
    text = (
        f"max |h| {_f(top[i], '.4g')} = {_f(ratio[i], '.3g')}x median at layer {i} "
        f"(position {int(position[i])}, dim {int(dim[i])}); "
        f"{int(((top > 100) & (ratio > 1000)).sum())} of {len(top)} layers massive"
    )
    plot = _plot(
        range(len(top)), {"top |h|": top, "ratio to median": ratio},
        xlabel="layer", ylabel="magnitude", logy=True,
    )  # fmt: skip
    nums = {"max_abs": float(top[i]), "max_ratio": float(ratio[i]), "layer": i}
    return Finding(
        nums, text, vd.massive_activation_verdict(float(top[i]), float(ratio.max())), plot
    )


def claim_super_neurons(frame: pd.DataFrame, dim: int) -> Finding:
    """Neuron writes into the massive dimension at position 0 (``SuperNeurons.to_frame()``).

    Verdict (:func:`~tl_geom.app.verdicts.super_neuron_verdict`): one neuron ``|c| >= 100``
    with ``>= 50%`` of its MLP's write reproduced; the top three ``>= 50%`` partly; else not.
    """
    top = frame.loc[frame["abs_contribution"].idxmax()]
    same = pd.DataFrame(frame[frame["layer"] == top["layer"]])
    top3 = float(same.sort_values("abs_contribution", ascending=False)["share"].iloc[:3].sum())
    text = (
        f"layer {int(top['layer'])} neuron {int(top['neuron'])} writes "
        f"{_f(float(top['contribution']), '+.4g')} into dim {dim} "
        f"({float(top['share']):.0%} of the MLP's write; top 3: {top3:.0%})"
    )
    best = pd.Series(frame.groupby("layer")["abs_contribution"].max())
    plot = _plot(
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
    verdict = vd.super_neuron_verdict(float(top["abs_contribution"]), float(top["share"]), top3)
    return Finding(nums, text, verdict, plot)


def claim_self_only(before: np.ndarray, after: np.ndarray, position: int) -> Finding:
    """``imp(k)`` per layer (mean over heads and samples) before and under the self-only mask.

    Verdict (:func:`~tl_geom.app.verdicts.self_only_verdict`) on the means over layers:
    ``after >= 0.1`` and ``>= 5x before`` reproduced, ``>= 2x`` partly, else not.
    """
    b, a = float(before.mean()), float(after.mean())
    text = f"mean imp({position}) {_f(b, '.3f')} -> {_f(a, '.3f')} (max layer {_f(after.max())})"
    plot = _plot(
        range(len(before)), {"before": before, "self-only mask": after},
        xlabel="layer", ylabel=f"imp({position})",
    )  # fmt: skip
    return Finding({"before": b, "after": a}, text, vd.self_only_verdict(b, a), plot)


def claim_variance_amplification(shift: pd.DataFrame, position: int) -> Finding:
    """``sink_shift`` table: mean ``imp(k)`` over layers per arm and lam.

    Verdict (:func:`~tl_geom.app.verdicts.variance_amplification_verdict`): amplification
    forms a sink (``>= 0.1``, ``>= 5x before``), monotonically in lam, and the control
    none reproduced; amplification forms one but so does the control or not
    monotonically partly; no sink not.
    """
    before = float(shift["imp_k_before"].to_numpy(np.float64).mean())
    means = shift.pivot_table(index="lam", columns="arm", values="imp_k_after", aggfunc="mean")
    lams = [float(x) for x in means.index]

    def arm(name: str) -> list[float]:
        return means[name].tolist() if name in means.columns else [np.nan] * len(lams)

    amp, ctl = arm("amplify"), arm("control")
    text = (
        f"imp({position}) before {_f(before, '.3f')}; lam "
        + "/".join(f"{lam:g}" for lam in lams)
        + f": amplify {'/'.join(_f(x, '.3f') for x in amp)}, "
        f"control {'/'.join(_f(x, '.3f') for x in ctl)}"
    )
    plot = _plot(
        lams, {"amplify": amp, "control (lam o)": ctl, "before": [before] * len(lams)},
        xlabel="lam", ylabel=f"mean imp({position})", logx=True,
    )  # fmt: skip
    nums = {"before": before, "lams": lams, "amplify": amp, "control": ctl}
    return Finding(nums, text, vd.variance_amplification_verdict(before, amp, ctl), plot)


def claim_headnorm(summary: pd.DataFrame, steps: int) -> Finding:
    """The HeadNorm study's summary (one row per arm).

    Verdict (:func:`~tl_geom.app.verdicts.headnorm_verdict`): DomRatio >= 10% lower and a
    baseline sink (rate > 0.05) lowered reproduced; one partly; neither not.
    """
    s = summary.set_index("arm")
    b, h = s.loc["baseline"], s.loc["headnorm"]
    text = (
        f"{steps} steps: DomRatio {_f(b['dom_ratio'])} -> {_f(h['dom_ratio'])}, "
        f"sink rate {_f(b['sink_rate'])} -> {_f(h['sink_rate'])}, val loss "
        f"{_f(b['val_loss'], '.3f')} -> {_f(h['val_loss'], '.3f')}, eff. rank "
        f"{_f(b['effective_rank'], '.1f')} -> {_f(h['effective_rank'], '.1f')}"
    )
    cols = ("dom_ratio", "sink_rate", "val_loss", "effective_rank")
    plot = _plot(
        list(cols), {"baseline": [b[c] for c in cols], "HeadNorm": [h[c] for c in cols]},
        kind="bar", ylabel="value",
    )  # fmt: skip
    nums = {arm: {c: float(s.loc[arm, c]) for c in cols} for arm in ("baseline", "headnorm")}
    verdict = vd.headnorm_verdict(
        float(b["dom_ratio"]), float(h["dom_ratio"]), float(b["sink_rate"]), float(h["sink_rate"])
    )
    return Finding(nums, text, verdict, plot)
