"""Exact counts of one selection in rational arithmetic (spec: geometry.md, "Metrics").

The fallback of the certified counts (``certify.py``): a row whose floating-point scores
leave a comparison undecided is recounted here, in integers, from the float64 inputs
taken as exact rationals (the same numbers the ``fractions.Fraction`` reference of the
tests reads). Every float64 is ``p / 2^e``, so with ``Q`` the largest denominator of the
products ``alpha_k v_kc``, ``Y_kc = Q alpha_k v_kc`` is an integer and

    Q^2 g_k = 2 <S, Y_k> - ||Y_k||^2,   S = sum_{i in I} Y_i

compares exactly (Python integers do not round). Only the keys whose float scores lie
within the rounding bound of a threshold are scored exactly; the rest were decided by
the float scores already.
"""

import torch
from torch import Tensor

__all__ = ["exact_row_counts"]


def _scaled(a: Tensor, v: Tensor, keys: list[int]) -> dict[int, list[tuple[int, int]]]:
    """``{k: [(p, q), ...]}`` with ``alpha_k v_kc = p / q`` (``q`` a power of two)."""
    a_list = a[keys].tolist()
    v_list = v[keys].tolist()
    out: dict[int, list[tuple[int, int]]] = {}
    for k, ak, vk in zip(keys, a_list, v_list, strict=True):
        pa, qa = float(ak).as_integer_ratio()
        out[k] = []
        for x in vk:
            pv, qv = float(x).as_integer_ratio()
            out[k].append((pa * pv, qa * qv))
    return out


def exact_scores(a: Tensor, v: Tensor, selected: list[int], keys: list[int]) -> dict[int, int]:
    """``Q^2 g_k`` for each of ``keys`` with ``s`` the sum over ``selected`` (exact).

    ``a [L]`` and ``v [L, d]`` are float64; ``Q`` is one common power of two, so the
    scores of one call compare exactly with each other.
    """
    fracs = _scaled(a, v, sorted(set(selected) | set(keys)))
    big_q = max((q for row in fracs.values() for _, q in row), default=1)
    ints = {k: [p * (big_q // q) for p, q in row] for k, row in fracs.items()}
    d = v.shape[-1]
    s = [sum(ints[i][c] for i in selected) for c in range(d)]
    return {
        k: 2 * sum(sc * yc for sc, yc in zip(s, ints[k], strict=True)) - sum(y * y for y in ints[k])
        for k in keys
    }


def exact_row_counts(
    a: Tensor,
    v: Tensor,
    selected: Tensor,
    present: Tensor,
    g_hat: Tensor,
    bound: Tensor,
) -> tuple[int, int, int, int]:
    """Exact ``(#FP, #TP, far, near)`` of one selection from rounded scores.

    ``g_hat [L]`` are float scores with ``|g_hat_k - g_k| <= bound_k`` for every present
    key (``bound`` ``[L]`` or a scalar); ``selected``/``present`` are ``[L]`` masks
    (``selected`` within ``present``). The exact ``t = min_I g`` lies in
    ``[min_I (g_hat - e), min_I (g_hat + e)]``; a key whose interval
    ``[g_hat - e, g_hat + e]`` misses that range is on a known side of ``t``. The
    others, and the candidates for ``t`` itself, are scored exactly; the same for
    ``max_rest g``. ``far``/``near`` are the keys attaining the exact thresholds (the
    first by position on an exact tie), or -1 where the set is empty.
    """
    selected, present = selected.cpu(), present.cpu()
    g_hat = g_hat.cpu().double()
    e = torch.as_tensor(bound, dtype=torch.float64).cpu().expand_as(g_hat)
    rest = present & ~selected
    lo, hi = g_hat - e, g_hat + e
    inf = torch.tensor(float("inf"), dtype=torch.float64)
    t_min_lo = float(torch.where(selected, lo, inf).min())
    t_min_hi = float(torch.where(selected, hi, inf).min())
    t_max_lo = float(torch.where(rest, lo, -inf).max())
    t_max_hi = float(torch.where(rest, hi, -inf).max())
    win_min = present & (lo <= t_min_hi) & (hi >= t_min_lo)
    win_max = present & (lo <= t_max_hi) & (hi >= t_max_lo)
    keys = torch.nonzero(win_min | win_max).flatten().tolist()
    chosen = torch.nonzero(selected).flatten().tolist()
    exact = exact_scores(a.cpu().double(), v.cpu().double(), chosen, keys)
    sel_l, rest_l = selected.tolist(), rest.tolist()
    wmin_l, wmax_l = win_min.tolist(), win_max.tolist()
    cand_min = [k for k in keys if sel_l[k] and wmin_l[k]]
    cand_max = [k for k in keys if rest_l[k] and wmax_l[k]]
    far = min(cand_min, key=lambda k: (exact[k], k)) if cand_min else -1
    near = max(cand_max, key=lambda k: (exact[k], -k)) if cand_max else -1
    fp = int((rest & ~win_min & (lo > t_min_hi)).sum())
    tp = int((selected & ~win_max & (lo > t_max_hi)).sum())
    if far >= 0:
        fp += sum(1 for k in keys if rest_l[k] and wmin_l[k] and exact[k] >= exact[far])
    if near >= 0:
        tp += sum(1 for k in keys if sel_l[k] and wmax_l[k] and exact[k] > exact[near])
    return fp, tp, far, near
