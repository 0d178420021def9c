"""Value-space separability of the top-N keys (spec: geometry.md, "Objects" and "Metrics").

One head, one query: weights ``alpha_i`` over keys ``i = 0..L-1`` and value vectors
``v_i``. With ``y_i = alpha_i v_i``, the top-N set ``I_N`` and ``s_N = sum_{I_N} y_i``,

    D_i = ||y_i - s_N||,   r_max = max_{i in I_N} D_i,   r_min = min_{j not in I_N} D_j
    P_N = N / (N + #{j not in I_N : D_j <= r_max})      (closed ball)
    R_N = #{i in I_N : D_i < r_min} / N                  (open ball)
    F_N = 2 P R / (P + R)

Every comparison is made in the ``g`` form ``D_k^2 = ||s||^2 - g_k`` with
``g_k = 2 <s, y_k> - ||y_k||^2``: ranking by ``g`` (descending) is ranking by distance
(ascending), and ``g`` carries no ``||s||^2 - ...`` cancellation. It is accumulated in
float64 by default: with small weights the distances of real heads differ in their
eighth digit, where float32 gives wrong counts. The radii ``r_max``, ``r_min`` are then
measured directly at the two extreme points, so they carry no cancellation either.

Everything is batched over any leading dims (batch, layer, head, query), flattened
with ``einops.pack``; there is no Python loop over heads or N values.

Here: :func:`separability` (top-N, one row per leading index) and the shared machinery.
The random-subset baseline is in ``baseline.py``, every query row of a pattern at once
in ``all_queries.py``; all three share :func:`selection_metrics`.
"""

import html
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

import einops
import pandas as pd  # pyright: ignore[reportMissingTypeStubs]
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tl_geom._checks import ROW_SUM_ATOL, check_n, check_values, check_weights
from tl_geom._shapes import unpack_n
from tl_geom.geometry import kernels
from tl_geom.geometry.certify import (
    MASKED_SLOT,
    WORK_SLOT,
    Flagged,
    count_where,
    recheck,
    score_bound,
    window_counts,
)
from tl_geom.geometry.frames import mean_table_html, tidy_frame
from tl_geom.geometry.scratch import scratch

__all__ = [
    "Separability",
    "g_scores",
    "separability",
    "separation_counts",
    "top_n_rank",
]


SEL_SLOT = "selection_f"
"""The kept buffer of a selection's 0/1 floats; :func:`separate` turns it into the
penalties and then the comparisons' output."""


@dataclass(frozen=True)
class Separability:
    """Separability metrics for top-N (or random-N) selections.

    Shapes: ``[...]`` when ``n`` was an int, ``[..., len(n)]`` when it was a list;
    ``selected`` adds the key dim and ``s`` the value dim after that.

    Attributes:
        n: the N values, in the order of the trailing dim (a 1-tuple for an int n).
        precision: ``P_N``.
        recall: ``R_N``.
        f1: ``F_N = 2PR/(P+R)``.
        r_max: largest distance of a selected point to ``s_N``.
        r_min: smallest distance of a non-selected point to ``s_N``.
        margin: ``Delta_N = alpha_(N) - alpha_(N+1)`` (weights sorted descending).
        selected: the boolean selection mask ``I_N`` over keys.
        s: the representative vector ``s_N``.
        scalar_n: True when ``n`` was given as an int (no trailing N dim).
        dims: names of the leading dims, where known (``AttentionCapture.separability``).
        coords: ids along each leading dim (real layer / head / query ids), where known.
    """

    n: tuple[int, ...]
    precision: Tensor
    recall: Tensor
    f1: Tensor
    r_max: Tensor
    r_min: Tensor
    margin: Tensor
    selected: Tensor
    s: Tensor
    scalar_n: bool = False
    dims: tuple[str, ...] | None = None
    coords: tuple[tuple[int, ...], ...] | None = None

    def __repr__(self) -> str:
        lead = tuple(self.f1.shape if self.scalar_n else self.f1.shape[:-1])
        named = dict(zip(self.dims, lead, strict=True)) if self.dims else lead
        mean = self.f1.double().nanmean(dim=tuple(range(len(lead)))) if lead else self.f1
        f1 = ", ".join(f"{float(x):.3g}" for x in mean.reshape(-1))
        return f"Separability(n={list(self.n)}, lead={named}, mean f1=[{f1}])"

    def _repr_html_(self) -> str:
        return f"<p><code>{html.escape(repr(self))}</code></p>" + mean_table_html(self.to_frame())

    @property
    def perfect(self) -> Tensor:
        """Exact criterion of perfect separation, ``r_min > r_max`` (P = R = 1)."""
        return (self.precision == 1) & (self.recall == 1)

    def to_frame(self, dims: Sequence[str] | None = None) -> pd.DataFrame:
        """Tidy table: one row per leading index and N.

        Args:
            dims: names for the leading dims (default: ``self.dims``, else
                ``dim0, dim1, ...``); the ids are ``self.coords`` (real layer, head and
                query ids of a capture) where known, else ``0..size-1``.

        Returns:
            Columns ``*dims, n, precision, recall, f1, r_max, r_min, margin``.
        """
        metrics = {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "r_max": self.r_max,
            "r_min": self.r_min,
            "margin": self.margin,
        }
        names = dims if dims is not None else self.dims
        return tidy_frame(metrics, self.n, self.scalar_n, names, self.coords)


