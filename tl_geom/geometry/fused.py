"""The baseline's counting passes, fused into one compiled kernel where enabled.

Besides its two matmuls, ``random_counts`` makes about a dozen elementwise passes over
the ``[rows, draws, N, L]`` scores (the selection mask, two masked reductions, four
certified counts). ``torch.compile`` fuses them into loops that read each row of scores
once or twice while it is in cache: measured at L = 1024 (9 heads, 16 draws, 10 N, one
thread) 30 ms eager against 1.5 ms compiled per layer, with identical results (same
comparisons, integer counts). Since the eager passes write into kept buffers
(``scratch``) they take about 11 ms per layer (``benchmarks/profile_window.py``).

Compiling costs about 30 s the first time in a process tree (inductor caches the kernel
on disk for later runs), so it is opt-in: ``TL_GEOM_COMPILE=1`` in the environment or
:func:`set_compiled`. Any failure to compile falls back to the eager function. Without
it, on the CPU, numba's loop (``kernels.py``, the ``fast`` extra; 1-2 s to compile,
cached on disk) does the same in 2.3 ms per layer at 2 threads, 7.1 ms eager.
"""

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from tl_geom.geometry import kernels
from tl_geom.geometry.certify import count_where
from tl_geom.geometry.scratch import scratch

__all__ = ["baseline_passes", "compiled", "set_compiled"]

_state: dict[str, object] = {"on": os.environ.get("TL_GEOM_COMPILE", "") == "1", "fn": None}


def set_compiled(on: bool) -> None:
    """Use the compiled kernel (``True``) or the eager passes (``False``)."""
    _state["on"] = bool(on)


@contextmanager
def compiled(on: bool) -> Iterator[None]:
    """Within the block, use the compiled kernel or not; the previous choice after it.

    ``compiled(False)`` leaves the environment's choice (``TL_GEOM_COMPILE``) as it is,
    so a run without ``--compile`` in a ``TL_GEOM_COMPILE=1`` shell still compiles.
    """
    before = _state["on"]
    _state["on"] = bool(on) or bool(before)
    try:
        yield
    finally:
        _state["on"] = before


def key_passes(
    g: Tensor, rank: Tensor, n: Tensor, w: Tensor, a_sel: Tensor, scale: float, tiny: float
) -> tuple[Tensor, Tensor, Tensor]:
    """``(#FP, #TP, flagged)`` ``[b, t, nn]`` of the subsets ``J = {k : rank_k < N}``.

    ``g [b, t, nn, L]`` scores, ``rank [b, t, L]``, ``w [b, 1, 1, L]`` the norms
    ``||y_k||``, ``a_sel [b, t, nn, 1]`` their sums over J, ``A_J``. Each score's
    rounding error is at most (``certify.key_bounds``)
        e_k = scale (2 A_J + w_k) w_k + tiny,      scale = 8 gamma,
    so ``g_k`` lies in ``[lo_k, hi_k] = [g_hat_k - e_k, g_hat_k + e_k]`` and the exact
    thresholds in ``t_min in [min_J lo, min_J hi]``, ``t_max in [max_rest lo,
    max_rest hi]``. A key whose interval misses a threshold's is on a known side of it.
    Mask-free identities (every subset has N keys, all present):
        #FP = #{k : hi_k >= min_J lo} - N,   #TP = #{k : lo_k > max_rest hi},
    certified when exactly one key's interval meets each threshold's (the key attaining
    it); else the entry is flagged. Per key and per selection: a sink's large ``||y||``
    widens neither the small keys' windows nor those of selections without it.
    ``n`` is ``[nn]``, or any shape that broadcasts to ``[b, t, nn]``.
    """
    sel = rank.unsqueeze(-2) < n.unsqueeze(-1)
    inf = torch.tensor(float("inf"), dtype=g.dtype, device=g.device)
    w, a_sel = w.to(g.dtype), a_sel.to(g.dtype)  # e in g's dtype: its rounding is in scale
    e = (2 * a_sel + w) * w * scale + tiny
    lo, hi = g - e, g + e
    t_min_lo = torch.where(sel, lo, inf).amin(-1, keepdim=True)
    t_min_hi = torch.where(sel, hi, inf).amin(-1, keepdim=True)
    t_max_lo = torch.where(sel, -inf, lo).amax(-1, keepdim=True)
    t_max_hi = torch.where(sel, -inf, hi).amax(-1, keepdim=True)
    wide = (hi >= t_min_lo).sum(-1)
    narrow = (lo > t_min_hi).sum(-1)
    true_pos = (lo > t_max_hi).sum(-1)
    flagged = (wide - narrow != 1) | ((hi >= t_max_lo).sum(-1) - true_pos != 1)
    return wide - n, true_pos, flagged


