"""The baseline's and the selections' hot loops, compiled for the CPU by numba.

The counts of P and R (``certify.py``) are a handful of elementwise passes over the
``[..., N, L]`` scores: thresholds over the selection and the rest, then four
comparisons. In torch each pass reads and writes a whole score-sized buffer; here one
loop per score row takes both thresholds in a first sweep and the four counts in a
second, while the row (8 KiB at L = 1024) is in cache. Measured at L = 1024, 2 threads:
the baseline's passes of one layer (9 heads, 16 draws, 10 N) 2.3 against 7.1 ms, an
all-query chunk ``[9, 64, 10, 1024]`` 8 against 55-64 ms. Two more loops serve the
baseline: its random ranks (a bucket sort, :func:`ranks_of_uniforms`) and its subset
sums (running sums over the nested subsets, :func:`subset_sums`); the all-query maps
take the top-N sums the same way (:func:`prefix_sums`) and sort their rows by a radix
sort (:func:`sorted_rank`); the envelope's simulation runs its AR(1) chains in one
(:func:`ar1_chain`).

The counting loops perform the same IEEE operations in the same order as the torch
passes they replace (:func:`tl_geom.geometry.fused.key_passes` and
:func:`tl_geom.geometry.top_n.separate` with a bound), with no fast-math and no
contraction to FMA, so counts, thresholds, attaining keys and flags are theirs bit for
bit; the ranks are the stable sort's; the subset sums round differently from the
masked matmul, within the same certified bound, so the counts are the same
(tests/test_kernels.py). numba is the ``fast`` extra (``pip install tl-geom[fast]``;
``make venv`` installs it), imported on first use. Without it, with ``TL_GEOM_NUMBA=0``
in the environment, on an accelerator, or when a loop fails to compile (a warning, once),
the torch passes run. Compiling takes 1-2 s per dtype on first use; numba caches the
machine code on disk for later processes. numba's threads follow torch's
(``torch.set_num_threads``); its OpenMP layer is thread-safe but, GNU's, not fork-safe:
a program that forks workers after the loops ran should set ``TL_GEOM_NUMBA=0``.
docs/performance.md has the figures.
"""

import importlib.util
import inspect
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tl_geom.geometry import numba_loops

__all__ = [
    "ar1_chain",
    "baseline_counts",
    "enabled",
    "masked_weights",
    "prefix_sums",
    "ranks_of_uniforms",
    "selection_counts",
    "sorted_rank",
    "subset_sums",
    "use_numba",
]


_state: dict[str, Any] = {
    "on": importlib.util.find_spec("numba") is not None  # the ``fast`` extra
    and os.environ.get("TL_GEOM_NUMBA", "") != "0"
}


def enabled(t: Tensor) -> bool:
    """Whether the numba loops take ``t``: numba installed, not disabled, CPU, float.

    float32 or float64 only: other dtypes (bfloat16) have no NumPy form; the torch
    passes take them.
    """
    return (
        bool(_state["on"]) and t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)
    )


@contextmanager
def use_numba(on: bool) -> Iterator[None]:
    """Within the block, take the numba loops (where installed) or the torch passes."""
    before = _state["on"]
    _state["on"] = bool(on) and importlib.util.find_spec("numba") is not None
    try:
        yield
    finally:
        _state["on"] = before


def _threads() -> None:
    """Numba's threads follow torch's (``torch.set_num_threads``), within its pool."""
    numba = _load()
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def _fail(err: Exception) -> None:
    warnings.warn(f"numba loops unavailable ({err!r}); torch passes from now on", stacklevel=3)
    _state["on"] = False


_compiled: dict[str, Any] = {}


def _load() -> Any:
    """numba, imported on first use (about 0.5 s) and handed to the loops' module."""
    if numba_loops.numba is None:
        import numba

        numba_loops.numba = numba
    return numba_loops.numba


