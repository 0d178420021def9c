"""One window through the model, reduced to per-head metrics inside the hooks.

Each layer's ``hook_v`` and ``hook_pattern`` are handed to :func:`reduce_layer` as soon
as that layer has run (``hooks.stream_layers``); it keeps ``[head, N]``-sized results
and drops the ``[head, L, L]`` pattern, so peak memory stays near a plain forward.
"""

import ctypes
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import einops
import torch
from torch import Tensor
from tqdm.auto import tqdm

from tl_geom._checks import row_sum_atol
from tl_geom.geometry.all_queries import separability_all_queries_streamed
from tl_geom.geometry.baseline import random_separability
from tl_geom.geometry.decay import cosine_decay
from tl_geom.geometry.diagnostics import (
    attention_entropy,
    norm_stability,
    sink_mass,
    sink_similarity,
)
from tl_geom.geometry.scratch import release_scratch, scratch
from tl_geom.geometry.taxonomy import head_curves
from tl_geom.geometry.top_n import separability
from tl_geom.jobs.head_rows import FinalRows, keep_final_row
from tl_geom.lens.hooks import expand_kv, model_device
from tl_geom.lens.rows import Rows as LayerRows
from tl_geom.lens.rows import stream_rows
from tl_geom.sinks.sink_math import first_key_importance

__all__ = ["WindowSpec", "run_window"]

PRF_KEYS = ("precision", "recall", "f1")
RADIUS_KEYS = ("r_max", "r_min", "margin")
TOP_KEYS = (*PRF_KEYS, *RADIUS_KEYS)
RANDOM_KEYS = ("precision_random", "recall_random", "f1_random")
HEAD_KEYS = (
    "sink_mass",
    "entropy",
    "norm_cv_tokens",
    "norm_cv_holds",
    "sink_lambda",
    "sink_compressed",
    "beta",
    "beta_r2",
    "c_inf",
    "decay_holds",
    "rho0",
    "last_token",
    "imp0",
)
C_LAST, C_SINK = "c_last", "c_sink"
CURVE_KEYS = (C_LAST, C_SINK)
MASS_KEYS = ("mass_sink", "mass_last", "mass_rest")
VALUE_NORMS = "value_norms"


@dataclass(frozen=True)
class WindowSpec:
    """What to compute for each window.

    Attributes:
        n: the N grid.
        queries: ``"last"`` (the final query row) or ``"all"`` (every row, averaged;
            the random baseline then uses ``random_rows`` evenly spaced rows that see
            more than max(N) keys [ours]).
        draws: random subsets per row for the baseline; 0 skips the baseline (its
            columns are NaN), which is most of the metric cost on a CPU.
        seed: base seed; the baseline of window w, layer l uses ``seed + 1009 w + l``.
        causal: whether query rows see only their past (decoders).
        layers: the layers to analyse.
        view_tokens: size T of the ``[head, T, T]`` attention view kept from a window.
        random_rows: rows used for the all-query random baseline.
        score_dtype: dtype of the random baseline's scores (``RunFacts.baseline_scores``;
            None: :func:`~tl_geom.geometry.baseline.default_score_dtype` of the rows'
            device). The counts are the same either way.
        sink_tokens: T of the sink importance ``imp0 = mean_{i < T} A[i, 0]`` over the
            window's first T queries (sinks.md, "Measures": ``imp(0)`` with the standard
            T = 64; for a causal model exactly ``imp(0)`` of the T-token prefix; for an
            encoder the first T queries over all keys [ours]).
    """

    n: tuple[int, ...]
    queries: Literal["last", "all"]
    draws: int
    seed: int
    causal: bool
    layers: tuple[int, ...]
    view_tokens: int = 48
    random_rows: int = 16
    sink_tokens: int = 64
    score_dtype: torch.dtype | None = None


Rows = Callable[[Sequence[int]], Tensor]
"""Attention rows of one layer: ``rows(positions) -> [H, len(positions), L]``."""


