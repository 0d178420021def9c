"""Per-window results -> the tables of a run: means, spreads, head types, the envelope.

No model is needed: :func:`aggregate` works on the dictionaries that
:func:`tl_geom.jobs.window.run_window` returns (or that were read back from
``out/windows``), so a resumed run aggregates exactly as an uninterrupted one.
"""

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from tl_geom.geometry.clustering import cluster_agreement
from tl_geom.geometry.diagnostics import norm_cv_positions
from tl_geom.geometry.profile import attention_profile
from tl_geom.geometry.simulation import simulate_heads
from tl_geom.geometry.taxonomy import TaxonomyConfig, label_stability
from tl_geom.jobs.results import AttentionView
from tl_geom.jobs.window import (
    C_LAST,
    C_SINK,
    CURVE_KEYS,
    HEAD_KEYS,
    MASS_KEYS,
    PRF_KEYS,
    RADIUS_KEYS,
    RANDOM_KEYS,
    VALUE_NORMS,
    WindowSpec,
)

__all__ = ["QUERY_KEYS", "Tables", "aggregate"]

QUERY_KEYS = 24
"""Keys of the measured query's row in the attention view [ours]."""


@dataclass(frozen=True)
class Tables:
    """The aggregated tables of a run (an :class:`~tl_geom.jobs.results.Analysis` less ``run``).

    ``summary`` holds what the tables were made with (the taxonomy's thresholds, counts
    and k-means check) for ``run.json``.
    """

    metrics: pd.DataFrame
    heads: pd.DataFrame
    envelope: pd.DataFrame
    profiles: np.ndarray
    view: AttentionView | None
    summary: dict[str, Any]


def aggregate(
    per_window: list[dict[str, torch.Tensor]],
    spec: WindowSpec,
    *,
    d_head: int,
    samples: int = 64,
    view_tokens: list[str] | None = None,
    taxonomy: TaxonomyConfig | None = None,
) -> Tables:
    """Means and spreads over windows, profile fits, head types and the envelope (no model).

    Head types: the window means of ``c_last``, ``c_sink`` and the mass split go through
    :func:`tl_geom.geometry.taxonomy.classify_heads`, each label with its bootstrap
    stability over windows (``type_stability``, :func:`~tl_geom.geometry.taxonomy.label_stability`);
    the k-means check and its agreement with the rules land in ``summary["taxonomy"]``.
    """
    stack = {k: torch.stack([r[k] for r in per_window]) for k in per_window[0] if k != "view"}
    metrics = _metrics_table(stack, spec, len(per_window))
    profiles = stack["profile"].double().mean(0)  # [layer, head, L]
    heads = _heads_table(stack, profiles, spec)
    heads, types_summary = _head_types(stack, heads, spec, taxonomy or TaxonomyConfig())
    return Tables(
        metrics=pd.DataFrame(metrics),
        heads=pd.DataFrame(heads),
        envelope=_envelope(
            stack, profiles, spec, np.asarray(heads["type"]), d_head=d_head, samples=samples
        ),
        profiles=profiles.float().numpy(),
        view=_attention_view(per_window[0], stack, spec, view_tokens),
        summary={"taxonomy": types_summary, "window_gaps": _window_gaps(stack, spec)},
    )


def _metrics_table(
    stack: dict[str, torch.Tensor], spec: WindowSpec, windows: int
) -> dict[str, Any]:
    """One row per layer x head x N: window means, spreads of P/R/F, the curves."""
    n_layers, n_heads = stack["precision"].shape[1:3]
    metrics: dict[str, Any] = {
        "layer": np.repeat(np.array(spec.layers), n_heads * len(spec.n)),
        "head": np.tile(np.repeat(np.arange(n_heads), len(spec.n)), n_layers),
        "n": np.tile(np.array(spec.n), n_layers * n_heads),
    }
    for key in (*PRF_KEYS, *RANDOM_KEYS, *RADIUS_KEYS):
        metrics[key] = stack[key].double().nanmean(0).flatten().numpy()
    # The margin in value space beside the weight margin Delta_N: r_min - r_max, negative
    # when the two balls overlap (geometry.md, "Bounds": Delta / B is a distance ratio).
    value_gap = stack["r_min"].double() - stack["r_max"].double()
    metrics["value_margin"] = value_gap.nanmean(0).flatten().numpy()
    for key in PRF_KEYS:
        metrics[f"{key}_std"] = _nanstd(stack[key].double()).flatten().numpy()
    gap = stack["f1"].double() - stack["f1_random"].double()  # the headline's spread
    metrics["f1_gap_std_random"] = _nanstd(gap).flatten().numpy()
    metrics["windows"] = windows
    for key in CURVE_KEYS:
        metrics[key] = stack[key].double().nanmean(0).flatten().numpy()
    return metrics


