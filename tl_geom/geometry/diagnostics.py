"""Diagnostics of the paper's empirical assumptions (spec: geometry.md, "Empirical assumptions").

Each diagnostic returns a small frozen dataclass with the measured values, the
thresholds used, and ``holds``: a boolean tensor saying whether the assumption holds
for that head under those thresholds. Thresholds marked [ours] are our choices.
All functions are batched over any leading dims (batch, layer, head) and compute in
float64.
"""

from dataclasses import dataclass

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from tl_geom._checks import check_finite, check_weights
from tl_geom.errors import TlGeomError

_Packed = list[tuple[int, ...] | list[int]]  # einops.pack shapes

__all__ = [
    "CosineDecay",
    "NormStability",
    "SinkRecallCorrelation",
    "attention_entropy",
    "cosine_decay",
    "norm_stability",
    "sink_mass",
    "sink_recall_correlation",
    "sink_similarity",
    "spearman",
]


@dataclass(frozen=True)
class NormStability:
    """Assumption 1. Shapes ``[...]``.

    Attributes:
        cv: ``std / mean`` of ``||v_i||`` over non-sink positions (population std).
        lam: sink compression ``||v_sink|| / mean_{i != sink} ||v_i||``.
        stable: ``cv <= cv_max``.  compressed: ``lam < lam_max``.
        holds: ``stable & compressed``.
    """

    cv: Tensor
    lam: Tensor
    stable: Tensor
    compressed: Tensor
    holds: Tensor
    cv_max: float
    lam_max: float


@dataclass(frozen=True)
class CosineDecay:
    """Assumption 2. ``mean_cos`` is ``[..., max_lag + 1]`` (lag 0 first), the rest ``[...]``.

    Attributes:
        beta: decay rate, ``log mean_cos(k) ~ log_a - beta k`` on the positive lags.
        r2: R^2 of that log-linear fit (nan with fewer than 2 positive lags or a flat curve).
        log_a: intercept of the fit.
        mean_cos: mean ``cos(v_i, v_{i+k})`` per lag ``k``.
        holds: ``beta > 0 & r2 >= r2_min``.
    """

    beta: Tensor
    r2: Tensor
    log_a: Tensor
    mean_cos: Tensor
    holds: Tensor
    r2_min: float


@dataclass(frozen=True)
class SinkRecallCorrelation:
    """Assumption 4. Shapes ``[nn]``: Spearman ``rho(rho0, R_N)`` across heads per N.

    Attributes:
        spearman: the correlation per N (nan where either input is constant).
        holds: ``spearman > min_corr``.
    """

    spearman: Tensor
    holds: Tensor
    min_corr: float


def _pack_values(values: Tensor) -> tuple[Tensor, _Packed]:
    if values.ndim < 2 or not values.is_floating_point():
        raise TlGeomError(
            f"values must be a floating [..., key, d] tensor, got shape "
            f"{tuple(values.shape)} dtype {values.dtype}"
        )
    check_finite("values", values)
    v, packed = einops.pack([values.double()], "* key d")
    return v, packed


def _check_sink(sink: int, length: int, need: int = 2) -> None:
    if length < need:
        raise TlGeomError(f"need at least {need} key positions, got L={length}")
    if not 0 <= sink < length:
        raise TlGeomError(f"sink={sink} out of range 0..{length - 1} for L={length}")


def _unit(v: Tensor) -> Tensor:
    """Unit vectors; a zero vector stays zero (its cosine with anything is taken as 0)."""
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-300)


def norm_stability(
    values: Float[Tensor, "*lead key d"],
    *,
    sink: int = 0,
    cv_max: float = 0.1,
    lam_max: float = 0.5,
) -> NormStability:
    """Value-norm stability and sink compression (assumption 1).

    ``CV = std_{i != sink} ||v_i|| / mean_{i != sink} ||v_i||`` (population std),
    ``lambda = ||v_sink|| / mean_{i != sink} ||v_i||``. Zero mean norm gives nan.

    Args:
        values: ``[..., L, d]``, ``L >= 3``.
        sink: sink position (default 0).
        cv_max: stable if ``CV <= cv_max`` [ours; the paper reports 0.02-0.05].
        lam_max: compressed if ``lambda < lam_max`` [ours].

    >>> v = torch.tensor([[0.1, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> r = norm_stability(v)
    >>> float(r.cv), round(float(r.lam), 6), bool(r.holds)
    (0.0, 0.1, True)
    """
    v, packed = _pack_values(values)
    _check_sink(sink, v.shape[1], need=3)
    norms = v.norm(dim=-1)
    keep = torch.ones(v.shape[1], dtype=torch.bool, device=v.device)
    keep[sink] = False
    rest = norms[:, keep]
    mean = rest.mean(-1)
    cv = rest.std(-1, unbiased=False) / mean
    lam = norms[:, sink] / mean
    cv, lam = (einops.unpack(x, packed, "*")[0] for x in (cv, lam))
    stable, compressed = cv <= cv_max, lam < lam_max
    return NormStability(cv, lam, stable, compressed, stable & compressed, cv_max, lam_max)


