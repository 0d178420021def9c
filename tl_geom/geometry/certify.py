"""Certified counts: floating-point scores, exact decisions (spec: geometry.md, "Metrics").

P and R count keys on either side of two thresholds, ``min_I g`` and ``max_rest g``.
Computed scores ``g_hat`` carry rounding error; when two points coincide (equal weights
and equal value rows, as for a repeated token at layer 0), or nearly so, the rounding
decides the comparison and a count can be off by one. Here every comparison is either
certified by a rigorous bound on that error, or recounted exactly (``exact.py``):

    |g_hat_k - g_k| <= E  for every key of a row,   E = 8 gamma (2 A + W) W,
    W = max_k ||y_k||,  A = sum_k ||y_k||,  gamma = gamma_K(u_g) + gamma_M(u_s),

``gamma_K(u) = K u / (1 - K u)`` (Higham, "Accuracy and Stability of Numerical
Algorithms", 2nd ed., sec. 3.1), ``K = d + 8`` the terms of the score's dot product
in the score dtype and ``M = N + 8`` those of ``s`` in its own dtype. Derivation:
``y_hat = y (1 + delta)``; ``|s_hat - s| <= gamma_M A`` (componentwise sums of the
``|y_i|``, ``A >= sum_I ||y_i||``); the dot product and the bias round by at most
``gamma_K (2 ||s_hat|| ||y_k|| + ||y_k||^2)``; Cauchy-Schwarz and ``||s|| <= A`` give
the rest, and the factor 8 covers the second-order terms, the rounding of ``W``, ``A``
and ``E`` themselves, and the scaling by ``alpha_k`` in the ``a (2<s, v> - a ||v||^2)``
form. An absolute ``K * tiny`` covers underflow.

A row is certified when no key other than the threshold's own lies within ``2E`` of
either computed threshold: then ``#{rest : g >= min_I g}`` and ``#{I : g > max_rest g}``
are what the float scores say. Else the row is flagged and recounted exactly.
"""

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tl_geom.geometry.exact import exact_row_counts
from tl_geom.geometry.scratch import scratch

__all__ = [
    "Flagged",
    "certified_counts",
    "count_true",
    "count_where",
    "gamma_sum",
    "ieee_float32",
    "key_bounds",
    "mixed_bounds",
    "mixed_scores_fit",
    "recheck",
    "score_bound",
    "window_counts",
]


def gamma_sum(terms: int, dtype: torch.dtype) -> float:
    """``gamma_K = K u / (1 - K u)``: the relative error bound of a K-term sum (Higham)."""
    unit = torch.finfo(dtype).eps / 2
    return terms * unit / (1 - terms * unit)


def score_bound(
    w: Tensor,
    d: int,
    n_max: int,
    *,
    g_dtype: torch.dtype,
    s_dtype: torch.dtype,
    key_mask: Tensor | None = None,
) -> Tensor:
    """``E [...]``: a bound on ``|g_hat_k - g_k|`` over the keys of each row.

    Args:
        w: ``||y_k|| = alpha_k ||v_k||`` per key, ``[..., key]`` (any float dtype).
        d: the value dimension (terms of the dot product).
        n_max: the largest selection size (terms of ``s``).
        g_dtype: dtype the scores were accumulated in.
        s_dtype: dtype ``s`` was accumulated in (before any cast to ``g_dtype``).
        key_mask: keys present in each row (default all).
    """
    w = w.double()
    if key_mask is not None:
        w = torch.where(key_mask, w, 0.0)
    big_w = w.amax(-1)
    total = w.sum(-1) * (1 + 1e-12)  # rounding of the float64 sum itself (n L u << 1e-12)
    gamma = gamma_sum(d + 8, g_dtype) + gamma_sum(n_max + 8, s_dtype)
    tiny = (d + n_max + 16) * torch.finfo(g_dtype).tiny
    return 8 * gamma * (2 * total + big_w) * big_w + tiny


def key_bounds(
    d: int, n_max: int, *, g_dtype: torch.dtype, s_dtype: torch.dtype
) -> tuple[float, float]:
    """``(scale, tiny)`` of the per-key, per-selection bound of the scores' rounding.

        |g_hat_k - g_k| <= e_k = scale (2 A_J + w_k) w_k + tiny,   scale = 8 gamma,

    with ``w_k = ||y_k||`` and ``A_J = sum_J w_i`` over the selection J. The derivation
    of :func:`score_bound` kept per key and selection: every rounding term of ``g_k``
    carries a factor ``w_k`` (the dot product ``<s, y_k>``, the bias ``||y_k||^2``,
    the error of ``s`` seen through ``y_k``), the other factor at most ``2 A_J + w_k``
    (``||s_hat|| <= (1 + gamma) A_J``, ``|s_hat - s| <= gamma A_J``); the factor 8 also
    covers the rounding of ``A_J`` and of ``e_k`` itself. :func:`recheck` uses the same
    ``e_k``; :func:`score_bound` is its max over keys with ``A_J <= A``.
    """
    gamma = gamma_sum(d + 8, g_dtype) + gamma_sum(n_max + 8, s_dtype)
    return 8 * gamma, (d + n_max + 16) * torch.finfo(g_dtype).tiny