def eager_passes(
    g: Tensor,
    rank: Tensor,
    n: Tensor,
    w: Tensor,
    a_sel: Tensor,
    scale: float,
    tiny: float,
    sel: Tensor | None = None,
    first_stage: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`key_passes`' counts and flags in two stages, cheaper without a compiler.

    Stage 1, one bound per selection (``E_J = scale (2 A_J + W) W + tiny``, ``W =
    max_k w_k``, at least every ``e_k``): four comparisons against scalar thresholds,
        #FP = #{k : g_k >= t_min - 2 E_J} - N,   #TP = #{k : g_k > t_max + 2 E_J},
    certified when only the threshold key lies within ``2 E_J`` of each. Stage 2,
    :func:`key_passes` on the entries stage 1 left undecided only (about 18% of them on
    SmolLM2 at L = 1024). Its intervals lie inside stage 1's, so whatever stage 1
    decides, :func:`key_passes` decides the same way: the result is :func:`key_passes`'
    bit for bit (counts and flags; tests/test_certify.py). ``sel``: the selection as 0/1
    floats where the caller has formed it already (else formed here from the ranks).
    ``first_stage=False`` goes to stage 2 for every entry: for float32 scores, whose
    uniform windows leave most entries undecided (82% on SmolLM2 at L = 1024, against
    13% in float64), stage 1 is wasted work. The result is the same either way.
    """
    # Every pass writes into one of two kept buffers (``scratch``): measured at L = 1024
    # (6 heads, 16 draws, 10 N, one thread) a comparison into a float64 buffer and a
    # float sum take 0.3 ms, a fresh bool tensor and its integer sum 1.4 ms, and
    # ``where(sel, g, inf)`` 2.5 ms. ``pen`` is -inf on J and +inf off it, so
    # max(g, pen) is g on J and min(g, pen) is g off J, without a select.
    pen = scratch("pen", tuple(g.shape), g.dtype, g.device)
    if sel is None:  # 1 on J, else 0
        sel = torch.lt(rank.unsqueeze(-2), n.to(rank.dtype).view(-1, 1), out=pen)
    pen = torch.sub(torch.tensor(0.5, dtype=g.dtype), sel, out=pen).mul_(float("inf"))
    if not first_stage:
        wide, true_pos, flagged = _per_key_stage(
            g, pen, w.to(g.dtype), a_sel.to(g.dtype), scale, tiny
        )
        return wide - n, true_pos, flagged
    tmp = scratch("tmp", tuple(g.shape), g.dtype, g.device)
    t_min = torch.maximum(g, pen, out=tmp).amin(-1, keepdim=True)
    t_max = torch.minimum(g, pen, out=tmp).amax(-1, keepdim=True)
    # In g's dtype, as key_passes forms each e_k: rounding is monotone, so E_J >= e_k
    # also as computed, and what stage 1 decides stage 2 would decide the same way.
    big_w, a_g = w.amax(-1, keepdim=True).to(g.dtype), a_sel.to(g.dtype)
    e2 = 2 * ((2 * a_g + big_w) * big_w * scale + tiny)

    wide = count_where(torch.ge, g, t_min - e2, tmp)
    narrow = count_where(torch.gt, g, t_min + e2, tmp)
    true_pos = count_where(torch.gt, g, t_max + e2, tmp)
    flagged = (wide - narrow != 1) | (count_where(torch.ge, g, t_max - e2, tmp) - true_pos != 1)
    false_pos = wide - n
    if bool(flagged.any()):
        b, t, j = torch.nonzero(flagged).unbind(-1)  # the undecided entries, one per row
        w2, a2 = w[b, 0, 0].to(g.dtype), a_sel[b, t, j].to(g.dtype)
        fp2, tp2, flag2 = _per_key_stage(g[b, t, j], pen[b, t, j], w2, a2, scale, tiny)
        undecided = flagged.clone()
        false_pos[undecided] = fp2 - n[j]
        true_pos[undecided] = tp2
        flagged[undecided] = flag2
    return false_pos, true_pos, flagged


def _per_key_stage(
    g: Tensor, pen: Tensor, w: Tensor, a_sel: Tensor, scale: float, tiny: float
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`key_passes` on ``[F, L]`` gathered entries, in kept buffers.

    ``pen`` is -inf on J and +inf off it (as in :func:`eager_passes`), ``w [F, L]`` and
    ``a_sel [F, 1]`` in ``g``'s dtype (or any shapes that broadcast to ``g``'s, as
    ``[b, 1, 1, L]`` and ``[b, t, nn, 1]`` for the scores of a whole chunk). Returns
    ``(#{k : hi_k >= min_J lo}, #TP, flagged)``: the same operations in the same order as
    :func:`key_passes`, so the same bits (tests/test_certify.py). Calling
    :func:`key_passes` instead, whose every operation writes a fresh temporary (each
    faulting its pages in, see ``scratch.py``), took 360 ms of a window's float32
    baseline at L = 1024, where this takes 70-100 ms.
    """

    def kept(slot: str) -> Tensor:
        return scratch(slot, tuple(g.shape), g.dtype, g.device)

    e = torch.add(w, a_sel, alpha=2, out=kept("key_e")).mul_(w).mul_(scale).add_(tiny)
    lo = torch.sub(g, e, out=kept("key_lo"))
    hi = torch.add(g, e, out=e)  # e is not read again
    tmp = kept("key_tmp")
    t_min_lo = torch.maximum(lo, pen, out=tmp).amin(-1, keepdim=True)
    t_min_hi = torch.maximum(hi, pen, out=tmp).amin(-1, keepdim=True)
    t_max_lo = torch.minimum(lo, pen, out=tmp).amax(-1, keepdim=True)
    t_max_hi = torch.minimum(hi, pen, out=tmp).amax(-1, keepdim=True)
    wide = count_where(torch.ge, hi, t_min_lo, tmp)
    narrow = count_where(torch.gt, lo, t_min_hi, tmp)
    true_pos = count_where(torch.gt, lo, t_max_hi, tmp)
    flagged = (wide - narrow != 1) | (count_where(torch.ge, hi, t_max_lo, tmp) - true_pos != 1)
    return wide, true_pos, flagged


def baseline_passes(
    g: Tensor,
    rank: Tensor,
    n: Tensor,
    w: Tensor,
    a_sel: Tensor,
    scale: float,
    tiny: float,
    sel: Tensor | None = None,
    first_stage: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`key_passes`' counts and flags by the fastest path at hand.

    ``torch.compile``'s kernel when enabled (see the module docstring); else numba's
    loop on the CPU where installed (:func:`tl_geom.geometry.kernels.baseline_counts`,
    2.3 against 7.1 ms per layer at L = 1024, 2 threads); else :func:`eager_passes`.
    All three give :func:`key_passes`' results bit for bit. ``sel``: the selection
    ``rank < N`` as 0/1 in ``g``'s dtype, ``[b, t, nn, L]``, where the caller has it
    (the eager passes then skip forming it; the kernels ignore it).
    """
    if not _state["on"]:
        if kernels.enabled(g):
            counts = kernels.baseline_counts(g, rank, n, w, a_sel, scale, tiny)
            if counts is not None:
                return counts
        return eager_passes(g, rank, n, w, a_sel, scale, tiny, sel, first_stage)
    fn = _state["fn"]
    if fn is None:  # one fused loop: the per-key test costs nothing extra compiled
        fn = torch.compile(key_passes, dynamic=True)
        _state["fn"] = fn
    try:
        return fn(g, rank, n, w, a_sel, scale, tiny)  # pyright: ignore[reportCallIssue, reportReturnType]
    except Exception as err:
        warnings.warn(f"compiled baseline kernel unavailable ({err!r}); eager passes", stacklevel=2)
        _state["on"] = False
        return eager_passes(g, rank, n, w, a_sel, scale, tiny, sel, first_stage)
