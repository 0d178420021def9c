"""Top-N separability of every query row of an attention pattern at once.

Spec: geometry.md, "Metrics": for all query positions, ``<v_i, s_q>`` is one ``L x L``
matmul per head and N, the cost class of attention itself. Causal patterns exclude each
row's future keys.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Integral

import einops
import pandas as pd  # pyright: ignore[reportMissingTypeStubs]
import torch
from jaxtyping import Float
from torch import Tensor

from tl_geom._checks import ROW_SUM_ATOL, check_count, check_finite, check_n, check_weights
from tl_geom.errors import TlGeomError
from tl_geom.geometry.top_n import (
    flat_values,
    selection_metrics,
    sorted_rank,
    tidy_frame,
)

__all__ = [
    "QuerySeparability",
    "separability_all_queries",
    "separability_all_queries_streamed",
]


@dataclass(frozen=True)
class QuerySeparability:
    """Top-N separability of every query row of a pattern (see :func:`separability_all_queries`).

    Shapes: ``[..., query]`` for an int ``n``, ``[..., query, len(n)]`` for a list. Rows
    where ``N >= visible`` (a causal query that sees N keys or fewer) are NaN. There is
    no ``selected``/``s``: for all queries they would cost ``O(Q L len(n))`` per head;
    recompute one row with :func:`separability` on its visible keys when needed.

    Attributes:
        n: the N values, in the order of the trailing dim (a 1-tuple for an int n).
        precision: ``P_N``.
        recall: ``R_N``.
        f1: ``F_N = 2PR/(P+R)``.
        r_max: largest distance of a selected point to ``s_N``.
        r_min: smallest distance of a visible non-selected point to ``s_N``.
        margin: ``Delta_N = alpha_(N) - alpha_(N+1)`` over the visible keys.
        visible: ``[query]`` number of keys each query row sees (``L`` when not causal).
        causal: whether the future keys of each row were excluded.
        scalar_n: True when ``n`` was given as an int (no trailing N dim).
    """

    n: tuple[int, ...]
    precision: Tensor
    recall: Tensor
    f1: Tensor
    r_max: Tensor
    r_min: Tensor
    margin: Tensor
    visible: Tensor
    causal: bool
    scalar_n: bool = False

    @property
    def perfect(self) -> Tensor:
        """Exact criterion of perfect separation, ``r_min > r_max`` (False on NaN rows)."""
        return (self.precision == 1) & (self.recall == 1)

    def to_frame(self, dims: Sequence[str] | None = None) -> pd.DataFrame:
        """Tidy table: one row per leading index, query and N.

        Args:
            dims: names for the leading dims including the query dim
                (default ``dim0, dim1, ...``).

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
        return tidy_frame(metrics, self.n, self.scalar_n, dims)


def _check_pattern(pattern: Tensor, values: Tensor) -> None:
    """Shapes for all-query input: pattern ``[..., Q, L]``, values ``[..., L, d]``, Q <= L."""
    if pattern.ndim < 2:
        raise TlGeomError(f"pattern must be [..., query, key], got shape {tuple(pattern.shape)}")
    lead, (q, length) = pattern.shape[:-2], pattern.shape[-2:]
    if values.ndim != pattern.ndim or values.shape[:-1] != (*lead, length):
        raise TlGeomError(
            f"shapes disagree: pattern {tuple(pattern.shape)} needs values "
            f"{(*lead, length, 'd')}, got {tuple(values.shape)}"
        )
    if q > length:
        raise TlGeomError(
            f"pattern has {q} query rows but only {length} keys; the rows must be the "
            "last Q <= L positions"
        )