FLAT_LOG_SPREAD = 1e-12
"""Below this spread of ``log m_k`` a mean-cosine curve counts as flat (no R^2) [ours]."""


def _lag_sums(u: Float[Tensor, "b key d"], lag_max: int) -> Float[Tensor, "b lag"]:
    """``S_k = sum_i <u_i, u_{i+k}>`` for ``k = 0..lag_max``, by FFT: ``O(d L log L)``.

    The autocorrelation of each coordinate is ``irfft(|rfft(u)|^2)`` with zero padding
    to at least ``2L - 1`` (no wrap-around); summing the power over coordinates first
    makes it one inverse transform per row. float64 rounding is about ``1e-16 L`` in
    ``S_k``, so under ``1e-15`` in the mean cosine ``S_k / count_k``.
    """
    length = u.shape[1]
    n_fft = 1 << (2 * length - 1).bit_length()
    spec = torch.fft.rfft(u, n=n_fft, dim=1)
    power = (spec.real**2 + spec.imag**2).sum(-1)
    return torch.fft.irfft(power, n=n_fft, dim=1)[:, : lag_max + 1]


def cosine_decay(
    values: Float[Tensor, "*lead key d"],
    *,
    max_lag: int | None = None,
    sink: int | None = 0,
    r2_min: float = 0.5,
    min_cos: float = 1e-9,
) -> CosineDecay:
    """Exponential decay of value similarity with distance (assumption 2).

    ``m_k = mean_{i} cos(v_i, v_{i+k})`` over pairs of kept positions (the sink is
    left out [ours]); fit ``log m_k = log_a - beta k`` by least squares over the lags
    ``1 <= k <= max_lag`` with ``m_k > min_cos`` ("the positive part"), and
    ``R^2 = 1 - SS_res / SS_tot`` in log space (NaN for a flat curve, spread of
    ``log m_k`` under ``FLAT_LOG_SPREAD``). The lag sums come from an FFT
    autocorrelation (:func:`_lag_sums`): ``O(d L log L)`` per head and no ``L x L``
    matrix, which at L = 8192 would be 0.5 GiB per head.

    Args:
        values: ``[..., L, d]``.
        max_lag: largest lag fitted; default ``L // 2`` [ours] (longer lags average
            few pairs).
        sink: a position to leave out of the averages, or None to keep all.
        r2_min: holds if ``beta > 0`` and ``R^2 >= r2_min`` [ours].
        min_cos: the smallest mean cosine that enters the log fit [ours]. A mean that
            is zero in exact arithmetic lands near +-1e-16 in floating point, and its log
            (about -37) would dominate the fit by the sign of a rounding error.
    """
    v, packed = _pack_values(values)
    length = v.shape[1]
    if sink is not None:
        _check_sink(sink, length)
    lag_max = length // 2 if max_lag is None else max_lag
    if not 1 <= lag_max < length:
        raise TlGeomError(f"max_lag={max_lag} out of range 1..{length - 1} for L={length}")
    u = _unit(v)
    keep = torch.ones(length, dtype=torch.float64, device=v.device)
    if sink is not None:
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
    k = torch.arange(1, lag_max + 1, dtype=torch.float64, device=v.device)
    m = mean_cos[:, 1:]
    fit_w = ((m > min_cos) & (counts[1:] > 0)).double()
    y = torch.log(m.clamp_min(1e-300))
    nw = fit_w.sum(-1, keepdim=True)
    xbar = (fit_w * k).sum(-1, keepdim=True) / nw
    ybar = (fit_w * y).sum(-1, keepdim=True) / nw
    sxx = (fit_w * (k - xbar) ** 2).sum(-1)
    slope = (fit_w * (k - xbar) * (y - ybar)).sum(-1) / sxx
    log_a = ybar.squeeze(-1) - slope * xbar.squeeze(-1)
    resid = y - (log_a.unsqueeze(-1) + slope.unsqueeze(-1) * k)
    ss_res = (fit_w * resid**2).sum(-1)
    ss_tot = (fit_w * (y - ybar) ** 2).sum(-1)
    # A flat log-cosine (spread under 1e-12, the FFT's rounding) has no decay to fit.
    flat = ss_tot <= nw.squeeze(-1) * FLAT_LOG_SPREAD**2
    r2 = torch.where(flat, float("nan"), 1 - ss_res / ss_tot.clamp_min(1e-300))
    r2 = torch.where(nw.squeeze(-1) >= 2, r2, float("nan"))
    beta = torch.where(nw.squeeze(-1) >= 2, -slope, float("nan"))
    log_a = torch.where(nw.squeeze(-1) >= 2, log_a, float("nan"))
    beta, r2, log_a = (einops.unpack(x, packed, "*")[0] for x in (beta, r2, log_a))
    (mean_cos,) = einops.unpack(mean_cos, packed, "* lag")
    return CosineDecay(beta, r2, log_a, mean_cos, (beta > 0) & (r2 >= r2_min), r2_min)