def reduce_layer(rows: Rows, v_kv: Tensor, spec: WindowSpec, seed: int) -> dict[str, Tensor]:
    """Metrics of one layer of one window: ``rows`` of its pattern, ``v_kv [1, L, KV, d]``.

    ``rows`` hands out query rows on demand (slices of ``hook_pattern``, or rows
    recomputed from q and k by the sdpa backend), so the all-query metrics take the
    pattern ``chunk`` rows at a time and never need it whole.

    Returns ``[H, N]`` top-N and random-baseline metrics, ``[H]`` head diagnostics,
    the ``[H, L]`` final-query row (the attention profile) and the ``[KV, L]`` value
    norms per KV head and position (``value_norms``, for the CV over positions). The
    taxonomy signals (``c_last``, ``c_sink`` ``[H, N]`` and the mass split,
    :func:`tl_geom.geometry.taxonomy.head_curves`) always refer to the final query, also
    with ``queries="all"`` [ours]: the spec defines them for the query's own position q,
    and averaging cosines over rows of different lengths would mix N regimes.
    """
    length = v_kv.shape[1]
    raw = rows([length - 1])[:, 0]  # [H, L], the final query
    atol = row_sum_atol(raw.dtype)  # bf16/fp16 rows: the tolerance of their format
    alpha = raw.double()
    n_heads = alpha.shape[0]
    groups = n_heads // v_kv.shape[2]
    # float64 and contiguous once: every metric below reads these values.
    values = einops.rearrange(expand_kv(v_kv, n_heads), "b k h d -> b h k d")[0]
    kept = scratch("layer_values", tuple(values.shape), torch.float64, values.device)
    values = kept.copy_(values)  # a kept buffer: a fresh one faults its pages in per layer
    out: dict[str, Tensor] = {}
    s_n = None
    if spec.queries == "last":
        top = separability(alpha, values, spec.n, atol=atol)
        s_n = top.s
        for key in TOP_KEYS:
            out[key] = getattr(top, key)
    else:
        allq = separability_all_queries_streamed(
            lambda start, stop: rows(range(start, stop)),
            values,
            spec.n,
            causal=spec.causal,
            atol=atol,
        )
        for key in TOP_KEYS:
            out[key] = getattr(allq, key).nanmean(dim=-2)
    if not spec.draws:
        baseline = _no_baseline(alpha, spec)
    elif spec.queries == "last":
        rnd = random_separability(
            alpha,
            values,
            spec.n,
            draws=spec.draws,
            seed=seed,
            score_dtype=spec.score_dtype,
            atol=atol,
        )
        baseline = (rnd.precision, rnd.recall, rnd.f1)
    else:
        baseline = _random_over_rows(rows, values, spec, seed)
    out.update(zip(RANDOM_KEYS, baseline, strict=True))
    # Value diagnostics are per KV head (shared by its query heads): compute once each.
    kv_values = einops.rearrange(v_kv[0], "k h d -> h k d")
    kv64 = kv_values.double()  # once: each diagnostic below works in float64
    norms = norm_stability(kv64)
    decay = cosine_decay(kv64)
    per_kv = {
        "norm_cv_tokens": norms.cv,
        "norm_cv_holds": norms.stable.double(),
        "sink_lambda": norms.lam,
        "sink_compressed": norms.compressed.double(),
        "beta": decay.beta,
        "beta_r2": decay.r2,
        "c_inf": decay.c_inf,
        "decay_holds": decay.holds.double(),
        "rho0": sink_similarity(kv64),
    }
    for key, val in per_kv.items():
        out[key] = val.double().repeat_interleave(groups)
    out["imp0"] = first_key_importance(rows(range(min(spec.sink_tokens, length))))
    out["sink_mass"] = sink_mass(alpha)
    out["entropy"] = attention_entropy(alpha)
    out["last_token"] = alpha[:, -1]  # alpha_q: the final query's weight on itself
    curves = head_curves(alpha, values, list(spec.n), query=alpha.shape[-1] - 1, s=s_n)
    for key in (*CURVE_KEYS, *MASS_KEYS):
        out[key] = getattr(curves, key)
    # [KV, L] per-position value norms, for norm_cv_positions across windows (aggregate);
    # float32 in the window files: the CV needs relative precision ~1e-4, not 1e-16.
    out[VALUE_NORMS] = kv_values.norm(dim=-1).float()
    out["profile"] = alpha  # float64: the 4-segment fit amplifies float32 rounding
    return {k: v.detach().cpu() for k, v in out.items()}


def _no_baseline(alpha: Tensor, spec: WindowSpec) -> tuple[Tensor, Tensor, Tensor]:
    """NaN P, R, F ``[H, N]``: the baseline was not asked for (``draws == 0``)."""
    nan = torch.full((alpha.shape[0], len(spec.n)), float("nan"), dtype=torch.float64)
    return nan, nan.clone(), nan.clone()