def mixed_bounds(
    d: int, n_max: int, score_dtype: torch.dtype, s_dtype: torch.dtype, a_max: float
) -> tuple[float, float, float]:
    """``(scale, tiny, extra)`` of the per-key bound of float32 scores from float64 ``s``.

    Only the scores are rounded to ``score_dtype`` (float32); ``s``, ``y`` and
    ``||y||^2`` are formed in ``s_dtype`` (float64):

        |g_hat_k - g_k| <= e_k = scale (2 (||s_hat|| + extra A_J) + w_k) w_k + tiny,
        scale = 2 gamma_{d+4}(u),   extra = gamma_{M+8}(u_s) / gamma_{d+4}(u),

    ``u`` the unit roundoff of ``score_dtype``, ``u_s`` that of ``s_dtype``, ``M = n_max``.
    Derivation (Higham, sec. 3.1, any summation order; FMA only helps): with ``z =
    fl(2 s_hat)``, ``y' = fl(y_hat)`` and ``b' = fl(-||y_hat||^2)`` rounded to
    ``score_dtype``, the score is ``g_hat = fl(<z, y'> + b')`` (``d + 1`` terms), so

        |g_hat - g| <= gamma_{d+1}(u) (sum |z_j y'_j| + |b'|) + |<z, y'> - 2 <s, y>|
                       + |b' + ||y||^2|
                    <= gamma_{d+4}(u) (2 ||s_hat|| w + w^2) + 2 gamma_{M+1}(u_s) A_J w

    (``sum |z_j y'_j| <= (1 + 3u) 2 ||s_hat|| w`` by Cauchy-Schwarz; the casts add at most
    ``2.02 u`` of it and ``u w^2``; ``||s_hat - s|| <= gamma_{M+1}(u_s) A_J``). The factor
    2 in ``scale`` covers what the computed bound itself rounds: ``||s_hat||``, ``w_k``
    and ``e_k`` in ``s_dtype``, ``e_k`` cast to ``score_dtype`` and the interval ends
    ``g_hat +- e`` rounded there (at most ``u (|g_hat| + e) < e / 100``, as
    ``|g_hat| <= (1 + u) (2 ||s_hat|| w + w^2)``). ``tiny`` covers underflow: at most
    one subnormal spacing per product and per cast, ``y'``'s seen through
    ``||z||_1 <= 2 sqrt(d) a_max``, with ``a_max >= A_J`` for every selection (the
    largest ``sum_k ||y_k||`` of a row). The caller checks that nothing overflows
    (:func:`mixed_scores_fit`) before taking this path.

    Against :func:`key_bounds` in float32 (``s`` in float32 too) the bound is about 40x
    tighter at d = 64, N = 512: ``s``'s own rounding, ``gamma_{N+8}``, dominated there.
    """
    scale = 2 * gamma_sum(d + 4, score_dtype)
    extra = gamma_sum(n_max + 8, s_dtype) / gamma_sum(d + 4, score_dtype)
    tiny = (d + n_max + 16) * torch.finfo(score_dtype).tiny * (1 + 2 * d**0.5 * a_max)
    return scale, tiny, extra


def mixed_scores_fit(w: Tensor, score_dtype: torch.dtype) -> float | None:
    """``a_max`` for :func:`mixed_bounds`, or ``None`` where float32 scores could overflow.

    ``a_max`` is the largest row sum of ``w [..., key]`` (``||y_k||``). Every score and
    every bound fits ``score_dtype`` with room when ``(2 A + W) W`` is below its max over
    2**20; else ``None`` (keep the scores in ``s_dtype``).
    """
    a_max = float(w.sum(-1).max()) if w.numel() else 0.0
    big_w = float(w.max()) if w.numel() else 0.0
    fits = (2 * a_max + big_w) * big_w < torch.finfo(score_dtype).max / 2**20
    return a_max if fits and math.isfinite(a_max) else None


_ieee_lock = threading.Lock()
_ieee_state: dict[str, Any] = {"inside": 0, "before": None}


