"""Cumulative distance, distinguishability and the top-N vs random-N KS test.

Spec: normalization.md (arXiv 2508.17821), "Quantities" and "Experiments to reproduce".
One head, one query: weights ``alpha_i``, token vectors ``x_i`` (the value vectors by
default, as in geometry.md; residual-stream inputs work the same), ``y_i = alpha_i x_i``,
the top-N set ``I_N`` (ties to the earlier position, ``geometry.top_n_rank``) and
``s = sum_{i in I_N} y_i``:

    sum form   d~_N = sum_{i not in I_N} || y_i - s ||
    norm form  d~_N = || sum_{i not in I_N} (y_i - s) || = || r_N - (L - N) s ||,
               r_N = sum_{i not in I_N} y_i
    random     E d~_N: the same for uniformly random N-subsets, averaged over draws

The sum form is computed from ``||y_i - s||^2 = ||s||^2 - g_i`` (``geometry.g_scores``,
one ``[N, L]`` matmul per row, no ``[L, L]`` or ``[N, L, d]`` tensor). Near-coincident
points (``y_i ~ s``) lose digits to cancellation there: the clamped result has an
absolute error up to about ``sqrt(machine eps) ||s||`` (``1.5e-8 ||s||`` in float64) per
term. ``direct=True`` forms the differences instead (exact to rounding, memory
``N L d`` per row). The norm form sums ``r_N`` over its own terms (a masked
``[N, L]`` matmul), not as ``total - s``. Distinguishability ``N_s / N`` is the Recall of
geometry.md and is computed by ``geometry.separability`` (one implementation).

Note: reviews of the paper quote its d~ as ``|| sum_{i not in I_N} alpha_i x_i - s ||``
(no ``(L - N)`` factor on ``s``); the spec's two forms are the ones implemented here.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Literal

import einops
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_geom._checks import ROW_SUM_ATOL, check_count, check_n, check_values, check_weights
from tl_geom._shapes import Shape, unpack_n
from tl_geom.errors import TlGeomError
from tl_geom.geometry.baseline import random_ranks
from tl_geom.geometry.top_n import g_scores, separability, top_n_rank
from tl_geom.normalization.ks import ks_two_sample

__all__ = [
    "CriticalN",
    "critical_n",
    "cumulative_distance",
    "distinguishability",
    "random_cumulative_distance",
]

Form = Literal["sum", "norm"]


def _prepare(
    alpha: Tensor, values: Tensor, n: int | Sequence[int], dtype: torch.dtype, atol: float
) -> tuple[Tensor, Tensor, Tensor, list[Shape], bool]:
    """Check inputs, pack leading dims: ``(a [B, L], y [B, L, d], n_t, packed, scalar)``."""
    check_weights(alpha, atol=atol)
    check_values(alpha, values)
    ns = check_n(n, alpha.shape[-1])
    a, packed = einops.pack([alpha.to(dtype)], "* key")
    v, _ = einops.pack([values.to(dtype)], "* key d")
    n_t = torch.tensor(ns, device=a.device)
    return a, a.unsqueeze(-1) * v, n_t, packed, isinstance(n, Integral)


def _check_form(form: str) -> None:
    if form not in ("sum", "norm"):
        raise TlGeomError(f"form={form!r}; expected 'sum' or 'norm'")


def _norm(x: Tensor) -> Tensor:
    """Euclidean norm over the last dim."""
    return x.square().sum(-1).sqrt()


def _distances(
    y: Float[Tensor, "b key d"],
    rank: Int[Tensor, "b key"],
    n_t: Int[Tensor, " nn"],
    form: str,
    direct: bool,
) -> Float[Tensor, "b nn"]:
    """``d~_N`` for the selections ``I_N = {i : rank_i < N}`` (one ranking per row)."""
    length = y.shape[1]
    n_max = int(n_t.max())
    # Only the first max(N) keys in rank order are gathered for s_N (not all L).
    head = torch.argsort(rank, dim=-1)[:, :n_max]
    y_head = torch.gather(y, 1, einops.repeat(head, "b nmax -> b nmax d", d=y.shape[-1]))
    s = y_head.cumsum(1)[:, n_t - 1]  # [b, nn, d]
    selected = rank.unsqueeze(1) < n_t.view(1, -1, 1)  # [b, nn, key]
    if form == "norm":
        # r_N summed over its own terms (not total - s): no cancellation when s is most.
        rest = torch.einsum("bnk,bkd->bnd", (~selected).to(y.dtype), y)
        k = (length - n_t).to(y.dtype).view(1, -1, 1)
        return _norm(rest - k * s)
    if direct:
        dist = _norm(y.unsqueeze(1) - s.unsqueeze(2))
    else:
        ss = (s * s).sum(-1, keepdim=True)
        dist = (ss - g_scores(s, y)).clamp_min(0).sqrt()
    return torch.where(selected, torch.zeros_like(dist), dist).sum(-1)


def cumulative_distance(
    alpha: Float[Tensor, "*lead key"],
    values: Float[Tensor, "*lead key d"],
    n: int | Sequence[int],
    *,
    form: Form = "sum",
    direct: bool = False,
    dtype: torch.dtype = torch.float64,
    atol: float = ROW_SUM_ATOL,
) -> Tensor:
    """Cumulative distance of the non-selected tokens to the top-N representative.

    sum:  d~_N = sum_{i not in I_N} || alpha_i x_i - s ||,   s = sum_{i in I_N} alpha_i x_i
    norm: d~_N = || sum_{i not in I_N} (alpha_i x_i - s) ||
    Ties: earlier position [ours]. Spec: normalization.md, "Quantities". The sum form
    uses ``||y_i - s||^2 = ||s||^2 - g_i`` clamped at 0 (absolute error up to about
    ``1.5e-8 ||s||`` per term where ``y_i ~ s``); ``direct=True`` forms the differences.

    Args:
        alpha: attention weights ``[..., L]`` (rows summing to 1).
        values: token vectors ``[..., L, d]`` (values, or residual-stream inputs).
        n: one N or a list, each ``1 <= N < L``.
        form: ``"sum"`` (the paper's d~) or ``"norm"`` (single-norm variant).
        direct: sum form only: compute ``||y_i - s||`` from the differences
            (memory ``len(n) L d`` per row) instead of from ``g``.
        dtype: accumulation dtype.
        atol: tolerance on ``|sum(alpha) - 1|``.

    Returns:
        ``[...]`` for an int ``n``, ``[..., len(n)]`` for a list.

    Raises:
        TlGeomError: N out of range, shapes, negative or unnormalised weights, NaN/inf,
            unknown form.

    Examples:
        >>> alpha = torch.tensor([0.4, 0.3, 0.2, 0.1])
        >>> x = torch.tensor([[1.0, 0.0]] * 4)
        >>> [round(v, 6) for v in cumulative_distance(alpha, x, [1, 2]).tolist()]
        [0.6, 1.1]
    """
    _check_form(form)
    a, y, n_t, packed, scalar = _prepare(alpha, values, n, dtype, atol)
    return unpack_n(_distances(y, top_n_rank(a), n_t, form, direct), packed, scalar)


def random_cumulative_distance(
    alpha: Float[Tensor, "*lead key"],
    values: Float[Tensor, "*lead key d"],
    n: int | Sequence[int],
    *,
    draws: int = 16,
    seed: int = 0,
    reduce: Literal["mean", "none"] = "mean",
    form: Form = "sum",
    direct: bool = False,
    dtype: torch.dtype = torch.float64,
    atol: float = ROW_SUM_ATOL,
) -> Tensor:
    """``d~_N`` for uniformly random N-subsets, averaged over draws: the baseline ``E``.

    E d~_N = (1/draws) sum_k d~_N(I_N^(k)),   I_N^(k) = first N keys of a uniformly
    random permutation ``pi_k`` of the row's keys (one permutation per row and draw,
    shared across N, as geometry.md's "random rankings"; each prefix is a uniform
    N-subset). The permutations are those of :func:`tl_geom.geometry.baseline.random_ranks`, so
    a seed gives the same subsets here as in ``random_separability``, on any device.
    Same forms as :func:`cumulative_distance`. Spec: normalization.md, "Quantities".

    Args:
        alpha: weights ``[..., L]``.
        values: token vectors ``[..., L, d]``.
        n: one N or a list.
        draws: number of random permutations per row (>= 1).
        seed: generator seed.
        reduce: ``"mean"`` over draws, or ``"none"`` to keep them.
        form: ``"sum"`` or ``"norm"``.
        direct: as in :func:`cumulative_distance`.
        dtype: accumulation dtype.
        atol: tolerance on ``|sum(alpha) - 1|``.

    Returns:
        ``[...]`` / ``[..., len(n)]`` for ``"mean"``; ``[..., draws]`` /
        ``[..., draws, len(n)]`` for ``"none"``.
    """
    _check_form(form)
    if reduce not in ("mean", "none"):
        raise TlGeomError(f"reduce={reduce!r}; expected 'mean' or 'none'")
    check_count("draws", draws)
    a, y, n_t, packed, scalar = _prepare(alpha, values, n, dtype, atol)
    ranks = random_ranks((a.shape[0],), a.shape[-1], draws=int(draws), seed=seed, device=a.device)
    per_draw: list[Tensor] = []
    for t in range(int(draws)):  # a loop over draws bounds memory at one top-N call each
        order = torch.argsort(ranks[:, t], dim=-1)  # keys in random order
        per_draw.append(_distances(y, order, n_t, form, direct))
    stacked = torch.stack(per_draw, 1)  # [b, draws, nn]
    if reduce == "mean":
        return unpack_n(stacked.mean(1), packed, scalar)
    (out,) = einops.unpack(stacked, packed, "* draws nn")
    return out[..., 0] if scalar else out


def distinguishability(
    alpha: Float[Tensor, "*lead key"],
    values: Float[Tensor, "*lead key d"],
    n: int | Sequence[int],
    *,
    dtype: torch.dtype = torch.float64,
    atol: float = ROW_SUM_ATOL,
) -> Tensor:
    """Geometric distinguishability ``N_s / N``: the Recall of geometry.md.

    r = min_{i not in I_N} || s - alpha_i x_i ||,  N_s = #{i in I_N : ||s - alpha_i x_i|| < r}
    A named view of ``separability(alpha, values, n).recall`` (one implementation).
    Spec: normalization.md, "Quantities"; geometry.md, "Metrics".

    >>> alpha = torch.tensor([0.5, 0.3, 0.1, 0.1])
    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    >>> distinguishability(alpha, x, [1, 2]).tolist()
    [1.0, 0.5]
    """
    return separability(alpha, values, n, dtype=dtype, atol=atol).recall


@dataclass(frozen=True)
class CriticalN:
    """Per-N KS tests of top-N vs random-N ``d~`` and the critical N they give.

    Attributes:
        n: smallest grid N whose test does not reject (``pvalue >= level``); ``None``
            when every N on the grid rejects. Equal to ``ns[0]`` when none rejects.
        ns: the N grid, ascending.
        statistic: KS statistic per N, ``[len(ns)]``.
        pvalue: exact p-value per N, ``[len(ns)]``.
        level: the significance level.
    """

    n: int | None
    ns: tuple[int, ...]
    statistic: Tensor
    pvalue: Tensor
    level: float

    @property
    def rejects(self) -> Tensor:
        """``pvalue < level`` per N: top-N is distinguishable from random at this N."""
        return self.pvalue < self.level

    def to_frame(self) -> pd.DataFrame:
        """Columns ``n, statistic, pvalue, rejects``."""
        return pd.DataFrame(
            {
                "n": list(self.ns),
                "statistic": self.statistic.cpu().numpy(),
                "pvalue": self.pvalue.cpu().numpy(),
                "rejects": self.rejects.cpu().numpy(),
            }
        )


def critical_n(
    alpha: Float[Tensor, "*lead key"],
    values: Float[Tensor, "*lead key d"],
    ns: Sequence[int],
    *,
    level: float = 0.01,
    draws: int = 1,
    seed: int = 0,
    form: Form = "sum",
    atol: float = ROW_SUM_ATOL,
) -> CriticalN:
    """Critical N: the smallest grid N where top-N ``d~`` is no longer told from random.

    For each N, sample 1 = ``d~_N`` of the top-N set for every row (all leading dims
    pooled: heads, windows, ...), sample 2 = ``d~_N`` of random N-subsets for every row
    and draw (``draws`` x rows values) [ours]. Two-sample KS (:func:`ks_two_sample`);
    ``N* = min{N in ns : p(N) >= level}`` [ours: the first non-rejection, not "rejects
    for no larger N"]; ``None`` if the test rejects at every N; ``ns[0]`` if it never
    rejects. The default ``draws=1`` keeps the random sample independent across its
    values: pooling several draws of the same row correlates them and makes p too small.
    Spec: normalization.md, "Experiments to reproduce" (paper: ``N* ~ 0.06 L``).

    Args:
        alpha: weights ``[..., L]``; rows are the leading dims pooled.
        values: token vectors ``[..., L, d]``.
        ns: the N grid (sorted and de-duplicated here), each ``1 <= N < L``.
        level: significance level in (0, 1).
        draws: random subsets per row in sample 2.
        seed: generator seed of the random subsets.
        form: ``"sum"`` or ``"norm"``.
        atol: tolerance on ``|sum(alpha) - 1|``.
    """
    if not 0.0 < level < 1.0:
        raise TlGeomError(f"level={level!r} must be in (0, 1)")
    grid = sorted(set(check_n(list(ns), alpha.shape[-1])))
    top = cumulative_distance(alpha, values, grid, form=form, atol=atol)
    rnd = random_cumulative_distance(
        alpha, values, grid, draws=draws, seed=seed, reduce="none", form=form, atol=atol
    )
    s1 = einops.rearrange(top, "... nn -> nn (...)")
    s2 = einops.rearrange(rnd, "... draws nn -> nn (... draws)")
    res = ks_two_sample(s1, s2)
    ok = (res.pvalue >= level).nonzero()
    n_star = grid[int(ok[0, 0])] if ok.numel() > 0 else None
    return CriticalN(
        n=n_star, ns=tuple(grid), statistic=res.statistic, pvalue=res.pvalue, level=level
    )
