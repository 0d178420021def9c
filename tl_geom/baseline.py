"""The random-subset baseline (spec: geometry.md, "Metrics", Baseline).

The same Precision, Recall and F-score as :func:`tl_geom.geometry.separability`, for
uniformly random N-subsets of the keys instead of the top N (16 draws by default): the
claim "top-N sharpens separability" is top-N against this.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

import einops
import pandas as pd  # pyright: ignore[reportMissingTypeStubs]
import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_geom._checks import ROW_SUM_ATOL, check_n, check_values, check_weights
from tl_geom.geometry import check_count, flat_values, selection_metrics, tidy_frame

__all__ = ["RandomSeparability", "random_ranks", "random_separability"]


@dataclass(frozen=True)
class RandomSeparability:
    """The random-subset baseline: P, R, F of uniformly random N-subsets, over draws.

    Shapes as for :class:`Separability`: ``[...]`` for an int ``n``, ``[..., len(n)]``
    for a list. ``precision`` etc. are means over the draws; ``*_std`` are population
    standard deviations over the draws (ddof = 0; ``std / sqrt(draws - 1)`` estimates
    the standard error of the mean).

    Attributes:
        n: the N values, in the order of the trailing dim (a 1-tuple for an int n).
        precision: mean of ``P_N`` over draws.
        recall: mean of ``R_N`` over draws.
        f1: mean of ``F_N`` over draws (the mean of per-draw F, not F of the means).
        precision_std: std of ``P_N`` over draws.
        recall_std: std of ``R_N`` over draws.
        f1_std: std of ``F_N`` over draws.
        draws: number of random subsets per row and N.
        seed: seed of the generator the subsets came from (see :func:`random_ranks`).
        scalar_n: True when ``n`` was given as an int (no trailing N dim).
    """

    n: tuple[int, ...]
    precision: Tensor
    recall: Tensor
    f1: Tensor
    precision_std: Tensor
    recall_std: Tensor
    f1_std: Tensor
    draws: int
    seed: int
    scalar_n: bool = False

    def to_frame(self, dims: Sequence[str] | None = None) -> pd.DataFrame:
        """Tidy table: one row per leading index and N.

        Args:
            dims: names for the leading dims (default ``dim0, dim1, ...``).

        Returns:
            Columns ``*dims, n, precision, recall, f1, precision_std, recall_std, f1_std``
            (add a ``_random`` suffix when joining onto a top-N table).
        """
        metrics = {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "precision_std": self.precision_std,
            "recall_std": self.recall_std,
            "f1_std": self.f1_std,
        }
        return tidy_frame(metrics, self.n, self.scalar_n, dims)


def random_ranks(
    lead: Sequence[int],
    length: int,
    *,
    draws: int = 16,
    seed: int = 0,
) -> Int[Tensor, "*lead draw key"]:
    """Uniformly random ranks of the keys: one random permutation per row and draw.

    rank_k = #{k' : u_k' < u_k},  u ~ U[0, 1)^L  (float64, one u per row and draw)
    ``rank < N`` is a uniformly random N-subset of the L keys; the subsets of one draw
    are nested in N, so each draw gives one coherent baseline curve over N.
    Spec: geometry.md, "Metrics" (Baseline).

    Reproducibility: ``u = torch.rand((rows, draws, L), dtype=float64, generator=
    torch.Generator().manual_seed(seed))`` on the CPU, rows being the leading dims
    flattened row-major. The CPU stream fills in order, so the subsets of row r depend
    only on ``(seed, draws, L, r)``: not on the device, the dtype, a reshape of the
    leading dims, or rows after r. They change when rows before r are added or removed
    (slice the result, not the input, to keep them).

    Args:
        lead: leading shape (``alpha.shape[:-1]``).
        length: number of keys L.
        draws: random permutations per row.
        seed: generator seed.

    Returns:
        ``[*lead, draws, L]`` int64 ranks on the CPU.

    >>> r = random_ranks((), 4, draws=2, seed=0)
    >>> r.shape, sorted(r[0].tolist())
    (torch.Size([2, 4]), [0, 1, 2, 3])
    """
    check_count("draws", draws)
    check_count("length", length)
    shape = tuple(int(s) for s in lead)
    rows = 1
    for s in shape:
        rows *= s
    gen = torch.Generator().manual_seed(int(seed))
    u = torch.rand((rows, draws, length), dtype=torch.float64, generator=gen)
    rank = u.argsort(-1).argsort(-1)
    return rank.reshape(*shape, draws, length)


def random_separability(
    alpha: Float[Tensor, "*lead key"],
    values: Float[Tensor, "*lead key d"],
    n: int | Sequence[int],
    *,
    draws: int = 16,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    atol: float = ROW_SUM_ATOL,
) -> RandomSeparability:
    """Precision, recall and F-score of uniformly random N-subsets (the baseline).

    For each draw t a uniformly random subset J_t of size N replaces the top-N set:
    s = sum_{i in J_t} y_i, then P, R, F exactly as in :func:`separability` (same
    ``g`` form, same closed/open balls), averaged over the draws.
    Spec: geometry.md, "Metrics" (Baseline: 16 random N-subsets by default).

    All draws and N values are one batched matmul per row (cost ``draws * len(n) * L * d``
    per row, memory ``O(draws * len(n) * L)`` per row); the subsets come from
    :func:`random_ranks`, so a fixed ``seed`` gives the same result on any device.

    Args:
        alpha: attention weights of each row, ``[..., L]``.
        values: value vectors ``[..., L, d]``.
        n: one N or a list of N values, each ``1 <= N < L``.
        draws: number of random subsets per row and N.
        seed: seed of the subsets (see :func:`random_ranks` for what they depend on).
        dtype: accumulation dtype (float64 by default).
        atol: tolerance on ``|sum(alpha) - 1|`` per row.

    Returns:
        A :class:`RandomSeparability` with means and stds over draws, ``[...]`` for an
        int ``n`` and ``[..., len(n)]`` for a list.

    Raises:
        TlGeomError: as :func:`separability`, and ``draws < 1``.

    >>> alpha = torch.full((4,), 0.25)
    >>> values = torch.ones(4, 2)
    >>> res = random_separability(alpha, values, 1)  # all points equal: P = 1/4, R = 0
    >>> res.precision.item(), res.recall.item(), res.precision_std.item()
    (0.25, 0.0, 0.0)
    """
    check_weights(alpha, atol=atol)
    check_values(alpha, values)
    check_count("draws", draws)
    length = alpha.shape[-1]
    ns = check_n(n, length)
    scalar = isinstance(n, Integral)

    a, packed = einops.pack([alpha.to(dtype)], "* key")
    v = flat_values(values, dtype)
    n_t = torch.tensor(ns, device=a.device)
    rank = random_ranks((a.shape[0],), length, draws=draws, seed=seed).to(a.device)
    selected = einops.rearrange(
        rank.unsqueeze(-2) < n_t.view(-1, 1), "b t nn key -> b 1 (t nn) key"
    )
    n_rep = einops.repeat(n_t, "nn -> (t nn)", t=draws)
    per_draw = [x.squeeze(1) for x in selection_metrics(a.unsqueeze(1), v, selected, n_rep)[:3]]

    def stat(x: Tensor, std: bool) -> Tensor:
        x = einops.rearrange(x, "b (t nn) -> b t nn", t=draws)
        x = x.std(1, correction=0) if std else x.mean(1)
        (x,) = einops.unpack(x, packed, "* nn")
        return x[..., 0] if scalar else x

    p, r, f = per_draw
    return RandomSeparability(
        n=ns,
        precision=stat(p, False),
        recall=stat(r, False),
        f1=stat(f, False),
        precision_std=stat(p, True),
        recall_std=stat(r, True),
        f1_std=stat(f, True),
        draws=int(draws),
        seed=int(seed),
        scalar_n=scalar,
    )