def separability_all_queries(
    pattern: Float[Tensor, "*lead query key"],
    values: Float[Tensor, "*lead key d"],
    n: int | Sequence[int],
    *,
    causal: bool = True,
    chunk: int = 64,
    dtype: torch.dtype = torch.float64,
    atol: float = ROW_SUM_ATOL,
) -> QuerySeparability:
    """Top-N separability of every query row of an attention pattern at once.

    For query row q with weights alpha_q and selection sel_q = I_N(alpha_q):
    s_q = (alpha_q * sel_q) @ V,  <s_q, y_qk> = alpha_qk (S V^T)_qk,
    g_qk = 2 alpha_qk (S V^T)_qk - alpha_qk^2 ||v_k||^2,
    then P, R, F, r_max, r_min as in :func:`separability` (spec: geometry.md, "Metrics":
    for all query positions ``<v_i, s_q>`` is one ``L x L`` matmul per head and N).
    Values are shared by all queries and never expanded per query.

    Causal: the Q rows are the last Q of the L positions; row q sees keys
    ``0..p`` with ``p = L - Q + q``. Its future keys are in neither set (their
    weights are ignored), its weights must sum to 1 over the visible keys, and
    N values with ``N >= p + 1`` (nothing left outside the top-N) give NaN.
    Not causal: every row sees all L keys.

    Memory: queries are processed ``chunk`` rows at a time, so the working set is
    about ``6 * 8 bytes * rows * chunk * len(n) * L`` (rows = product of the leading
    dims; float64), not ``Q * L * len(n)`` per head. Time: ``O(Q L len(n) d)`` per head;
    a causal chunk works only on the keys up to its last row and on the N that some
    row of it sees more keys than (the others are NaN in all its rows).

    Args:
        pattern: attention weights ``[..., Q, L]`` (``hook_pattern``).
        values: value vectors ``[..., L, d]``, one set per head (not per query).
        n: one N or a list of N values, each ``1 <= N < L``.
        causal: exclude each row's future keys (decoder patterns).
        chunk: query rows per step.
        dtype: accumulation dtype (float64 by default).
        atol: tolerance on ``|sum(alpha) - 1|`` per row (over visible keys).

    Returns:
        A :class:`QuerySeparability`, metrics ``[..., Q]`` for an int ``n`` and
        ``[..., Q, len(n)]`` for a list.

    Raises:
        TlGeomError: N out of range ``1..L-1``, shapes that disagree, ``Q > L``,
            negative weights, rows not summing to 1 over visible keys, NaN/inf,
            ``chunk < 1``.

    >>> pattern = torch.tensor([[1.0, 0.0, 0.0], [0.75, 0.25, 0.0], [0.5, 0.25, 0.25]])
    >>> values = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> res = separability_all_queries(pattern, values, 1)
    >>> res.precision.tolist(), res.visible.tolist()
    ([nan, 1.0, 1.0], [1, 2, 3])
    """
    _check_pattern(pattern, values)
    # A view, cast (and checked) per chunk: einops.pack would copy the whole pattern first.
    p = einops.rearrange(pattern, "... query key -> (...) query key")
    return _all_queries(
        lambda start, stop: p[:, start:stop],
        values,
        n,
        q_len=pattern.shape[-2],
        causal=causal,
        chunk=chunk,
        dtype=dtype,
        atol=atol,
    )


def separability_all_queries_streamed(
    rows: Callable[[int, int], Tensor],
    values: Float[Tensor, "*lead key d"],
    n: int | Sequence[int],
    *,
    causal: bool = True,
    chunk: int = 64,
    dtype: torch.dtype = torch.float64,
    atol: float = ROW_SUM_ATOL,
) -> QuerySeparability:
    """:func:`separability_all_queries` with the pattern made chunk by chunk, never whole.

    ``rows(start, stop)`` returns query rows ``start..stop-1`` of all ``L`` queries as
    ``[..., stop - start, L]`` (the leading dims of ``values``), e.g. recomputed from q
    and k by the ``sdpa`` backend, so the memory per head is ``O(chunk L)``, never
    ``O(L^2)``. Each chunk is checked as it arrives (same checks, same errors).
    """
    return _all_queries(
        lambda start, stop: einops.rearrange(rows(start, stop), "... query key -> (...) query key"),
        values,
        n,
        q_len=values.shape[-2],
        causal=causal,
        chunk=chunk,
        dtype=dtype,
        atol=atol,
    )