def sink_similarity(values: Float[Tensor, "*lead key d"], *, sink: int = 0) -> Tensor:
    """``rho0 = mean_{j != sink} cos(v_sink, v_j)`` [ours], shape ``[...]``.

    >>> sink_similarity(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])).item()
    0.5
    """
    v, packed = _pack_values(values)
    _check_sink(sink, v.shape[1])
    u = _unit(v)
    cos = torch.einsum("bd,bjd->bj", u[:, sink], u)
    keep = torch.ones(v.shape[1], dtype=torch.bool, device=v.device)
    keep[sink] = False
    return einops.unpack(cos[:, keep].mean(-1), packed, "*")[0]


def spearman(x: Float[Tensor, " heads"], y: Float[Tensor, "heads nn"]) -> Tensor:
    """Spearman correlation of ``x`` with each column of ``y``: Pearson of average ranks.

    Ties get the average of the ranks they span (as ``scipy.stats.spearmanr``). A
    constant input gives nan. Returns ``[nn]``.

    >>> spearman(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([[1.0], [1.0], [5.0]])).tolist()
    [0.8660254037844387]
    """
    if x.ndim != 1 or y.ndim != 2 or y.shape[0] != x.shape[0] or x.shape[0] < 2:
        raise TlGeomError(
            f"need x [heads] and y [heads, nn] with heads >= 2, got {tuple(x.shape)} "
            f"and {tuple(y.shape)}"
        )
    check_finite("x", x)
    check_finite("y", y)
    cols = torch.cat([x.double().view(-1, 1), y.double()], 1).T.contiguous()  # [1 + nn, heads]
    srt = cols.sort(-1).values
    lo = torch.searchsorted(srt, cols, right=False)
    hi = torch.searchsorted(srt, cols, right=True)
    ranks = (lo + hi + 1).double() / 2
    ranks = ranks - ranks.mean(-1, keepdim=True)
    num = (ranks[:1] * ranks[1:]).sum(-1)
    den = (ranks[:1] ** 2).sum(-1).sqrt() * (ranks[1:] ** 2).sum(-1).sqrt()
    return torch.where(den > 0, num / den.clamp_min(1e-300), float("nan"))


def sink_recall_correlation(
    rho0: Float[Tensor, " heads"],
    recall: Float[Tensor, "heads nn"],
    *,
    min_corr: float = 0.0,
) -> SinkRecallCorrelation:
    """Spearman correlation of sink similarity with Recall across heads, per N (assumption 4).

    Args:
        rho0: :func:`sink_similarity` per head, flattened to ``[heads]``.
        recall: ``R_N`` per head and N, ``[heads, nn]``.
        min_corr: holds where the correlation exceeds this (positive, by default) [ours].
    """
    rho = spearman(rho0, recall)
    return SinkRecallCorrelation(rho, rho > min_corr, min_corr)


def attention_entropy(alpha: Float[Tensor, "*lead key"]) -> Tensor:
    """``H = -sum_i alpha_i log alpha_i`` in nats (``0 log 0 = 0``), shape ``[...]``.

    >>> round(attention_entropy(torch.tensor([0.5, 0.5, 0.0])).item(), 4)
    0.6931
    """
    check_weights(alpha)
    a = alpha.double()
    return -(a * torch.log(a.clamp_min(1e-300))).sum(-1)


def sink_mass(alpha: Float[Tensor, "*lead key"], *, sink: int = 0) -> Tensor:
    """Attention mass on the sink, ``alpha_sink`` (``alpha_0`` by default), shape ``[...]``."""
    check_weights(alpha)
    _check_sink(sink, alpha.shape[-1], need=1)
    return alpha[..., sink].double()