def _jit(name: str) -> Any:
    fn = _compiled.get(name)
    if fn is None:
        numba = _load()
        # unwrapped: tests' import hook wraps every function in a runtime type check
        loops = {
            "key": numba_loops.key_loop,
            "selection": numba_loops.selection_loop,
            "rank": numba_loops.rank_loop,
            "masked": numba_loops.masked_loop,
            "ar1": numba_loops.ar1_loop,
            "prefix": numba_loops.prefix_loop,
            "sort": numba_loops.sort_loop,
        }
        loop = inspect.unwrap(loops[name])
        fn = numba.njit(parallel=True, cache=True, nogil=True)(loop)
        _compiled[name] = fn
    return fn


def _np(t: Tensor) -> np.ndarray:
    """``t`` as a NumPy array: its own memory where contiguous, else a contiguous copy.

    The loops write their outputs (and ``finish``'s scores) through such views.
    """
    return t.detach().contiguous().numpy()


def _float(dtype: torch.dtype) -> type[np.floating[Any]]:
    """The NumPy scalar type of a float32 or float64 tensor.

    Scalars passed in it keep the loops' arithmetic in that dtype.
    """
    return np.float32 if dtype == torch.float32 else np.float64


def _run(name: str, *args: Any) -> bool:
    """Run loop ``name`` on ``args`` in torch's thread count; False where numba fails.

    A failure (numba fails when it compiles, before the loop runs) warns once and turns
    the loops off from then on.
    """
    try:
        _threads()
        _jit(name)(*args)
    except Exception as err:
        _fail(err)
        return False
    return True


def baseline_counts(
    g: Tensor, rank: Tensor, n: Tensor, w: Tensor, a_sel: Tensor, scale: float, tiny: float
) -> tuple[Tensor, Tensor, Tensor] | None:
    """:func:`tl_geom.geometry.fused.key_passes` in one loop per row, or None if unavailable.

    Shapes as there: ``g [b, t, nn, L]``, ``rank [b, t, L]``, ``n [nn]``, ``w [b, 1, 1,
    L]``, ``a_sel [b, t, nn, 1]``. Returns ``(#FP, #TP, flagged)`` ``[b, t, nn]``.
    """
    b, t, nn, length = g.shape
    fp = torch.empty((b, t, nn), dtype=torch.int64)
    tp = torch.empty_like(fp)
    flag = torch.empty((b, t, nn), dtype=torch.bool)
    ran = _run(
        "key",
        _np(g.reshape(-1, length)),
        _np(rank.reshape(-1, length)),
        _np(w.reshape(b, length).to(g.dtype)),
        _np(a_sel.reshape(-1).to(g.dtype)),
        _np(n.to(torch.int64)),
        t,
        _float(g.dtype)(scale),
        _float(g.dtype)(tiny),
        fp.numpy().reshape(-1),
        tp.numpy().reshape(-1),
        flag.numpy().reshape(-1),
    )
    return (fp, tp, flag) if ran else None


