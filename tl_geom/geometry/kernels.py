"""The certified counting passes as fused CPU loops, compiled by numba where installed.

The counts of P and R (``certify.py``) are a handful of elementwise passes over the
``[..., N, L]`` scores: thresholds over the selection and the rest, then four
comparisons. In torch each pass reads and writes a whole score-sized buffer; here one
loop per score row takes both thresholds in a first sweep and the four counts in a
second, while the row (8 KiB at L = 1024) is in cache. Measured at L = 1024, 2 threads:
the baseline's passes of one layer (9 heads, 16 draws, 10 N) 2.3 against 7.1 ms eager,
the top-N passes of one all-query layer (``benchmarks/bench_separability.py``) in the
module's figures below.

The loops perform the same IEEE operations in the same order as the torch passes they
replace (:func:`tl_geom.geometry.fused.key_passes` and :func:`tl_geom.geometry.top_n.separate`
with a bound), with no fast-math and no contraction to FMA, so counts, thresholds,
attaining keys and flags are theirs bit for bit (tests/test_kernels.py). numba is the
``fast`` extra (``pip install tl-geom[fast]``; ``make venv`` installs it). Without it,
or with ``TL_GEOM_NUMBA=0`` in the environment, or on an accelerator, the torch passes
run. Compiling takes 1-2 s per dtype on first use; numba caches the machine code on
disk for later processes.
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

__all__ = [
    "baseline_counts",
    "enabled",
    "ranks_of_uniforms",
    "selection_counts",
    "subset_sums",
    "use_numba",
]

numba: Any = None
"""The numba module once a loop is first compiled (importing it takes about 0.5 s)."""

_state: dict[str, Any] = {
    "on": importlib.util.find_spec("numba") is not None  # the ``fast`` extra
    and os.environ.get("TL_GEOM_NUMBA", "") != "0"
}


def enabled(t: Tensor) -> bool:
    """Whether the numba loops take scores ``t``: numba installed, not disabled, CPU."""
    return bool(_state["on"]) and t.device.type == "cpu"


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
    _load()
    pool = int(numba.config.NUMBA_NUM_THREADS)  # pyright: ignore[reportPrivateImportUsage, reportAttributeAccessIssue]
    numba.set_num_threads(max(1, min(torch.get_num_threads(), pool)))


def _fail(err: Exception) -> None:
    warnings.warn(f"numba counting loops unavailable ({err!r}); torch passes", stacklevel=3)
    _state["on"] = False


def _key_loop(
    g: Any,
    rank: Any,
    w: Any,
    a_sel: Any,
    n: Any,
    draws: int,
    scale: Any,
    tiny: Any,
    fp: Any,
    tp: Any,
    flag: Any,
) -> None:
    """:func:`tl_geom.geometry.fused.key_passes` per score row ``e`` (``[b t nn]`` flat).

    ``e_k = (w_k + 2 A_J) w_k scale + tiny`` as torch forms it (``2 A_J`` exact), in
    ``g``'s dtype (``scale``, ``tiny`` given in it, so no operation widens).
    """
    entries, length = g.shape
    nn = n.shape[0]
    for e in numba.prange(entries):
        big_n = n[e % nn]
        row = e // nn
        head = row // draws
        a2 = a_sel[e] + a_sel[e]
        t_min_lo, t_min_hi = np.inf, np.inf
        t_max_lo, t_max_hi = -np.inf, -np.inf
        for k in range(length):  # branch-free: the selection is random along a row
            wk = w[head, k]
            ek = (wk + a2) * wk * scale + tiny
            lo, hi = g[e, k] - ek, g[e, k] + ek
            on = rank[row, k] < big_n
            t_min_lo = min(t_min_lo, lo if on else np.inf)
            t_min_hi = min(t_min_hi, hi if on else np.inf)
            t_max_lo = max(t_max_lo, -np.inf if on else lo)
            t_max_hi = max(t_max_hi, -np.inf if on else hi)
        wide, narrow, true_pos, touch = 0, 0, 0, 0
        for k in range(length):
            wk = w[head, k]
            ek = (wk + a2) * wk * scale + tiny
            lo, hi = g[e, k] - ek, g[e, k] + ek
            wide += hi >= t_min_lo
            narrow += lo > t_min_hi
            true_pos += lo > t_max_hi
            touch += hi >= t_max_lo
        fp[e] = wide - big_n
        tp[e] = true_pos
        flag[e] = (wide - narrow != 1) or (touch - true_pos != 1)


def _selection_loop(
    g: Any,
    rank: Any,
    n: Any,
    present: Any,
    rows_per_mask: int,
    e2: Any,
    lowest: Any,
    fp: Any,
    tp: Any,
    t_min: Any,
    t_max: Any,
    far: Any,
    near: Any,
    flag: Any,
) -> None:
    """``top_n.separate`` with a bound, per score row ``e`` (``[rows nn]`` flat).

    The selection of row ``e`` is ``rank[e // nn] < n[e % nn]`` (one rank row shared by
    the N values, read from cache), its present keys ``present[e // rows_per_mask]``.
    Thresholds and attaining keys as ``min``/``max`` over the penalised rows (the first
    key on ties, as torch's); the counts as ``certify.window_counts`` forms them, the
    keys off a set counted as the +-inf they hold there.
    """
    entries, length = g.shape
    nn = n.shape[0]
    for e in numba.prange(entries):
        row, big_n, p = e // nn, n[e % nn], e // rows_per_mask
        # Sweep 1, the two thresholds: selects and min/max, no branch (the selection
        # is random along a row, a branch on it mispredicts; this loop vectorises).
        lo_sel, hi_rest, n_sel = np.inf, -np.inf, 0
        for k in range(length):
            gk = g[e, k]
            on = rank[row, k] < big_n
            rest = (~on) & present[p, k]
            n_sel += on
            lo_sel = min(lo_sel, gk if on else np.inf)
            hi_rest = max(hi_rest, gk if rest else -np.inf)
        bound = e2[e]
        lo_min, hi_min = max(lo_sel - bound, lowest), max(lo_sel + bound, lowest)
        lo_max, hi_max = max(hi_rest - bound, lowest), max(hi_rest + bound, lowest)
        # Sweep 2, the four counts and the first key attaining each threshold.
        false_pos, wide, true_pos, touch = 0, 0, 0, 0
        i_sel, i_rest = length, length
        for k in range(length):
            gk = g[e, k]
            on = rank[row, k] < big_n
            rest = (~on) & present[p, k]
            true_pos += on & (gk > hi_max)
            touch += on & (gk >= lo_max)
            false_pos += rest & (gk >= lo_min)
            wide += rest & (gk > hi_min)
            i_sel = min(i_sel, k if on & (gk == lo_sel) else length)
            i_rest = min(i_rest, k if rest & (gk == hi_rest) else length)
        # the +inf off the selection count as torch counts them, then n_off comes off
        n_off = length - n_sel
        true_pos += n_off * (np.inf > hi_max) - n_off
        touch += n_off * (np.inf >= lo_max) - n_off
        fp[e], tp[e] = false_pos, true_pos
        flag[e] = (wide != false_pos) or (touch != true_pos)
        # an empty set: torch's min (max) of all +inf (-inf) is that, at key 0
        far[e] = i_sel if i_sel < length else 0
        near[e] = i_rest if i_rest < length else 0
        t_min[e] = g[e, i_sel] if i_sel < length else np.inf  # the first key's value
        t_max[e] = g[e, i_rest] if i_rest < length else -np.inf


def _rank_loop(u: Any, rank: Any) -> None:
    """``rank[r, k] = #{k' : (u_k', k') < (u_k, k)}`` per row: a stable sort's inverse.

    ``u`` in ``[0, 1)``: a counting sort into ``L`` buckets by ``floor(u L)`` (exact and
    monotone: ``L u`` is only rounded, never reordered), keys in index order within a
    bucket, then one insertion pass, stable (a key moves only past strictly larger
    ones), whose work is the few inversions inside buckets: ``O(L)`` per row for
    uniform ``u``, where a comparison sort is ``O(L log L)``. Any ``u`` gives the
    right ranks; only the time depends on their spread.
    """
    rows, length = u.shape
    for r in numba.prange(rows):
        start = np.zeros(length + 1, np.int64)
        for k in range(length):
            start[min(int(u[r, k] * length), length - 1) + 1] += 1
        for b in range(length):
            start[b + 1] += start[b]
        order = np.empty(length, np.int64)
        for k in range(length):
            b = min(int(u[r, k] * length), length - 1)
            order[start[b]] = k
            start[b] += 1
        for i in range(1, length):
            k, x, j = order[i], u[r, order[i]], i
            while j > 0 and u[r, order[j - 1]] > x:
                order[j] = order[j - 1]
                j -= 1
            order[j] = k
        for i in range(length):
            rank[r, order[i]] = i


def _subset_loop(y: Any, rank: Any, n: Any, draws: int, s: Any) -> None:
    """``s[b, t, j] = sum_{k : rank[b, t, k] < n[j]} y[b, k]``: running sums in rank order.

    The subsets of one draw are nested (:func:`tl_geom.geometry.baseline.random_ranks`),
    so one pass over the first ``max(n)`` keys in rank order gives every N's sum.
    """
    rows, length = rank.shape
    nn, width, n_max = n.shape[0], y.shape[2], 0
    for j in range(nn):
        n_max = max(n_max, n[j])
    for r in numba.prange(rows):
        y_head = y[r // draws]
        order = np.empty(n_max, np.int64)  # the keys of ranks 0 .. max(n) - 1
        for k in range(length):
            at = int(rank[r, k])
            if at < n_max:
                order[at] = k
        stop = np.zeros(n_max + 1, np.bool_)  # the running sum is some n_j's sum here
        for j in range(nn):
            stop[n[j]] = True
        acc = np.zeros(width, y.dtype)
        for i in range(n_max):
            row = y_head[order[i]]
            for c in range(width):
                acc[c] += row[c]
            if stop[i + 1]:
                for j in range(nn):
                    if n[j] == i + 1:
                        s[r, j, :] = acc


_compiled: dict[str, Any] = {}


def _load() -> None:
    global numba  # imported on first use; the loops read it from the module globals
    if numba is None:
        import numba as module

        numba = module


def _jit(name: str) -> Any:
    fn = _compiled.get(name)
    if fn is None:
        _load()
        # unwrapped: tests' import hook wraps every function in a runtime type check
        loops = {
            "key": _key_loop,
            "selection": _selection_loop,
            "rank": _rank_loop,
            "subset": _subset_loop,
        }
        loop = inspect.unwrap(loops[name])
        fn = numba.njit(parallel=True, cache=True, nogil=True)(loop)
        _compiled[name] = fn
    return fn


def _np(t: Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def baseline_counts(
    g: Tensor, rank: Tensor, n: Tensor, w: Tensor, a_sel: Tensor, scale: float, tiny: float
) -> tuple[Tensor, Tensor, Tensor] | None:
    """:func:`tl_geom.geometry.fused.key_passes` in one loop per row, or None if unavailable.

    Shapes as there: ``g [b, t, nn, L]``, ``rank [b, t, L]``, ``n [nn]``, ``w [b, 1, 1,
    L]``, ``a_sel [b, t, nn, 1]``. Returns ``(#FP, #TP, flagged)`` ``[b, t, nn]``.
    """
    b, t, nn, length = g.shape
    np_dtype = np.float32 if g.dtype == torch.float32 else np.float64
    fp = torch.empty((b, t, nn), dtype=torch.int64)
    tp = torch.empty_like(fp)
    flag = torch.empty((b, t, nn), dtype=torch.bool)
    try:
        _threads()
        _jit("key")(
            _np(g.reshape(-1, length)),
            _np(rank.reshape(-1, length)),
            _np(w.reshape(b, length).to(g.dtype)),
            _np(a_sel.reshape(-1).to(g.dtype)),
            _np(n.to(torch.int64)),
            t,
            np_dtype(scale),
            np_dtype(tiny),
            fp.numpy().reshape(-1),
            tp.numpy().reshape(-1),
            flag.numpy().reshape(-1),
        )
    except Exception as err:
        _fail(err)
        return None
    return fp, tp, flag


def selection_counts(
    g: Tensor, rank: Tensor, n: Tensor, key_mask: Tensor | None, bound: Tensor
) -> tuple[Tensor, ...] | None:
    """``top_n.separate``'s ``(#FP, #TP, min_I g, max_rest g, far, near, flagged)``.

    For the selections ``rank < N``: ``g [b, c, nn, L]``, ``rank [b, c, L]`` (any real
    dtype), ``n [nn]``, ``key_mask [b, c, L]`` or None (every key present), ``bound``
    broadcastable to ``[b, c, nn]``. None where the loop is unavailable.
    """
    shape, length = tuple(g.shape[:-1]), g.shape[-1]
    nn = shape[-1]
    entries = g.numel() // length
    if key_mask is None:
        keys, rows_per_mask = torch.ones((1, length), dtype=torch.bool), entries
    else:
        keys, rows_per_mask = key_mask.expand(*shape[:-1], length).reshape(-1, length), nn
    e2 = (2 * bound).to(g.dtype).expand(shape).reshape(-1)
    np_dtype = np.float32 if g.dtype == torch.float32 else np.float64
    lowest = np_dtype(torch.finfo(g.dtype).min)
    counts = [torch.empty(shape, dtype=torch.int64) for _ in range(2)]
    thresholds = [torch.empty(shape, dtype=g.dtype) for _ in range(2)]
    keys_at = [torch.empty(shape, dtype=torch.int64) for _ in range(2)]
    flag = torch.empty(shape, dtype=torch.bool)
    outs = (*counts, *thresholds, *keys_at, flag)
    try:
        _threads()
        _jit("selection")(
            _np(g.reshape(-1, length)),
            _np(rank.reshape(-1, length)),
            _np(n.to(torch.int64)),
            _np(keys),
            rows_per_mask,
            _np(e2),
            lowest,
            *(o.numpy().reshape(-1) for o in outs),
        )
    except Exception as err:
        _fail(err)
        return None
    return outs


def ranks_of_uniforms(u: Tensor) -> Tensor | None:
    """Each key's rank in its row of ``u [..., L]`` (float64 in ``[0, 1)``), or None.

    What ``torch.argsort(u, stable=True)`` and its inverse permutation give, bit for bit
    (ties in ``u`` by position), in 0.95 against 4.9 ms for ``[144, 1024]`` at 2
    threads (:func:`tl_geom.geometry.baseline.random_ranks`' draws of one layer).
    """
    length = u.shape[-1]
    rank = torch.empty(u.shape, dtype=torch.int64)
    try:
        _threads()
        _jit("rank")(_np(u.reshape(-1, length)), rank.numpy().reshape(-1, length))
    except Exception as err:
        _fail(err)
        return None
    return rank


def subset_sums(y: Tensor, rank: Tensor, n: Tensor) -> Tensor | None:
    """``[b, t, nn, e]`` sums of ``y [b, L, e]`` over ``{k : rank[b, t, k] < n_j}``, or None.

    ``rank [b, t, L]`` holds permutations of ``0..L-1`` (any real dtype, exact). The
    baseline's masked sum ``sel @ [y | w]`` (``baseline.random_counts``) summed in
    another order: within the same certified bound (a sum of N terms in any order
    rounds by at most ``gamma_N`` of their absolute sum), so the same counts: 1.5 ms
    against 6.4 ms for the selection and masked matmul (9 heads, 16 draws, 10 N,
    L = 1024, 2 threads).
    """
    b, t, length = rank.shape
    out = torch.empty((b, t, n.shape[0], y.shape[-1]), dtype=y.dtype)
    try:
        _threads()
        _jit("subset")(
            _np(y),
            _np(rank.reshape(-1, length)),
            _np(n.to(torch.int64)),
            t,
            out.numpy().reshape(b * t, n.shape[0], y.shape[-1]),
        )
    except Exception as err:
        _fail(err)
        return None
    return out