@contextmanager
def ieee_float32() -> Iterator[None]:
    """float32 matmuls in IEEE float32 within the block, as the bounds here assume.

    ``torch.set_float32_matmul_precision("high")`` (or ``allow_tf32``) lets cuBLAS use
    TF32 and oneDNN bfloat16 for float32 matmuls: 10 or 8 bits of mantissa, not 24, which
    no float32 bound covers. The setting is process-wide, so blocks in several threads
    share one: the first to enter saves the user's setting, the last to leave restores
    it, and none leaves it lowered while another is still inside.
    """
    with _ieee_lock:
        if _ieee_state["inside"] == 0:
            _ieee_state["before"] = torch.get_float32_matmul_precision()
            torch.set_float32_matmul_precision("highest")
        _ieee_state["inside"] += 1
    try:
        yield
    finally:
        with _ieee_lock:
            _ieee_state["inside"] -= 1
            if _ieee_state["inside"] == 0:
                torch.set_float32_matmul_precision(_ieee_state["before"])


MASKED_SLOT = "certified_masked"
"""The scratch slot of ``g`` masked to one set (:func:`certified_counts`)."""

WORK_SLOT = "selection_work"
"""A scratch slot for one short-lived ``[..., N, L]`` temporary at a time: the weighted
selection before its matmul, then ``g`` on the selection (+inf elsewhere) for the
threshold search and the counts over the selection. Sharing it keeps an all-query
chunk's kept memory at four such buffers (``g``, this, :data:`MASKED_SLOT` and the
selection's 0/1 floats, which become the comparisons' output)."""

ON_SELECTED_SLOT = "certified_on_selected"
"""The scratch slot of ``g`` on the selection and +inf elsewhere (:func:`certified_counts`)."""


def count_true(mask: Tensor) -> Tensor:
    """``#True`` along the last dim, as int64.

    Summed as int32: a bool ``sum`` first copies the mask to int64 (measured 0.61 against
    0.10 ms for ``[6, 16, 10, 1024]``).
    """
    return mask.sum(-1, dtype=torch.int32).long()


def count_where(op: Callable[..., Tensor], x: Tensor, threshold: Tensor, out: Tensor) -> Tensor:
    """``#{k : op(x_k, threshold)}`` along the last dim, as int64.

    The comparison is written as 0/1 into the float buffer ``out`` (shaped like ``x``)
    and summed as floats (exact: a count is below 2**24, float32's limit): a third of the
    time of a fresh bool mask and its integer sum (the mask is first copied to int64).
    """
    return op(x, threshold, out=out).sum(-1).long()