def selection_counts(
    g: Tensor,
    rank: Tensor,
    n: Tensor,
    key_mask: Tensor | None,
    bound: Tensor,
    finish: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, ...] | None:
    """``top_n.separate``'s ``(#FP, #TP, min_I g, max_rest g, far, near, flagged)``.

    For the selections ``rank < N``: ``g [b, c, nn, L]``, ``rank [b, c, L]`` (any real
    dtype), ``n [nn]``, ``key_mask [b, c, L]`` or None (every key present), ``bound``
    broadcastable to ``[b, c, nn]``. ``finish = (a [b, c, L], v_sq [b, L])``: ``g``
    (contiguous) holds ``<2 s, v_k>`` and becomes ``(g - a v_sq) a`` in place first, as
    ``top_n.selection_metrics`` forms the scores. None where the loop is unavailable
    (``g`` then untouched: a loop fails when it compiles, before it runs).
    """
    shape, length = tuple(g.shape[:-1]), g.shape[-1]
    nn = shape[-1]
    entries = g.numel() // length
    if key_mask is None:
        keys, rows_per_mask = torch.ones((1, length), dtype=torch.bool), entries
    else:
        keys, rows_per_mask = key_mask.expand(*shape[:-1], length).reshape(-1, length), nn
    e2 = (2 * bound).to(g.dtype).expand(shape).reshape(-1)
    scalar = _float(g.dtype)
    if finish is None:  # unused inputs, in g's dtype: the same compiled signature
        a = v_sq = torch.zeros((1, 1), dtype=g.dtype)
        per_head = 1
    else:
        if not g.is_contiguous():
            raise ValueError("selection_counts(finish=...) writes g in place: g must be contiguous")
        a, v_sq = finish
        per_head = a.shape[1]
        a, v_sq = a.reshape(-1, length).to(g.dtype), v_sq.to(g.dtype)
    counts = [torch.empty(shape, dtype=torch.int64) for _ in range(2)]
    thresholds = [torch.empty(shape, dtype=g.dtype) for _ in range(2)]
    keys_at = [torch.empty(shape, dtype=torch.int64) for _ in range(2)]
    flag = torch.empty(shape, dtype=torch.bool)
    outs = (*counts, *thresholds, *keys_at, flag)
    ran = _run(
        "selection",
        _np(g.reshape(-1, length)),  # a view of g where contiguous (finish writes through it)
        _np(rank.reshape(-1, length)),
        _np(n.to(torch.int64)),
        _np(keys),
        rows_per_mask,
        _np(e2),
        scalar(torch.finfo(g.dtype).min),
        scalar(np.inf),
        _np(a),
        _np(v_sq),
        per_head,
        finish is not None,
        *(o.numpy().reshape(-1) for o in outs),
    )
    return outs if ran else None


def masked_weights(a: Tensor, rank: Tensor, n: Tensor, out: Tensor) -> bool:
    """``out [b, c, nn, L] = (rank < n_j) * a``, the selections' weights; False if unavailable.

    ``a``, ``rank`` ``[b, c, L]``; ``out`` contiguous, in ``a``'s dtype.
    """
    length = a.shape[-1]
    return _run(
        "masked",
        _np(a.reshape(-1, length)),
        _np(rank.reshape(-1, length)),
        _np(n.to(torch.int64)),
        out.reshape(-1, length).numpy(),
    )


def prefix_sums(a: Tensor, rank: Tensor, n: Tensor, v: Tensor) -> Tensor | None:
    """``s [b, c, nn, d]``: each top-N selection's ``sum_{rank_k < N} a_k v_k``, or None.

    ``a``, ``rank`` ``[b, c, L]`` (the ranks a permutation of ``0..L-1`` per row, any
    real dtype, exact), ``v [b, L, d]``, ``n [nn]`` (any order). The masked matmul
    ``((rank < N) a) @ V`` of ``top_n.selection_metrics`` as running sums in rank
    order (the issue's "prefix sums"): the sets are nested, so ``max(N) d`` products
    per row instead of ``nn L d``. Rounded in another order than the matmul, within the
    same certified bound (``certify.score_bound``: any order of a sum of N terms), so
    the same counts; ``r_max``, ``r_min`` can differ in the last bits. 6.5-8.5 against
    21-23 ms (the weights loop and the matmul) for an all-query chunk
    ``[9, 64, 10, 1024]``, N up to 512, at 2 threads.
    """
    b, c, length = a.shape
    out = torch.empty((b, c, n.shape[0], v.shape[-1]), dtype=a.dtype)
    ran = _run(
        "prefix",
        _np(a.reshape(-1, length)),
        _np(v.to(a.dtype)),
        _np(rank.reshape(-1, length)),
        _np(n.to(torch.int64)),
        c,
        out.numpy().reshape(b * c, n.shape[0], v.shape[-1]),
    )
    return out if ran else None