def _random_over_rows(
    rows: Rows, values: Tensor, spec: WindowSpec, seed: int
) -> tuple[Tensor, Tensor, Tensor]:
    """All-query baseline: mean P, R, F of random subsets on rows that see > max(N) keys."""
    length = values.shape[-2]
    first = max(spec.n) + 1 if spec.causal else length - 1
    picked = torch.linspace(first, length - 1, steps=spec.random_rows).round().long().unique()
    raw = rows(picked.tolist())  # [H, rows, L]
    atol, alphas = row_sum_atol(raw.dtype), raw.double()
    # A causal row p sees keys 0..p; truncate each row to its visible keys, one row at a
    # time (at most random_rows rows: a short loop outside the per-head math).
    per_row = []
    for i, p in enumerate(picked.tolist()):
        keys = p + 1 if spec.causal else length
        rnd = random_separability(
            alphas[:, i, :keys],
            values[:, :keys],
            spec.n,
            draws=spec.draws,
            seed=seed,
            score_dtype=spec.score_dtype,
            atol=atol,
        )
        per_row.append(torch.stack([rnd.precision, rnd.recall, rnd.f1]))
    precision, recall, f1 = torch.stack(per_row).mean(0)
    return precision, recall, f1


def run_window(
    model: Any,
    tokens: Tensor,
    spec: WindowSpec,
    window: int,
    *,
    view: bool = False,
    layer_bar: float | None = None,
    final_rows: FinalRows | None = None,
) -> dict[str, Tensor]:
    """Run one ``[1, L]`` window and return ``[layer, ...]`` stacked per-layer metrics.

    ``model``: a TransformerLens model (the ``hooks`` backend: rows are slices of each
    layer's ``hook_pattern``) or a :class:`~tl_geom.lens.sdpa.FusedModel` (the ``sdpa``
    backend: only the rows asked for are recomputed from q and k); the switch is
    :func:`tl_geom.lens.rows.stream_rows`. Both give the same metrics
    (tests/test_fused.py). ``window`` seeds the random baseline.

    With ``view``, also ``view``: ``[layer, H, T, T]`` attention among the first T
    tokens (rows renormalised over those keys; for causal models they already sum to 1).
    ``layer_bar``: a tqdm bar over the window's layers that appears once the window has
    run that many seconds (0: at once; None: never), so only long windows show one.
    ``final_rows``: a dict that receives each layer's final-query rows and values
    (:func:`~tl_geom.jobs.head_rows.keep_final_row`; window 0 keeps them for the
    report's heads to look at).
    """
    per_layer: dict[int, dict[str, Tensor]] = {}
    bar = tqdm(
        total=len(spec.layers),
        desc=f"window {window}",
        unit="layer",
        leave=False,
        delay=layer_bar or 0.0,
        disable=layer_bar is None,
    )

    def reduce(layer: int, rows: LayerRows, v_kv: Tensor) -> None:
        res = reduce_layer(lambda idx: rows(idx)[0], v_kv, spec, spec.seed + 1009 * window + layer)
        if view:
            t = min(spec.view_tokens, v_kv.shape[1])
            seen = rows(range(t))[0, :, :, :t].float()
            res["view"] = (seen / seen.sum(-1, keepdim=True)).cpu()
        if final_rows is not None:
            keep_final_row(final_rows, layer, rows, v_kv)
        per_layer[layer] = res
        bar.update()

    with bar, torch.no_grad(), stream_rows(model, spec.layers, reduce):
        model(tokens.to(model_device(model)))
    keys = per_layer[spec.layers[0]].keys()
    out = {k: torch.stack([per_layer[layer][k] for layer in spec.layers]) for k in keys}
    release_freed_memory()
    return out


def release_freed_memory() -> None:
    """Hand the heap pages freed during a window back to the OS (glibc ``malloc_trim``).

    The per-layer reductions allocate and free many tensors of a few MiB, below glibc's
    (adaptive) mmap threshold, so freed pages stay in the heap: at L = 8192 the RSS crept
    from 0.5 to 2.0 GiB over 30 layers though little was live. ``malloc_trim(0)``
    releases them (Linux with glibc only; elsewhere a no-op). Memory, not results.
    """
    release_scratch()  # the metrics' kept buffers: reused within a window, not across
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # musl or another libc: nothing to trim
        return