def _window_gaps(stack: dict[str, torch.Tensor], spec: WindowSpec) -> dict[str, Any]:
    """Per window and N, the mean over heads of ``F1 - F1 random`` (the headline's unit).

    ``gap[w][k]`` for window w and N = ``n[k]`` (NaN heads skipped; NaN without a
    baseline); :func:`tl_geom.app.headline.headline` bootstraps over these windows.
    """
    gap = stack["f1"].double() - stack["f1_random"].double()  # [W, layer, head, N]
    per_window = gap.flatten(1, 2).nanmean(1)  # [W, N]
    return {"n": list(spec.n), "gap": per_window.tolist()}


def _heads_table(
    stack: dict[str, torch.Tensor], profiles: torch.Tensor, spec: WindowSpec
) -> dict[str, Any]:
    """One row per head: window means of the diagnostics and the 4-segment profile fit."""
    n_layers, n_heads = profiles.shape[:2]
    fit = attention_profile(profiles)
    heads: dict[str, Any] = {
        "layer": np.repeat(np.array(spec.layers), n_heads),
        "head": np.tile(np.arange(n_heads), n_layers),
        "kv_head": np.tile(np.arange(n_heads) // _groups(stack, n_heads), n_layers),
        "type": "unclassified",
    }
    for key in HEAD_KEYS:
        if key in stack:
            heads[key] = stack[key].double().nanmean(0).flatten().numpy()
    heads.update(_positional_cv(stack, n_heads))
    heads["profile_r2"] = fit.r2.flatten().numpy()
    heads["profile_holds"] = fit.holds.flatten().numpy()
    return heads


def _groups(stack: dict[str, torch.Tensor], n_heads: int) -> int:
    """Query heads per KV head (from the ``[W, layer, KV, L]`` value norms; 1 without them)."""
    return n_heads // stack[VALUE_NORMS].shape[2] if VALUE_NORMS in stack else 1


def _positional_cv(stack: dict[str, torch.Tensor], n_heads: int) -> dict[str, np.ndarray]:
    """``norm_cv_positions`` (sampling part removed) and ``norm_cv_positions_raw`` per head.

    From the ``[W, layer, KV, L]`` value norms of the windows
    (:func:`tl_geom.geometry.diagnostics.norm_cv_positions`), repeated to the query
    heads of each KV group; NaN when the windows carry no norms (older window files).
    """
    if VALUE_NORMS not in stack:
        nan = np.full(stack["precision"].shape[1] * n_heads, np.nan)
        return {"norm_cv_positions": nan, "norm_cv_positions_raw": nan.copy()}
    norms = stack[VALUE_NORMS].double()
    res = norm_cv_positions(norms)
    groups = _groups(stack, n_heads)
    return {
        "norm_cv_positions": res.cv.repeat_interleave(groups, -1).flatten().numpy(),
        "norm_cv_positions_raw": res.cv_raw.repeat_interleave(groups, -1).flatten().numpy(),
    }


def _head_types(
    stack: dict[str, torch.Tensor], heads: dict[str, Any], spec: WindowSpec, cfg: TaxonomyConfig
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Rule labels, their stability and the features into the heads table; k-means as a summary."""
    last_w, sink_w = stack[C_LAST].double(), stack[C_SINK].double()  # [W, layer, head, N]
    mass_w = torch.stack([stack[k].double() for k in MASS_KEYS], -1)  # [W, layer, head, 3]
    length = int(stack["profile"].shape[-1])
    types, stability = label_stability(last_w, sink_w, mass_w, cfg, n=spec.n, length=length)
    c_last, c_sink, mass = last_w.nanmean(0), sink_w.nanmean(0), mass_w.nanmean(0)
    agree = cluster_agreement(c_last, c_sink, mass, types.code, cfg)
    frame = types.to_frame()
    heads = {**heads, "type": frame["type"].to_numpy()}
    heads["type_stability"] = stability.flatten().numpy()
    for key in MASS_KEYS:
        heads[key] = stack[key].double().nanmean(0).flatten().numpy()
    for col in frame.columns[1:]:
        heads[col] = frame[col].to_numpy()
    heads["cluster"] = agree.clusters
    counts = {t: int((frame["type"] == t).sum()) for t in dict.fromkeys(frame["type"])}
    summary = {
        "config": asdict(cfg),
        "counts": counts,
        "length": length,
        "median_stability": float(np.nanmedian(heads["type_stability"]))
        if np.isfinite(heads["type_stability"]).any()
        else math.nan,
        "kmeans": {
            "k": 3,
            "labelled_heads": agree.labelled,
            "accuracy": agree.accuracy,
            "adjusted_rand": agree.ari,
            "inertia": agree.inertia,
        },
        "query": "final",
    }
    return heads, summary


def _nanstd(x: torch.Tensor) -> torch.Tensor:
    """Population std over windows (dim 0), ignoring NaN; 0 for a single window."""
    mean = x.nanmean(0, keepdim=True)
    return ((x - mean) ** 2).nanmean(0).sqrt()


def _head_params(stack: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[heads, 4]``: each head's cv, lambda, beta, c_inf fitted over the windows [ours].

    cv and lambda: window means; beta and c_inf: window medians of the fits (a head
    whose decay fit failed in every window gets ``beta = inf``, independent directions,
    and ``c_inf = 0``).
    """
    cv = stack["norm_cv_tokens"].double().nanmean(0).flatten()
    lam = stack["sink_lambda"].double().nanmean(0).flatten()
    beta = stack["beta"].double().nanmedian(0).values.flatten()
    beta = torch.where(torch.isfinite(beta) & (beta > 0), beta, math.inf)
    if "c_inf" in stack:
        c_inf = stack["c_inf"].double().nanmedian(0).values.flatten()
    else:
        c_inf = torch.zeros_like(cv)
    c_inf = torch.nan_to_num(c_inf, nan=0.0).clamp(0.0, 0.99)
    cv, lam = torch.nan_to_num(cv, nan=0.0), torch.nan_to_num(lam, nan=1.0)
    return torch.stack([cv, lam, beta, c_inf], -1)


def _envelope(
    stack: dict[str, torch.Tensor],
    profiles: torch.Tensor,
    spec: WindowSpec,
    types: np.ndarray,
    *,
    d_head: int,
    samples: int,
) -> pd.DataFrame:
    """Expected P/R/F per N, each head simulated from its own fitted model [ours].

    :func:`tl_geom.geometry.simulation.simulate_heads` with each head's mean
    final-query profile and its parameters (:func:`_head_params`), then the mean over
    heads, as ``metrics.csv`` is averaged; ``precision_<type>`` etc. are the means over
    the heads of each type. ``*_std``: std over heads of the per-head expectations.
    ``samples // 8`` draws per head [ours]: the mean over heads averages the rest.
    """
    alpha = profiles.reshape(-1, profiles.shape[-1])
    alpha = alpha / alpha.sum(-1, keepdim=True)
    params = _head_params(stack)
    sim = simulate_heads(
        alpha, list(spec.n), d=d_head, params=params, samples=max(1, samples // 8), seed=spec.seed
    )
    out: dict[str, Any] = {"n": list(spec.n)}
    for key in ("precision", "recall", "f1"):
        val = getattr(sim, key)
        out[key] = val.mean(0).numpy()
        out[f"{key}_std"] = val.std(0, unbiased=False).numpy()
    for t in dict.fromkeys(types.tolist()):
        pick = torch.as_tensor(types == t)
        for key in ("precision", "recall", "f1"):
            out[f"{key}_{t}"] = getattr(sim, key)[pick].mean(0).numpy()
    return pd.DataFrame(out)


def _attention_view(
    first: dict[str, torch.Tensor],
    stack: dict[str, torch.Tensor],
    spec: WindowSpec,
    tokens: list[str] | None,
) -> AttentionView | None:
    """The first window's attention view, in the layer with the most sink mass.

    Beside the first T tokens, the query that was measured: the final query's row of
    window 0 (``profile``) over its ``QUERY_KEYS`` heaviest keys, ranked by the largest
    weight over the layer's heads [ours], shown in position order.
    """
    if "view" not in first or tokens is None:
        return None
    pick = int(stack["sink_mass"].mean((0, 2)).argmax())
    pattern = first["view"][pick].numpy()
    row = first["profile"][pick].double()  # [H, L]: the final query, as measured
    k = min(QUERY_KEYS, row.shape[-1])
    keys = torch.sort(torch.topk(row.amax(0), k).indices).values
    return AttentionView(
        layer=int(spec.layers[pick]),
        tokens=tokens[: pattern.shape[-1]],
        pattern=pattern,
        query_positions=keys.tolist(),
        query_tokens=[*(tokens[i] for i in keys.tolist()), tokens[row.shape[-1] - 1]],
        query_weights=row[:, keys].numpy(),
    )