def ranks_of_uniforms(u: Tensor) -> Tensor | None:
    """Each key's rank in its row of ``u [..., L]`` (float64 in ``[0, 1)``), or None.

    What ``torch.argsort(u, stable=True)`` and its inverse permutation give, bit for bit
    (ties in ``u`` by position), in 0.95 against 4.9 ms for ``[144, 1024]`` at 2
    threads (:func:`tl_geom.geometry.baseline.random_ranks`' draws of one layer).
    """
    length = u.shape[-1]
    rank = torch.empty(u.shape, dtype=torch.int64)
    ran = _run("rank", _np(u.reshape(-1, length)), rank.numpy().reshape(-1, length))
    return rank if ran else None


def subset_sums(y: Tensor, rank: Tensor, n: Tensor) -> Tensor | None:
    """``[b, t, nn, e]`` sums of ``y [b, L, e]`` over ``{k : rank[b, t, k] < n_j}``, or None.

    ``rank [b, t, L]`` holds permutations of ``0..L-1`` (any real dtype, exact). The
    baseline's masked sum ``sel @ [y | w]`` (``baseline.random_counts``) summed in
    another order: within the same certified bound (a sum of N terms in any order
    rounds by at most ``gamma_N`` of their absolute sum), so the same counts: 1.5 ms
    against 6.4 ms for the selection and masked matmul (9 heads, 16 draws, 10 N,
    L = 1024, 2 threads). The loop of :func:`prefix_sums` with unit weights (``1.0 * y``
    is ``y``: the plain running sums).
    """
    b, t, length = rank.shape
    out = torch.empty((b, t, n.shape[0], y.shape[-1]), dtype=y.dtype)
    ran = _run(
        "prefix",
        np.ones((b * t, length), dtype=_float(y.dtype)),
        _np(y),
        _np(rank.reshape(-1, length)),
        _np(n.to(torch.int64)),
        t,
        out.numpy().reshape(b * t, n.shape[0], y.shape[-1]),
    )
    return out if ran else None


def ar1_chain(z: Tensor, scale: Tensor, rho: Tensor) -> bool:
    """Run the AR(1) chains of ``z [B, S, L, d]`` in place; False where unavailable.

    ``z_t = z_t scale_b + rho_b z_{t-1}`` along positions, ``scale``, ``rho`` ``[B]``
    (any shape of B elements): ``simulation._sample_rows``' loop
    over positions, bit for bit (the same two products and sum, in z's dtype), one chain
    per thread instead of one position at a time over all chains. ``z`` must be
    contiguous (written through its NumPy view); on False it is untouched.
    """
    if not z.is_contiguous():
        raise ValueError("ar1_chain writes z in place: z must be contiguous")
    return _run(
        "ar1",
        z.detach().numpy(),
        _np(scale.reshape(-1).to(z.dtype)),
        _np(rho.reshape(-1).to(z.dtype)),
    )


def sorted_rank(a: Tensor) -> tuple[Tensor, Tensor] | None:
    """``top_n.sorted_rank`` of a float64 ``a [..., L]`` by a radix sort, or None.

    The weights sorted descending (stable: ties keep position order) and each key's
    rank, bit for bit what ``torch.sort(descending=True, stable=True)`` and its inverse
    give (signed zeros and NaN as torch orders them): 8.4 against 14.4 ms for an
    all-query chunk ``[9, 64, 1024]`` at 2 threads. None for other dtypes, an empty
    ``a``, or where unavailable.
    """
    if a.dtype != torch.float64 or a.numel() == 0:
        return None
    length = a.shape[-1]
    a_sorted = torch.empty(a.shape, dtype=a.dtype)
    rank = torch.empty(a.shape, dtype=torch.int64)
    ran = _run(
        "sort",
        _np(a.reshape(-1, length)),
        a_sorted.numpy().reshape(-1, length),
        rank.numpy().reshape(-1, length),
    )
    return (a_sorted, rank) if ran else None