def top_n_rank(alpha: Float[Tensor, "*lead key"]) -> Int[Tensor, "*lead key"]:
    """Rank of each key in descending weight order; ties go to the earlier position.

    ``rank_i < N`` is membership of ``I_N``. A stable descending sort keeps equal
    weights in position order, so the earlier of two tied keys ranks first [ours].

    >>> top_n_rank(torch.tensor([0.1, 0.4, 0.1, 0.4])).tolist()
    [2, 0, 3, 1]
    """
    return sorted_rank(alpha)[1]


def sorted_rank(alpha: Float[Tensor, "*lead key"]) -> tuple[Tensor, Tensor]:
    """Weights sorted descending (stable: ties keep position order) and each key's rank.

    float64 on the CPU with numba: a radix sort (:func:`tl_geom.geometry.kernels.sorted_rank`),
    the same tensors bit for bit.
    """
    if kernels.enabled(alpha):
        got = kernels.sorted_rank(alpha)
        if got is not None:
            return got
    a_sorted, order = torch.sort(alpha, dim=-1, descending=True, stable=True)
    ranks = torch.arange(alpha.shape[-1], device=alpha.device).expand_as(order)
    return a_sorted, torch.empty_like(order).scatter_(-1, order, ranks)


def g_scores(
    s: Float[Tensor, "*lead nn d"],
    y: Float[Tensor, "*lead key d"],
) -> Float[Tensor, "*lead nn key"]:
    """``g_k = 2 <s, y_k> - ||y_k||^2``, so that ``||y_k - s||^2 = ||s||^2 - g_k``.

    Larger ``g`` means closer to ``s``. One batched matmul for every N at once.
    """
    sy = torch.einsum("...nd,...kd->...nk", s, y)
    return 2.0 * sy - (y * y).sum(-1).unsqueeze(-2)