def certified_counts(
    g: Tensor,
    bound: Tensor,
    selected: Tensor,
    t_min: Tensor,
    t_max: Tensor,
    rest: Tensor,
    g_rest: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(#FP, #TP, flagged)`` from scores ``g [..., key]`` and the computed thresholds.

    ``t_min = min_I g_hat``, ``t_max = max_rest g_hat`` (``[...]``), ``bound [...]``
    broadcastable to them, the counts over the ``selected`` and ``rest`` masks.
    ``flagged`` rows hold a key within ``2E`` of a threshold: recount them exactly.
    ``g_rest``: ``g`` on ``rest`` and -inf elsewhere, where the caller has formed it
    (skips one pass). The mask form of :func:`window_counts`, which the top-N and
    all-query selections call with the sets as penalties (``top_n.separate``).
    """
    shape = tuple(g.shape)
    inf = torch.tensor(torch.inf, dtype=g.dtype, device=g.device)
    if g_rest is None:
        g_rest = torch.where(rest, g, -inf, out=scratch(MASKED_SLOT, shape, g.dtype, g.device))
    on_sel = torch.where(selected, g, inf, out=scratch(ON_SELECTED_SLOT, shape, g.dtype, g.device))
    n_off = g.shape[-1] - count_true(selected)
    hits = scratch(WORK_SLOT, shape, g.dtype, g.device)
    return window_counts(g_rest, on_sel, n_off, bound, t_min, t_max, hits)


def window_counts(
    g_rest: Tensor,
    on_sel: Tensor,
    n_off: Tensor,
    bound: Tensor,
    t_min: Tensor,
    t_max: Tensor,
    hits: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(#FP, #TP, flagged)`` from the scores on each set, as :func:`certified_counts`.

    ``g_rest [..., key]`` is ``g`` on the rest and -inf elsewhere; ``on_sel`` is ``g`` on
    the selection and +inf elsewhere (the buffer the minimum over the selection was
    taken from); ``n_off [...]`` counts the +inf entries, subtracted from the counts over
    ``on_sel``. ``hits`` is a float buffer shaped like ``g_rest`` for the comparisons.
    Counts are float sums of 0/1 (exact) in kept buffers: a third of the time of bool
    masks, ``logical_and`` and an integer sum. Thresholds are clamped to at least -max (a
    set is never empty of finite keys, but the rest of a row with N >= visible is): -inf
    off the rest then never counts, and +inf off the selection always does.
    """
    e2 = (2 * bound).to(g_rest.dtype)
    lo_min, hi_min = (t_min - e2).unsqueeze(-1), (t_min + e2).unsqueeze(-1)
    lo_max, hi_max = (t_max - e2).unsqueeze(-1), (t_max + e2).unsqueeze(-1)
    lowest = torch.finfo(g_rest.dtype).min

    def count(op: Callable[..., Tensor], x: Tensor, threshold: Tensor) -> Tensor:
        return count_where(op, x, threshold.clamp_min(lowest), hits)

    false_pos = count(torch.ge, g_rest, lo_min)
    flagged = count(torch.gt, g_rest, hi_min) != false_pos
    true_pos = count(torch.gt, on_sel, hi_max) - n_off
    flagged |= count(torch.ge, on_sel, lo_max) - n_off != true_pos
    return false_pos, true_pos, flagged


@dataclass(frozen=True)
class Flagged:
    """The rows a first, uniform-bound pass left undecided, gathered for the recheck.

    Attributes:
        a: ``[F, L]`` weights of each row as given (float64 is exact for them).
        v: ``[B, L, d]`` values; row ``f`` uses ``v[value_row[f]]``.
        value_row: ``[F]`` index into ``v``.
        selected: ``[F, L]`` selection masks.
        present: ``[F, L]`` keys present in each row (all, but causal future keys).
    """

    a: Tensor
    v: Tensor
    value_row: Tensor
    selected: Tensor
    present: Tensor


def recheck(
    rows: Flagged, n_max: int, g64: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Exact ``(#FP, #TP, far, near)`` ``[F]`` of the flagged rows.

    Scores again in float64 (one small matmul per distinct value row; or ``g64 [F, L]``,
    the scores already computed in float64 by the same formula), now with a bound
    per key, ``e_k = 8 gamma (2 A_I + ||y_k||) ||y_k||`` with ``A_I = sum_I ||y_i||``:
    small keys get small bounds, which a uniform bound cannot give. A comparison still
    inside both bounds (coincident points) is decided in exact arithmetic
    (:func:`tl_geom.geometry.exact.exact_row_counts`).
    """
    a = rows.a.double()
    v = rows.v.double()
    w = a * v.square().sum(-1).sqrt()[rows.value_row]
    if g64 is not None:
        g = g64
    else:
        g = torch.empty_like(a)
        for b in rows.value_row.unique().tolist():
            pick = rows.value_row == b
            ab, vb = a[pick], v[b]
            s = (ab * rows.selected[pick]) @ vb
            g[pick] = ab * (2.0 * s @ vb.T - ab * (vb * vb).sum(-1))
    w = torch.where(rows.present, w, 0.0)
    a_sel = (w * rows.selected).sum(-1, keepdim=True) * (1 + 1e-12)
    gamma = gamma_sum(v.shape[-1] + 8, torch.float64) + gamma_sum(n_max + 8, torch.float64)
    tiny = (v.shape[-1] + n_max + 16) * torch.finfo(torch.float64).tiny
    e = 8 * gamma * (2 * a_sel + w) * w + tiny
    sel, rest = rows.selected, rows.present & ~rows.selected
    lo, hi = g - e, g + e
    inf = torch.tensor(float("inf"), dtype=g.dtype, device=g.device)
    t_min_lo = torch.where(sel, lo, inf).amin(-1, keepdim=True)
    t_min_hi = torch.where(sel, hi, inf).amin(-1, keepdim=True)
    t_max_lo = torch.where(rest, lo, -inf).amax(-1, keepdim=True)
    t_max_hi = torch.where(rest, hi, -inf).amax(-1, keepdim=True)
    false_pos = count_true(rest & (lo >= t_min_hi))
    true_pos = count_true(sel & (lo > t_max_hi))
    still = count_true(rest & (hi >= t_min_lo)) != false_pos
    still |= count_true(sel & (hi > t_max_lo)) != true_pos
    far = torch.where(sel, g, inf).argmin(-1)
    near = torch.where(rest, g, -inf).argmax(-1)
    for f in torch.nonzero(still).flatten().tolist():
        b = int(rows.value_row[f])
        fp, tp, i, j = exact_row_counts(a[f], v[b], sel[f], rows.present[f], g[f], e[f])
        false_pos[f], true_pos[f] = fp, tp
        far[f] = i if i >= 0 else far[f]
        near[f] = j if j >= 0 else near[f]
    return false_pos, true_pos, far, near
