"""The random-subset baseline (spec: geometry.md, "Metrics", Baseline).

The same Precision, Recall and F-score as :func:`tl_geom.geometry.top_n.separability`, for
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

from tl_geom._checks import ROW_SUM_ATOL, check_count, check_n, check_values, check_weights
from tl_geom._shapes import unpack_n
from tl_geom.geometry import kernels
from tl_geom.geometry.certify import (
    Flagged,
    gamma_sum,
    ieee_float32,
    key_bounds,
    mixed_bounds,
    mixed_scores_fit,
    recheck,
)
from tl_geom.geometry.fused import baseline_passes
from tl_geom.geometry.scratch import scratch
from tl_geom.geometry.top_n import flat_values, scores_from_counts, tidy_frame

__all__ = [
    "CHUNK_ELEMENTS",
    "DEVICE_CHUNK",
    "RandomSeparability",
    "default_score_dtype",
    "random_counts",
    "random_ranks",
    "random_separability",
]

CHUNK_ELEMENTS = 2**20
"""``g`` scores (float64: 8 MiB) computed per chunk of the baseline on the CPU.

Measured at L = 1024 (9 heads, 10 N, 16 draws: 1.5 M scores; 30 layers, 2-core CPU,
kept scratch buffers). Alone, chunks of 2**18 to 2**22 scores took 515, 537, 492-507,
421 and 447 ms at 2 threads (2**15: 1152 ms). Inside the forward, where the model's
weights share the 32 MiB L3 cache, a whole ``run_window`` took 1.69x, 1.73x and 1.58x a
plain forward with 2**18, 2**19 and 2**20 (one interleaved run), 1.64x against 1.56x
with 2**21 against 2**20 (another). On an accelerator the chunk is :data:`DEVICE_CHUNK`."""

DEVICE_CHUNK = 2**24
"""``g`` scores per chunk of the baseline on an accelerator (16x the CPU's).

Sized by memory, not measured (no GPU was at hand): a chunk holds its 0/1 selection in
float64 and five float32 score-sized buffers (``g``, the penalties, the per-key stage's
three), 2**24 x 28 bytes = 470 MB (about 640 MB with float64 scores), within 10% of a
plain forward's peak for the Llama-2-7B shape at L = 32768 (about 16 GB: 13.5 GB of
bfloat16 weights and the MLP's activations). 2**26, used before, would take 1.9 GB.
At that shape a chunk is two heads' rows (16 draws x 15 N x 32768 keys each)."""


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
    device: torch.device | str | None = None,
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
    (slice the result, not the input, to keep them). ``u`` is then sorted on ``device``
    (stable, so even a tie in ``u`` orders the same everywhere): on a GPU the sort, the
    costly part, runs there, and the ranks are the same as on the CPU. On the CPU with
    numba, a bucket sort gives the same ranks (:func:`kernels.ranks_of_uniforms`).

    Args:
        lead: leading shape (``alpha.shape[:-1]``).
        length: number of keys L.
        draws: random permutations per row.
        seed: generator seed.
        device: where to sort and return the ranks (default: the CPU).

    Returns:
        ``[*lead, draws, L]`` int64 ranks on ``device``.

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
    rank = None
    if (device is None or torch.device(device).type == "cpu") and kernels.enabled(u):
        rank = kernels.ranks_of_uniforms(u)  # the same ranks by a bucket sort, 5x faster
    if rank is not None:
        return rank.reshape(*shape, draws, length)
    # For u >= 0 the bits of a float64, read as an int64, order as the values do: the
    # same stable order, and the integer sort is 40% faster on the CPU (5.1 vs 8.4 ms
    # for [9, 16, 1024]).
    order = torch.argsort(u.view(torch.int64).to(device or "cpu"), dim=-1, stable=True)
    # The inverse permutation of ``order`` (what a second argsort gives), by one scatter.
    ranks = torch.arange(length, device=order.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(-1, order, ranks)
    return rank.reshape(*shape, draws, length)


def default_score_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The dtype of the baseline's scores ``g`` when the caller does not choose [ours].

    float32 on an accelerator, where float64 runs at 1/2 (data-centre cards) to 1/64
    (consumer cards) of float32's speed; ``dtype`` (float64) on the CPU, where the
    certified float32 scores took as long as float64 (SmolLM2, L = 1024, 30 layers,
    interleaved runs: 465-593 against 439-568 ms): the two matmuls there are not all of
    it, and about 1.5% of the entries need their float64 scores after all. Either way
    the counts are certified exact (see :func:`random_counts`), so this changes speed,
    never a result.
    """
    if device.type != "cpu" and dtype == torch.float64:
        return torch.float32
    return dtype


def random_separability(
    alpha: Float[Tensor, "*lead key"],
    values: Float[Tensor, "*lead key d"],
    n: int | Sequence[int],
    *,
    draws: int = 16,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    score_dtype: torch.dtype | None = None,
    atol: float = ROW_SUM_ATOL,
) -> RandomSeparability:
    """Precision, recall and F-score of uniformly random N-subsets (the baseline).

    For each draw t a uniformly random subset J_t of size N replaces the top-N set:
    s = sum_{i in J_t} y_i, then P, R, F exactly as in :func:`separability` (same
    ``g`` form, same closed/open balls), averaged over the draws.
    Spec: geometry.md, "Metrics" (Baseline: 16 random N-subsets by default).

    Cost per row: two ``[draws * len(n), L] x [L, d]`` matmuls; the draws go in chunks
    of about ``CHUNK_ELEMENTS`` ``g`` scores (see :func:`random_counts`), so memory is
    ``O(chunk)``, not ``O(draws * len(n) * L)`` per row. The subsets come from
    :func:`random_ranks`, so a fixed ``seed`` gives the same result on any device.

    Args:
        alpha: attention weights of each row, ``[..., L]``.
        values: value vectors ``[..., L, d]``.
        n: one N or a list of N values, each ``1 <= N < L``.
        draws: number of random subsets per row and N.
        seed: seed of the subsets (see :func:`random_ranks` for what they depend on).
        dtype: accumulation dtype (float64 by default) of ``y``, ``s`` and the radii.
        score_dtype: dtype of the scores ``g`` and their counting passes: float32
            rounds only the score matmul, within a certified per-key bound (entries
            it leaves undecided are counted from their float64 scores), so P, R, F are
            the same as with ``dtype``. Default :func:`default_score_dtype` (float32 on
            an accelerator, ``dtype`` on the CPU).
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
    rank = random_ranks((a.shape[0],), length, draws=draws, seed=seed, device=a.device)
    per_draw = random_counts(a, v, rank, n_t, score_dtype=score_dtype)

    def stat(x: Tensor, std: bool) -> Tensor:
        return unpack_n(x.std(1, correction=0) if std else x.mean(1), packed, scalar)

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


def random_counts(
    a: Float[Tensor, "b key"],
    v: Float[Tensor, "b key d"],
    rank: Int[Tensor, "b draw key"],
    n: Int[Tensor, " nn"],
    *,
    chunk: int | None = None,
    exact_inputs: tuple[Tensor, Tensor] | None = None,
    score_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """P, R, F ``[b, draw, nn]`` of the subsets ``J = {k : rank_k < N}`` of each row.

    With ``y_k = a_k v_k`` and ``s = sum_J y``:
        g_k = <2 s, y_k> - ||y_k||^2               (one matmul with a per-key bias)
        #FP = #{k : g_k >= min_J g} - N            (every member of J attains >= its min)
        #TP = #{k : g_k >  max_{k not in J} g}     (no non-member exceeds its own max)
    These are :func:`tl_geom.geometry.top_n.separate`'s counts without its selection-mask
    passes, which the identities above make unnecessary here because every ``J`` has
    exactly N keys and every key is present; nor does the baseline need the keys that
    attain the thresholds (for the radii, which it does not report). 15-25% faster than
    calling ``separate`` at L = 1024, 6-8% at 8192 (9 heads, interleaved runs).
    tests/test_geometry.py checks the result against exact rational arithmetic on the
    same subsets, and chunked against unchunked.

    On the CPU with numba, ``s`` and ``A_J`` are running sums in each draw's rank order
    (:func:`kernels.subset_sums`, the subsets being nested) instead of the masked matmul:
    rounded differently, within the same bound, so the same certified counts (the
    analyze tables byte for byte; tests/test_kernels.py), and 4x faster.

    Rows x draws go in chunks of about ``chunk`` scores (default ``CHUNK_ELEMENTS`` on
    the CPU, :data:`DEVICE_CHUNK` elsewhere): a short loop over chunks, each batched over its rows,
    draws and N values.

    ``score_dtype`` float32 with ``a`` in float64 (the default on an accelerator,
    :func:`default_score_dtype`): ``y``, ``s``, ``A_J`` and ``||y||^2`` stay in float64,
    only the score matmul and the passes run in float32 (IEEE, :func:`ieee_float32`),
    each key within ``certify.mixed_bounds``' per-key bound, which uses ``||s||``:
    1.5% of the entries were left undecided on SmolLM2 at L = 1024 (37% with ``s`` in
    float32 too). Those are counted from their float64 scores (``recheck``). Where the
    float32 scores could overflow (:func:`certify.mixed_scores_fit`) they stay in float64.
    """
    rows, length = a.shape
    draws, nn = rank.shape[1], n.shape[0]
    if chunk is None:
        chunk = CHUNK_ELEMENTS if a.device.type == "cpu" else DEVICE_CHUNK
    # Rows first, each with all its draws where they fit: the two matmuls then have
    # draws * nn rows each and read a row's values once, not once per draw.
    per_row = draws * nn * length
    row_step = max(1, min(rows, chunk // per_row))
    draw_step = draws if chunk >= per_row else max(1, chunk // (nn * length))
    d = v.shape[-1]
    # [y | w]: the masked sum gives s and A_J = sum_J ||y_i|| in one matmul; [y | -||y||^2]
    # with [2 s | 1]: the score matmul adds the bias itself (d + 1 terms, within the
    # bound's d + 8). Both save a pass over the scores (measured: 15% of the baseline).
    y_w = scratch("y_w", (rows, length, d + 1), a.dtype, a.device)
    y = torch.mul(a.unsqueeze(-1), v, out=y_w[..., :d])  # y_k = a_k v_k
    y_b = scratch("y_b", (rows, length, d + 1), a.dtype, a.device)
    sq = torch.mul(y, y, out=y_b[..., :d]).sum(-1)  # ||y_k||^2
    w = torch.sqrt(sq, out=y_w[..., d])  # ||y_k||
    y_b[..., :d] = y
    torch.neg(sq, out=y_b[..., d])
    y_b = einops.rearrange(y_b, "b key d -> b d key")  # a view
    w_key = w.reshape(rows, 1, 1, length)
    if score_dtype is None:
        score_dtype = default_score_dtype(a.device, a.dtype)
    a_max = None
    if score_dtype != a.dtype:
        a_max = mixed_scores_fit(w, score_dtype)
    mixed = a_max is not None
    if a_max is not None:
        y_b_s = y_b.to(score_dtype)  # [y | -||y||^2] rounded once: in the bound
        scale, tiny, extra = mixed_bounds(d, int(n.max()), score_dtype, a.dtype, a_max)
    else:
        scale, tiny = key_bounds(d, int(n.max()), g_dtype=a.dtype, s_dtype=a.dtype)
        extra = 0.0
        y_b_s = y_b
    g_dtype = y_b_s.dtype
    # A_J, a sum of at most max(N) positive terms, rounded up to stay an upper bound.
    grow = 1 + 2 * gamma_sum(int(n.max()) + 8, a.dtype)
    rank_f = rank.to(a.dtype)  # exact: L < 2**24
    n_col = n.to(a.dtype).view(-1, 1)
    tp = torch.empty(rows, draws, nn, dtype=torch.long, device=a.device)
    fp = torch.empty_like(tp)
    for r0 in range(0, rows, row_step):
        rs = slice(r0, r0 + row_step)
        for t0 in range(0, draws, draw_step):
            ts = slice(t0, t0 + draw_step)
            ranks = rank_f[rs, ts].unsqueeze(-2)  # [b, t, 1, key]
            shape = (ranks.shape[0], ranks.shape[1], nn, length)
            sel, s = None, None
            if kernels.enabled(a):  # running sums in rank order (nested subsets)
                s = kernels.subset_sums(y_w[rs], rank_f[rs, ts], n)
            if s is None:
                sel = torch.lt(ranks, n_col, out=scratch("sel", shape, a.dtype, a.device))
                s = torch.bmm(einops.rearrange(sel, "b t nn key -> b (t nn) key"), y_w[rs])
            else:
                s = einops.rearrange(s, "b t nn e -> b (t nn) e")
            a_sel = einops.rearrange(s[..., d] * grow, "b (t nn) -> b t nn 1", nn=nn)
            if mixed:  # the bound's ||s|| (and A_J for s's own float64 rounding)
                s_norm = s[..., :d].square().sum(-1).sqrt()
                s_norm = einops.rearrange(s_norm, "b (t nn) -> b t nn 1", nn=nn)
                a_sel = s_norm * (1 + 2**-40) + extra * a_sel
            s[..., :d] *= 2.0  # <2 s, y_k>: scaling by 2 is exact
            s[..., d] = 1.0
            g_shape = (shape[0], shape[1] * nn, length)
            with ieee_float32():
                g = torch.bmm(
                    s.to(g_dtype), y_b_s[rs], out=scratch("g", g_shape, g_dtype, a.device)
                )
            g = einops.rearrange(g, "b (t nn) key -> b t nn key", nn=nn)
            sel_g = None if mixed else sel  # float32 passes form their own from the ranks
            fp_c, tp_c, flagged = baseline_passes(
                g, rank_f[rs, ts], n, w_key[rs], a_sel, scale, tiny, sel_g, not mixed
            )
            if bool(flagged.any()):
                a64, v64 = exact_inputs or (a, v)
                idx = torch.nonzero(flagged)  # [F, 3]: (b, t, nn) within the chunk
                g64 = None
                if exact_inputs is None and g.dtype == torch.float64:
                    g64 = g[flagged]
                elif exact_inputs is None and a.dtype == torch.float64:
                    # The float64 path's scores of these entries, from the float64 s.
                    s_rows = s[idx[:, 0], idx[:, 1] * nn + idx[:, 2]].unsqueeze(1)
                    g64 = torch.bmm(s_rows, y_b[r0 + idx[:, 0]]).squeeze(1)
                exact = recheck(
                    Flagged(
                        a=a64[r0 + idx[:, 0]],
                        v=v64[rs],
                        value_row=idx[:, 0],
                        selected=ranks[idx[:, 0], idx[:, 1], 0] < n_col[idx[:, 2]],
                        present=torch.ones(length, dtype=torch.bool, device=a.device).expand(
                            len(idx), length
                        ),
                    ),
                    int(n.max()),
                    g64,
                )
                fp_c[flagged], tp_c[flagged] = exact[0], exact[1]
            fp[rs, ts], tp[rs, ts] = fp_c, tp_c
    return scores_from_counts(fp, tp, n, a.dtype)