def separation_counts(
    g: Float[Tensor, "*lead nn key"],
    selected: Bool[Tensor, "*lead nn key"],
    n: Int[Tensor, " nn"],
    key_mask: Bool[Tensor, "*lead key"] | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """P, R, F and the two ``g`` thresholds from ``g`` scores and a selection mask.

    ``D_j <= r_max``  iff  ``g_j >= min_{i in I} g_i``;  ``D_i < r_min``  iff
    ``g_i > max_{j not in I} g_j``. Keys outside ``key_mask`` (absent for this row,
    e.g. in the causal future of the query) belong to neither set.

    Returns:
        ``(precision, recall, f1, g_min_selected, g_max_rest)``, each ``[*lead, nn]``.
    """
    present = key_mask.unsqueeze(-2) if key_mask is not None else None
    counts = separate(g, selected.to(g.dtype), present, None)
    false_pos, true_pos, g_min_sel, g_max_rest = counts[:4]
    return (*scores_from_counts(false_pos, true_pos, n, g.dtype), g_min_sel, g_max_rest)


def separate(
    g: Float[Tensor, "*lead nn key"],
    sel: Float[Tensor, "*lead nn key"],
    present: Bool[Tensor, "*lead 1 key"] | None,
    bound: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(#FP, #TP, min_I g, max_rest g, far, near, flagged)`` of 0/1 float selections.

    ``sel`` is in ``g``'s dtype; ``far``, ``near`` are the keys attaining the thresholds
    (the first on ties, as torch's ``min``/``max`` take it). With ``bound`` (``E [*lead,
    nn]`` or broadcastable, see ``certify.py``) the counts are certified and ``flagged``
    marks the rows to recount exactly; without, it is all False and the counts are what
    the float scores say.

    The sets become penalties, ``-inf`` on I and ``+inf`` off it (formed in place in
    ``sel``, whose buffer then takes the comparisons): ``max(g, pen)`` is ``g`` on I and
    ``+inf`` off it, ``min(g, pen)`` is ``g`` on the rest and ``-inf`` on I (absent keys
    get ``-inf`` from ``present``'s own penalty). The same buffers, bit for bit, as
    ``where(selected, g, inf)`` and ``where(rest, g, -inf)``, at a fifth to a third of
    the time of a select on a bool mask (1.0-1.8 against 5 ms for ``[9, 64, 10, 544]``).
    ``g`` on I and ``g`` on the rest are kept buffers (``WORK_SLOT``, ``MASKED_SLOT``).
    :func:`tl_geom.geometry.kernels.selection_counts` is the same, bit for bit, in a
    fused loop (both take the first key on ties).
    """
    shape = tuple(g.shape)
    inf = float("inf")
    n_off = (g.shape[-1] - sel.sum(-1)).long()  # +inf entries of on_sel (exact 0/1 sum)
    pen = torch.sub(0.5, sel, out=sel).mul_(inf)
    on_sel = torch.maximum(g, pen, out=scratch(WORK_SLOT, shape, g.dtype, g.device))
    g_min_sel, far = on_sel.min(-1)
    if present is not None:  # absent keys are in neither set
        pen = torch.minimum(pen, torch.where(present, inf, -inf).to(g.dtype), out=pen)
    g_rest = torch.minimum(g, pen, out=scratch(MASKED_SLOT, shape, g.dtype, g.device))
    g_max_rest, near = g_rest.max(-1)
    hits = pen  # no longer read
    if bound is None:
        false_pos = count_where(torch.ge, g_rest, g_min_sel.unsqueeze(-1), hits)
        true_pos = count_where(torch.gt, on_sel, g_max_rest.unsqueeze(-1), hits) - n_off
        flagged = torch.zeros_like(false_pos, dtype=torch.bool)
    else:
        false_pos, true_pos, flagged = window_counts(
            g_rest, on_sel, n_off, bound, g_min_sel, g_max_rest, hits
        )
    return false_pos, true_pos, g_min_sel, g_max_rest, far, near, flagged


def scores_from_counts(
    false_pos: Tensor, true_pos: Tensor, n: Tensor, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor]:
    """``P = N / (N + #FP)``, ``R = #TP / N``, ``F = 2PR / (P + R)`` in ``dtype``."""
    nf = n.to(dtype)
    precision = nf / (nf + false_pos.to(dtype))
    recall = true_pos.to(dtype) / nf
    f1 = 2 * precision * recall / (precision + recall)
    return precision, recall, f1


def flat_values(values: Tensor, dtype: torch.dtype) -> Tensor:
    """``[..., key, d] -> [rows, key, d]`` as a view where possible (pack would copy)."""
    return einops.rearrange(values.to(dtype), "... key d -> (...) key d")


def selection_metrics(
    a: Float[Tensor, "b c key"],
    v: Float[Tensor, "b key d"],
    rank: Int[Tensor, "b c key"],
    n: Int[Tensor, " m"],
    key_mask: Bool[Tensor, "b c key"] | None = None,
    *,
    exact_inputs: tuple[Tensor, Tensor] | None = None,
    prefix: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """P, R, F, r_max, r_min and s of selections over ``c`` weight rows sharing values.

    The selections are the top N, ``rank < N`` (``rank``: each key's rank in its row,
    :func:`sorted_rank`).

    s = (a * sel) @ V,  g_k = 2 a_k <s, v_k> - a_k^2 ||v_k||^2  (= 2<s, y_k> - ||y_k||^2)
    Two batched matmuls; V is never expanded per row or selection. The counts are
    certified (``certify.py``): a row with a comparison inside the rounding bound is
    recounted in exact arithmetic from ``exact_inputs`` (``a``, ``v`` as float64 by
    default), so P and R are those of exact arithmetic on the inputs. The radii are
    measured at the extreme points, ``r_max = ||y_i - s||`` with ``i = argmin_I g`` and
    ``r_min = ||y_j - s||`` with ``j = argmax_rest g``, so they carry no ``||s||^2 - g``
    cancellation.

    ``prefix``: s as running sums over each row's keys in rank order
    (the sets are nested; :func:`tl_geom.geometry.kernels.prefix_sums`, where numba
    runs), not the masked matmul: the same counts (the bound covers any order of the
    sum), ``r_max`` and ``r_min`` within rounding of the matmul's. The all-query maps
    take it (there the matmul was the largest cost); the final query keeps the matmul,
    so the default tables stay as they were, bit for bit.

    Returns:
        ``(precision, recall, f1, r_max, r_min)`` each ``[b, c, m]``, and s ``[b, c, m, d]``.
    """
    a_m = a.unsqueeze(-2)
    shape = (*a.shape[:-1], n.shape[0], a.shape[-1])  # [b, c, m, key]
    # The selection as 0/1 floats, straight from the ranks (a bool mask times the weights
    # took 5 ms for [9, 64, 10, 544], this comparison and a float product 2 ms).
    # (ranks as floats, exact below 2**53: an int64 comparison into a float buffer took
    # 2.6 ms per all-query chunk, a float one 0.5 ms)
    rank_f = rank.to(a.dtype)

    def selection() -> Tensor:  # 1 on the top N, else 0
        sel = scratch(SEL_SLOT, shape, a.dtype, a.device)
        return torch.lt(rank_f.unsqueeze(-2), n.to(a.dtype).view(-1, 1), out=sel)

    # numba's loops on the CPU where installed: with ``prefix``, s as running sums; else
    # the weights in one pass (the same operations, so the same bits as the torch pass);
    # then g finished and counted in one more
    loops = kernels.enabled(a)
    s = kernels.prefix_sums(a, rank_f, n, v) if loops and prefix else None
    sel = None
    if s is None:
        masked = scratch(WORK_SLOT, shape, a.dtype, a.device)
        loops = loops and kernels.masked_weights(a, rank_f, n, masked)
        if not loops:
            sel = selection()
            masked = torch.mul(sel, a_m, out=masked)
        s = torch.einsum("bcmk,bkd->bcmd", masked, v)
    # g = a * (2 <s, v> - a ||v||^2), in place on the matmul's output: <2s, v> is 2<s, v>
    # bit for bit (scaling by 2 is exact), so this rounds exactly as the formula reads.
    g = scratch("g_selection", shape, a.dtype, a.device)
    torch.bmm(
        einops.rearrange(2.0 * s, "b c m d -> b (c m) d"),
        einops.rearrange(v, "b key d -> b d key"),
        out=einops.rearrange(g, "b c m key -> b (c m) key"),
    )
    # ||v_k||^2 once, through a kept buffer (fresh [b, key, d] temporaries fault in)
    v_sq = torch.mul(v, v, out=scratch(WORK_SLOT, tuple(v.shape), v.dtype, v.device)).sum(-1)
    w = a * v_sq.sqrt().unsqueeze(1)
    bound = score_bound(
        w, v.shape[-1], int(n.max()), g_dtype=g.dtype, s_dtype=g.dtype, key_mask=key_mask
    ).unsqueeze(-1)
    counts = None
    if loops:
        counts = kernels.selection_counts(g, rank_f, n, key_mask, bound, finish=(a, v_sq))
    if counts is None:
        g.sub_(a_m * v_sq[:, None, None, :]).mul_(a_m)
        if sel is None:  # the weights came from the loop, the counts could not
            sel = selection()
        present_keys = key_mask.unsqueeze(-2) if key_mask is not None else None
        counts = separate(g, sel, present_keys, bound)
    false_pos, true_pos, _, _, far, near, flagged = counts
    if bool(flagged.any()):
        a64, v64 = exact_inputs if exact_inputs is not None else (a, v)
        idx = torch.nonzero(flagged)  # [F, 3]: (b, c, m)
        present = key_mask[idx[:, 0], idx[:, 1]] if key_mask is not None else None
        rows = Flagged(
            a=a64[idx[:, 0], idx[:, 1]],
            v=v64,
            value_row=idx[:, 0],
            selected=rank[idx[:, 0], idx[:, 1]] < n[idx[:, 2]].unsqueeze(-1),
            present=present
            if present is not None
            else torch.ones_like(flagged[0, 0, 0]).expand(len(idx), a.shape[-1]),
        )
        g64 = g[flagged] if exact_inputs is None and g.dtype == torch.float64 else None
        exact = recheck(rows, int(n.max()), g64)
        for out, val in zip((false_pos, true_pos, far, near), exact, strict=True):
            out[flagged] = val.to(out.dtype)
    precision, recall, f1 = scores_from_counts(false_pos, true_pos, n, g.dtype)
    heads = torch.arange(a.shape[0], device=a.device).view(-1, 1, 1)

    def distance(idx: Tensor) -> Tensor:
        y = a.gather(-1, idx).unsqueeze(-1) * v[heads, idx]
        return ((y - s) ** 2).sum(-1).sqrt()

    r_max, r_min = distance(far), distance(near)
    return precision, recall, f1, r_max, r_min, s


def separability(
    alpha: Float[Tensor, "*lead key"],
    values: Float[Tensor, "*lead key d"],
    n: int | Sequence[int],
    *,
    dtype: torch.dtype = torch.float64,
    atol: float = ROW_SUM_ATOL,
    prefix: bool = False,
) -> Separability:
    """Value-space precision, recall and F-score of the top-N keys.

    y_i = alpha_i v_i,  s_N = sum_{i in I_N} y_i,  D_i = ||y_i - s_N||
    P_N = N / (N + #{j not in I_N : D_j <= r_max}),  R_N = #{i in I_N : D_i < r_min} / N
    Ranked by g_k = 2<s_N, y_k> - ||y_k||^2 in float64. Ties: earlier position [ours].
    Spec: geometry.md, "Metrics".

    Cost per row: one sort and two ``[len(n), L] x [L, d]`` matmuls.

    Args:
        alpha: attention weights of each row (``hook_pattern`` rows), ``[..., L]``.
        values: value vectors ``[..., L, d]`` (the head's KV group for GQA).
        n: one N or a list of N values, each ``1 <= N < L``.
        dtype: accumulation dtype; float64 by default, float32 to trade exactness
            for speed (counts can then be wrong on near-ties).
        atol: tolerance on ``|sum(alpha) - 1|`` per row.
        prefix: form ``s_N`` as running sums in rank order where numba runs (the sets
            are nested: ``max(n) d`` products per row instead of ``len(n) L d``). The
            same P, R, F (the counts are certified for any order of the sums); ``s``,
            ``r_max`` and ``r_min`` within rounding of the default masked matmul's, so
            off by default: the analyze tables stay bit for bit. The envelope's
            simulations take it (they report counts only).

    Returns:
        A :class:`Separability`; metrics are ``[...]`` for an int ``n`` and
        ``[..., len(n)]`` for a list.

    Raises:
        TlGeomError: N out of range, shapes that disagree, negative weights, rows
            not summing to 1, NaN/inf.

    >>> alpha = torch.tensor([0.5, 0.3, 0.1, 0.1])
    >>> values = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    >>> res = separability(alpha, values, [1, 2])
    >>> res.precision.tolist(), res.recall.tolist()
    ([1.0, 0.6666666666666666], [1.0, 0.5])
    """
    check_weights(alpha, atol=atol)
    check_values(alpha, values)
    length = alpha.shape[-1]
    ns = check_n(n, length)
    scalar = isinstance(n, Integral)

    a, packed = einops.pack([alpha.to(dtype)], "* key")
    v = flat_values(values, dtype)
    n_t = torch.tensor(ns, device=a.device)

    a_sorted, rank = sorted_rank(a)
    selected = rank.unsqueeze(1) < n_t.view(1, -1, 1)
    exact = None
    if dtype != torch.float64:  # exact decisions are on the inputs as given, in float64
        exact = (
            einops.pack([alpha.double()], "* key")[0].unsqueeze(1),
            flat_values(values, torch.float64),
        )
    metrics = selection_metrics(
        a.unsqueeze(1), v, rank.unsqueeze(1), n_t, exact_inputs=exact, prefix=prefix
    )
    precision, recall, f1, r_max, r_min, s = (x.squeeze(1) for x in metrics)
    margin = a_sorted[:, n_t - 1] - a_sorted[:, n_t]

    def out_n(x: Tensor) -> Tensor:
        return unpack_n(x, packed, scalar)

    def out_vec(x: Tensor, tail: str) -> Tensor:
        return unpack_n(x, packed, scalar, tail)

    return Separability(
        n=ns,
        precision=out_n(precision),
        recall=out_n(recall),
        f1=out_n(f1),
        r_max=out_n(r_max),
        r_min=out_n(r_min),
        margin=out_n(margin),
        selected=out_vec(selected, "key"),
        s=out_vec(s, "d"),
        scalar_n=scalar,
    )
