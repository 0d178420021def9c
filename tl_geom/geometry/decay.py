"""Exponential decay of value similarity with distance, to a plateau (assumption 2).

Spec: geometry.md, "Empirical assumptions", item 2. The mean cosine by lag ``m_k``
comes from an FFT autocorrelation (no ``L x L`` matrix); the model
``m_k = c_inf + (1 - c_inf) exp(-beta k)`` is fitted by weighted least squares in
``m`` itself (not in ``log m``, where lags at the noise floor would dominate) over the
lags where ``m_k`` stands above its noise floor. Batched over leading dims, float64.
"""

import math
from dataclasses import dataclass

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from tl_geom.errors import TlGeomError
from tl_geom.geometry.diagnostics import (
    _check_sink,  # pyright: ignore[reportPrivateUsage]
    _pack_values,  # pyright: ignore[reportPrivateUsage]
    _unit,  # pyright: ignore[reportPrivateUsage]
)

__all__ = ["BETA_GRID", "FLAT_SPREAD", "CosineDecay", "cosine_decay", "decay_sse"]

BETA_GRID = torch.logspace(-4, math.log10(20.0), 161, dtype=torch.float64)
"""Candidate decay rates (log-spaced, 1e-4 .. 20) of the grid search [ours]."""

FLAT_SPREAD = 1e-12
"""Below this root-mean-square spread a mean-cosine curve counts as flat (no R^2) [ours]."""


@dataclass(frozen=True)
class CosineDecay:
    """Assumption 2. ``mean_cos`` is ``[..., max_lag + 1]`` (lag 0 first), the rest ``[...]``.

    Attributes:
        beta: decay rate of ``m_k = c_inf + (1 - c_inf) exp(-beta k)``.
        c_inf: the plateau (the shared-mean-direction part of the cosine).
        r2: weighted R^2 of the fit on the fitted lags (nan: fewer than 3 lags or flat).
        lags: number of lags fitted (the leading run above the noise floor).
        mean_cos: mean ``cos(v_i, v_{i+k})`` per lag ``k``.
        holds: ``lags >= 3``, ``beta`` strictly inside the grid, ``R^2 >= r2_min``.
    """

    beta: Tensor
    c_inf: Tensor
    r2: Tensor
    lags: Tensor
    mean_cos: Tensor
    holds: Tensor
    r2_min: float
    floor_z: float


def _lag_sums(u: Float[Tensor, "b key d"], lag_max: int) -> Float[Tensor, "b lag"]:
    """``S_k = sum_i <u_i, u_{i+k}>`` for ``k = 0..lag_max``, by FFT: ``O(d L log L)``.

    The autocorrelation of each coordinate is ``irfft(|rfft(u)|^2)`` with zero padding
    to at least ``2L - 1`` (no wrap-around); summing the power over coordinates first
    makes it one inverse transform per row. float64 rounding is about ``1e-16 L`` in
    ``S_k``, so under ``1e-15`` in the mean cosine ``S_k / count_k``.
    """
    length = u.shape[1]
    n_fft = 1 << (2 * length - 1).bit_length()
    # Transforms along the contiguous last dim: 45 -> 29 ms for 30 layers of [3, 1024,
    # 64] at 2 threads, the same S_k bit for bit on SmolLM2's values.
    u_t = einops.rearrange(u, "b key d -> b d key").contiguous()
    spec = torch.fft.rfft(u_t, n=n_fft, dim=-1)
    power = (spec.real**2 + spec.imag**2).sum(-2)
    return torch.fft.irfft(power, n=n_fft, dim=-1)[:, : lag_max + 1]


def decay_sse(
    m: Float[Tensor, "b lag"], w: Float[Tensor, "b lag"], beta: Float[Tensor, "*b g"]
) -> tuple[Tensor, Tensor]:
    """Best plateau and weighted SSE of the decay model at each candidate ``beta``.

    With ``e_k = exp(-beta k)`` (``k = 1, 2, ...``) the model ``m_k = c + (1 - c) e_k``
    is linear in ``c``: ``m_k - e_k = c (1 - e_k)``, so
    ``c = sum w (1 - e)(m - e) / sum w (1 - e)^2`` (clamped to ``[-1, 1]``) and
    ``SSE = sum w (m - e - c (1 - e))^2``. ``beta`` is ``[b, g]`` (candidates per row)
    or ``[g]`` (shared by every row: the exponentials are then formed once, not per
    row). Returns ``(c, sse)``, both ``[b, g]``.
    """
    k = torch.arange(1, m.shape[-1] + 1, dtype=torch.float64, device=m.device)
    e = torch.exp(-beta.unsqueeze(-1) * k)  # [b, g, lag] or [g, lag]
    x = 1 - e
    y = m.unsqueeze(1) - e
    wb = w.unsqueeze(1)
    c = (wb * x * y).sum(-1) / (wb * x * x).sum(-1).clamp_min(1e-300)
    c = c.clamp(-1.0, 1.0)
    return c, (wb * (y - c.unsqueeze(-1) * x) ** 2).sum(-1)


