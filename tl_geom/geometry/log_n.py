"""Curves over N read in log N, so that a statement about N does not depend on the grid.

Spec: geometry.md, "Head taxonomy": thresholds are defined on N itself (or N / L), never
on positions in the N grid. A curve measured at the grid ``n_0 < n_1 < ... < n_{K-1}`` is
read as the piecewise-linear function of ``u = log N`` through ``(log n_k, f_k)``, held
constant beyond the grid's ends **[ours]**. On it:

- :func:`log_mean_weights`: the mean over an N range in log N, a linear functional of the
  curve, ``mean_[a, b] f = (1 / (log b - log a)) int_{log a}^{log b} f(e^u) du``;
- :func:`first_crossing`: the smallest N where the curve reaches a level.

A denser grid only adds points to the same interpolant where the curve is smooth, so both
move little when the grid is refined (tests/test_taxonomy.py). Pure math (torch, numpy).
"""

import math
from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from tl_geom.errors import TlGeomError

__all__ = ["check_grid", "first_crossing", "log_mean", "log_mean_weights"]


def check_grid(n: Sequence[int | float]) -> np.ndarray:
    """The N grid as float64, checked: non-empty, positive, strictly increasing."""
    g = np.asarray(list(n), dtype=np.float64)
    if g.ndim != 1 or g.size == 0 or not np.isfinite(g).all() or (g <= 0).any():
        raise TlGeomError(f"the N grid {list(n)} must hold positive finite values")
    if (np.diff(g) <= 0).any():
        raise TlGeomError(f"the N grid {list(n)} must be strictly increasing")
    return g


def log_mean_weights(n: Sequence[int | float], lo: int | float, hi: int | float) -> np.ndarray:
    """Weights ``w [K]`` with ``f @ w`` the mean of the log-N interpolant of ``f`` over [lo, hi].

    mean = (1 / (log hi' - log lo')) int_{log lo'}^{log hi'} f(e^u) du, with f linear in
    u = log N between grid points and constant beyond them; ``lo' , hi'`` are ``lo, hi``
    clipped to ``[n_0, n_{K-1}]`` [ours]. If the clipped range is a point (the grid lies
    outside ``[lo, hi]`` or ``lo = hi``), the interpolant's value at ``hi'``. The
    integral of a piecewise-linear function is exact by the trapezoid rule on the
    breakpoints ``{lo', hi'} U {n_k in (lo', hi')}``.

    >>> w = log_mean_weights([1, 2, 4], 1, 4)
    >>> w.round(6).tolist()
    [0.25, 0.5, 0.25]
    """
    g = check_grid(n)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0 or hi < lo:
        raise TlGeomError(f"need 0 < lo <= hi, got lo={lo}, hi={hi}")
    u = np.log(g)
    a = float(np.clip(math.log(lo), u[0], u[-1]))
    b = float(np.clip(math.log(hi), u[0], u[-1]))
    eye = np.eye(g.size)

    def at(points: np.ndarray) -> np.ndarray:  # [P, K]: the interpolant's weights at points
        return np.stack([np.interp(points, u, eye[k]) for k in range(g.size)], -1)

    if b <= a:
        return at(np.array([b]))[0]
    pts = np.concatenate([[a], u[(u > a) & (u < b)], [b]])
    rows = at(pts)
    dx = np.diff(pts)
    trap = np.zeros(pts.size)
    trap[:-1] += dx / 2
    trap[1:] += dx / 2
    return trap @ rows / (b - a)


def log_mean(
    f: Float[Tensor, "*lead nn"], n: Sequence[int | float], lo: int | float, hi: int | float
) -> Float[Tensor, "*lead"]:
    """The log-N mean of each curve over [lo, hi] (:func:`log_mean_weights`), float64."""
    w = torch.as_tensor(log_mean_weights(n, lo, hi), dtype=torch.float64, device=f.device)
    if f.shape[-1] != w.shape[0]:
        raise TlGeomError(f"curves have {f.shape[-1]} N values, the grid {w.shape[0]}")
    return f.double() @ w


def first_crossing(
    f: Float[Tensor, "*lead nn"], n: Sequence[int | float], level: int | float
) -> Float[Tensor, "*lead"]:
    """The smallest N at which the log-N interpolant of ``f`` reaches ``level``; inf if never.

    With k the first grid index where ``f_k >= level``: ``n_0`` if k = 0, else
    ``exp(u_{k-1} + (level - f_{k-1}) / (f_k - f_{k-1}) (u_k - u_{k-1}))`` (the
    interpolant is below ``level`` on the grid before k, so the first crossing lies in
    ``(n_{k-1}, n_k]``). Float64.

    >>> x = first_crossing(torch.tensor([[0.0, 0.2, 0.6], [0.0, 0.1, 0.2]]), [1, 2, 4], 0.4)
    >>> [round(v, 4) for v in x.tolist()]
    [2.8284, inf]
    """
    g = check_grid(n)
    if f.shape[-1] != g.size:
        raise TlGeomError(f"curves have {f.shape[-1]} N values, the grid {g.size}")
    x = f.double()
    u = torch.as_tensor(np.log(g), dtype=torch.float64, device=x.device)
    above = x >= level
    k = above.long().argmax(-1, keepdim=True)  # first True (0 where none)
    prev = (k - 1).clamp_min(0)
    f_k, f_p = x.gather(-1, k), x.gather(-1, prev)
    u_k, u_p = u[k], u[prev]
    t = ((level - f_p) / (f_k - f_p).clamp_min(1e-300)).clamp(0.0, 1.0)
    cross = torch.where(k == 0, u_k, u_p + t * (u_k - u_p)).squeeze(-1).exp()
    return torch.where(above.any(-1), cross, torch.full_like(cross, math.inf))
