"""The loop bodies of :mod:`tl_geom.geometry.kernels`, as numba compiles them.

Plain Python over NumPy arrays, one function per loop; ``kernels`` imports numba on
first use, sets :data:`numba` here (the loops read ``numba.prange`` from this module's
globals) and compiles them with ``njit(parallel=True, cache=True)``. Run uncompiled
(``NUMBA_DISABLE_JIT=1``) they give the same results, slowly.
"""

from typing import Any

import numpy as np

__all__ = [
    "ar1_loop",
    "key_loop",
    "masked_loop",
    "prefix_loop",
    "rank_loop",
    "selection_loop",
    "sort_loop",
]

numba: Any = None
"""Set by ``kernels`` before it compiles a loop."""


def key_loop(
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
        # float64 infinities are fine here: the thresholds are only compared, exactly
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


def selection_loop(
    g: Any,
    rank: Any,
    n: Any,
    present: Any,
    rows_per_mask: int,
    e2: Any,
    lowest: Any,
    inf: Any,
    a: Any,
    v_sq: Any,
    rows_per_head: int,
    finish: bool,
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
    keys off a set counted as the +-inf they hold there. ``lowest`` and ``inf`` come in
    ``g``'s dtype, so the thresholds and their windows are formed and rounded in it (a
    float64 literal would widen float32 arithmetic). With ``finish``, ``g`` holds
    ``<2 s, v_k>`` and is first made ``g_k = (<2 s, v_k> - a_k ||v_k||^2) a_k`` in place,
    as ``top_n.selection_metrics`` forms it (``a [rows, L]``, ``v_sq [heads, L]``, the
    head of a row ``row // rows_per_head``).
    """
    entries, length = g.shape
    nn = n.shape[0]
    for e in numba.prange(entries):
        row, big_n, p = e // nn, n[e % nn], e // rows_per_mask
        head = row // rows_per_head
        # Sweep 1, the two thresholds: selects and min/max, no branch (the selection
        # is random along a row, a branch on it mispredicts; this loop vectorises).
        lo_sel, hi_rest, n_sel = inf, -inf, 0
        for k in range(length):
            if finish:  # the product rounded, then the difference, then the scaling
                ak = a[row, k]
                g[e, k] = (g[e, k] - ak * v_sq[head, k]) * ak
            gk = g[e, k]
            on = rank[row, k] < big_n
            rest = (~on) & present[p, k]
            n_sel += on
            lo_sel = min(lo_sel, gk if on else inf)
            hi_rest = max(hi_rest, gk if rest else -inf)
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


def masked_loop(a: Any, rank: Any, n: Any, out: Any) -> None:
    """``out[e, k] = sel * a[e // nn, k]``, ``sel = 1.0 if rank < n[e % nn] else 0.0``.

    The selection's weights as ``top_n.selection_metrics`` forms them (a comparison into
    0/1 floats, then a product), in one pass: ``1.0 * a`` is ``a`` and ``0.0 * a`` keeps
    the product's sign of zero.
    """
    rows, length = a.shape
    nn = n.shape[0]
    for e in numba.prange(rows * nn):
        row, big_n = e // nn, n[e % nn]
        for k in range(length):
            ak = a[row, k]
            out[e, k] = ak if rank[row, k] < big_n else 0.0 * ak


def rank_loop(u: Any, rank: Any) -> None:
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


def prefix_loop(a: Any, v: Any, rank: Any, n: Any, per_head: int, s: Any) -> None:
    """``s[r, j] = sum_{k : rank[r, k] < n[j]} a[r, k] v[r // per_head, k]`` in rank order.

    The top-N selections of one weight row are nested, so one running sum over its
    first ``max(n)`` keys in rank order (descending weight) gives every N's ``s_N``
    (``n`` in any order); each term ``a_k v_k`` is rounded, then added (no FMA). With
    unit weights, the baseline's sums over its nested random subsets (``y`` for ``v``,
    one row per draw, ``per_head`` draws).
    """
    rows, length = a.shape
    nn, width, n_max = n.shape[0], v.shape[2], 0
    for j in range(nn):
        n_max = max(n_max, n[j])
    for r in numba.prange(rows):
        v_head = v[r // per_head]
        order = np.empty(n_max, np.int64)  # the keys of ranks 0 .. max(n) - 1
        for k in range(length):
            at = int(rank[r, k])
            if at < n_max:
                order[at] = k
        stop = np.zeros(n_max + 1, np.bool_)  # the running sum is some n_j's sum here
        for j in range(nn):
            stop[n[j]] = True
        acc = np.zeros(width, v.dtype)
        for i in range(n_max):
            k = order[i]
            ak, row = a[r, k], v_head[k]
            for c in range(width):
                acc[c] += ak * row[c]
            if stop[i + 1]:
                for j in range(nn):
                    if n[j] == i + 1:
                        s[r, j, :] = acc


def ar1_loop(z: Any, scale: Any, rho: Any) -> None:
    """The AR(1) chains of ``simulation._sample_rows`` in place, one chain per (head, sample).

    ``z [B, S, L, d]``: ``z_t = z_t scale_b + rho_b z_{t-1}`` for ``t = 1 .. L - 1``, with
    torch's roundings (the two products, then their sum; no FMA).
    """
    heads, samples, length, d = z.shape
    for c in numba.prange(heads * samples):
        b, s = c // samples, c % samples
        sc, r = scale[b], rho[b]
        for t in range(1, length):
            for k in range(d):
                z[b, s, t, k] = z[b, s, t, k] * sc + r * z[b, s, t - 1, k]


def sort_loop(a: Any, a_sorted: Any, rank: Any) -> None:
    """Each float64 row of ``a`` sorted descending, stable, and each key's rank in it.

    What ``torch.sort(a, descending=True, stable=True)`` and the inverse permutation
    give (``top_n.sorted_rank``): an LSD radix sort, 8 bits a pass, on keys that order
    as the floats do, descending: ``-0.0`` keyed as ``+0.0`` (they compare equal, so
    position decides), NaN first (torch sorts NaN as the largest). Radix passes are
    stable, so ties keep position order; a pass whose digit all keys share is skipped.
    """
    rows, length = a.shape
    sign = np.uint64(0x8000000000000000)
    low = np.uint64(0x7FFFFFFFFFFFFFFF)
    for r in numba.prange(rows):
        bits_row = a[r].view(np.uint64)
        keys = np.empty(length, np.uint64)
        for k in range(length):
            bits = bits_row[k]
            if a[r, k] != a[r, k]:  # NaN
                keys[k] = np.uint64(0)
                continue
            if bits == sign:
                bits = np.uint64(0)  # -0.0
            keys[k] = bits if bits & sign else ~bits & low
        hist = np.zeros((8, 257), np.int64)
        for k in range(length):
            key = keys[k]
            for p in range(8):
                hist[p, ((key >> np.uint64(8 * p)) & np.uint64(255)) + 1] += 1
        order = np.arange(length)
        spare = np.empty(length, np.int64)
        for p in range(8):
            h = hist[p]
            shared = False
            for b in range(1, 257):
                shared = shared or h[b] == length
            if shared:
                continue
            for b in range(256):
                h[b + 1] += h[b]
            shift = np.uint64(8 * p)
            for i in range(length):
                k = order[i]
                digit = (keys[k] >> shift) & np.uint64(255)
                spare[h[digit]] = k
                h[digit] += 1
            order, spare = spare, order
        for i in range(length):
            k = order[i]
            a_sorted[r, i] = a[r, k]
            rank[r, k] = i