def _fit(m: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Grid search over :data:`BETA_GRID`, then one parabolic step in ``log beta``.

    Returns ``beta, c_inf, sse`` ``[b]`` and whether the grid minimum was interior.
    """
    grid = BETA_GRID.to(m.device)
    c, sse = decay_sse(m, w, grid)
    i = sse.argmin(-1)
    inner = (i > 0) & (i < grid.numel() - 1)
    j = i.clamp(1, grid.numel() - 2)
    s_lo, s_0, s_hi = (sse.gather(-1, (j + o).unsqueeze(-1)).squeeze(-1) for o in (-1, 0, 1))
    curv = s_lo - 2 * s_0 + s_hi
    step = torch.where(curv > 0, 0.5 * (s_lo - s_hi) / curv.clamp_min(1e-300), 0.0).clamp(-1, 1)
    h = math.log(float(grid[1] / grid[0]))
    refined = grid[j] * torch.exp(step * h)
    c_ref, sse_ref = decay_sse(m, w, refined.unsqueeze(-1))
    best = inner & (sse_ref[:, 0] < sse.gather(-1, i.unsqueeze(-1)).squeeze(-1))
    beta = torch.where(best, refined, grid[i])
    c_inf = torch.where(best, c_ref[:, 0], c.gather(-1, i.unsqueeze(-1)).squeeze(-1))
    sse_min = torch.where(best, sse_ref[:, 0], sse.gather(-1, i.unsqueeze(-1)).squeeze(-1))
    return torch.stack([beta, c_inf, sse_min]), inner, i


def cosine_decay(
    values: Float[Tensor, "*lead key d"],
    *,
    max_lag: int | None = None,
    sink: int | None = 0,
    r2_min: float = 0.5,
    floor_z: float = 2.0,
) -> CosineDecay:
    """Exponential decay of value similarity with distance, to a plateau (assumption 2).

    ``m_k = mean_i cos(v_i, v_{i+k})`` over ``n_k`` pairs of kept positions (the sink
    is left out [ours]). Noise floor ``f_k = 1 / sqrt(d n_k)`` (the std of a mean of
    ``n_k`` cosines of independent directions in d dims). Fitted lags: the leading run
    ``1 <= k <= max_lag`` with ``m_k > floor_z f_k`` [ours]. Model
    ``m_k = c_inf + (1 - c_inf) exp(-beta k)``, weighted least squares with weights
    ``n_k`` (the pair count, inverse to the variance of ``m_k``), ``beta`` by a grid
    search over :data:`BETA_GRID` refined by one parabolic step (:func:`decay_sse`).
    ``R^2 = 1 - SSE / sum n_k (m_k - mbar)^2`` on the fitted lags (nan when flat).
    Spec: geometry.md, "Empirical assumptions", item 2.

    Args:
        values: ``[..., L, d]``.
        max_lag: largest lag considered; default ``L // 2`` [ours].
        sink: a position to leave out of the averages, or None to keep all.
        r2_min: holds needs ``R^2 >= r2_min`` [ours].
        floor_z: a lag is above the floor when ``m_k > floor_z / sqrt(d n_k)`` [ours].
    """
    v, packed = _pack_values(values)
    length, dim = v.shape[1], v.shape[2]
    if sink is not None:
        _check_sink(sink, length)
    lag_max = length // 2 if max_lag is None else max_lag
    if not 1 <= lag_max < length:
        raise TlGeomError(f"max_lag={max_lag} out of range 1..{length - 1} for L={length}")
    u = _unit(v)
    if sink is not None:
        keep = torch.ones(length, dtype=torch.float64, device=v.device)
        keep[sink] = 0.0
        u = u * keep.view(1, -1, 1)  # a zero vector adds nothing to any lag sum
    sums = _lag_sums(u, lag_max)
    # counts[k] = #{i : i and i + k both kept}, exact in integers
    k_all = torch.arange(lag_max + 1, device=v.device)
    counts = (length - k_all).double()
    if sink is not None:
        counts -= (sink + k_all < length).double() + (sink - k_all >= 0).double()
        counts[0] += 1.0  # the pair (sink, sink) was removed twice
    mean_cos = sums / counts.clamp_min(1)
    m, n_k = mean_cos[:, 1:], counts[1:]
    above = (n_k > 0) & (m > floor_z / (dim * n_k.clamp_min(1)).sqrt())
    run = above.long().cumprod(-1).double()  # the leading run of lags above the floor
    w = run * n_k
    (beta, c_inf, sse), inner, _ = _fit(m, w)
    lags = run.sum(-1)
    mbar = (w * m).sum(-1, keepdim=True) / w.sum(-1, keepdim=True).clamp_min(1e-300)
    sst = (w * (m - mbar) ** 2).sum(-1)
    flat = sst <= w.sum(-1) * FLAT_SPREAD**2
    r2 = torch.where(flat | (lags < 3), float("nan"), 1 - sse / sst.clamp_min(1e-300))
    none = lags < 1
    beta = torch.where(none, float("nan"), beta)
    c_inf = torch.where(none, float("nan"), c_inf)
    holds = inner & (lags >= 3) & (r2 >= r2_min)
    beta, c_inf, r2, lags, holds = (
        einops.unpack(x, packed, "*")[0] for x in (beta, c_inf, r2, lags, holds)
    )
    (mean_cos,) = einops.unpack(mean_cos, packed, "* lag")
    return CosineDecay(beta, c_inf, r2, lags, mean_cos, holds, r2_min, floor_z)