def _all_queries(
    get: Callable[[int, int], Tensor],
    values: Tensor,
    n: int | Sequence[int],
    *,
    q_len: int,
    causal: bool,
    chunk: int,
    dtype: torch.dtype,
    atol: float,
) -> QuerySeparability:
    """The chunk loop: ``get(start, stop)`` gives ``[rows, c, L]``, each chunk checked."""
    check_count("chunk", chunk)
    length = values.shape[-2]
    ns = check_n(n, length)
    scalar = isinstance(n, Integral)
    device = values.device
    first = length - q_len if causal else 0
    visible = torch.arange(q_len, device=device) + first + 1
    if not causal:
        visible = torch.full_like(visible, length)
    mask = torch.arange(length, device=device) < visible.unsqueeze(-1)  # [Q, L]
    check_finite("values", values)

    packed: list[tuple[int, ...] | list[int]] = [tuple(values.shape[:-2])]
    v = flat_values(values, dtype)
    rows = v.shape[0]
    n_t = torch.tensor(ns, device=device)
    zero = torch.zeros((), dtype=dtype, device=device)
    nan = torch.full((), float("nan"), dtype=dtype, device=device)
    names = ("precision", "recall", "f1", "r_max", "r_min", "margin")
    parts: dict[str, list[Tensor]] = {k: [] for k in names}
    for start in range(0, q_len, chunk):
        m = mask[start : start + chunk]  # [c, key]
        p_chunk = get(start, start + m.shape[0])
        if tuple(p_chunk.shape) != (rows, m.shape[0], length):
            raise TlGeomError(
                f"rows({start}, {start + m.shape[0]}) gave shape {tuple(p_chunk.shape)}, "
                f"expected {(rows, m.shape[0], length)} (the leading dims of values, flattened)"
            )
        check_weights(p_chunk, key_mask=m if causal else None, atol=atol)
        # An N that no row of the chunk sees more than N keys for is NaN in every row:
        # left out, with the keys past the chunk's last row (no row of it sees them).
        # The weights are unchanged, so are the (certified) counts; r_max, r_min could
        # differ in the last bits where a BLAS rounds the shorter matmuls differently.
        vis = visible[start : start + m.shape[0]]
        seen = int(vis.max())
        todo = [i for i, k in enumerate(ns) if k < seen]
        undefined = n_t >= vis.unsqueeze(-1)  # [c, nn]
        if not todo:
            for k in names:
                parts[k].append(nan.expand(rows, m.shape[0], len(ns)))
            continue
        if causal:
            m, p_chunk, v_c = m[:, :seen], p_chunk[..., :seen], v[:, :seen]
        else:
            v_c = v
        n_idx = torch.tensor(todo, device=device) if len(todo) < len(ns) else None
        n_c = n_t if n_idx is None else n_t[n_idx]
        a = torch.where(m, p_chunk.to(dtype), zero)  # future ignored
        # Future keys rank after every visible key (weights are >= 0). Zeroed future
        # weights would already lose ties to earlier keys; -1 makes it explicit.
        a_sorted, rank = sorted_rank(torch.where(m, a, -torch.ones_like(zero)))
        key_mask = m.expand(rows, *m.shape) if causal else None
        metrics = selection_metrics(a, v_c, rank, n_c, key_mask, prefix=True)[:5]
        margin = a_sorted[..., n_c - 1] - a_sorted[..., n_c]
        for k, x in zip(names, (*metrics, margin), strict=True):
            if n_idx is not None:  # back to the whole N grid, NaN where left out
                x = x.new_full((*x.shape[:-1], len(ns)), float("nan")).index_copy_(-1, n_idx, x)
            parts[k].append(torch.where(undefined, nan, x))

    def out(k: str) -> Tensor:
        (x,) = einops.unpack(torch.cat(parts[k], dim=1), packed, "* query nn")
        return x[..., 0] if scalar else x

    return QuerySeparability(
        n=ns,
        precision=out("precision"),
        recall=out("recall"),
        f1=out("f1"),
        r_max=out("r_max"),
        r_min=out("r_min"),
        margin=out("margin"),
        visible=visible,
        causal=causal,
        scalar_n=scalar,
    )
