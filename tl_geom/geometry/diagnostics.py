"""Diagnostics of the paper's empirical assumptions (spec: geometry.md, "Empirical assumptions").

Each diagnostic returns a small frozen dataclass with the measured values, the
thresholds used, and ``holds``: a boolean tensor saying whether the assumption holds
for that head under those thresholds. Thresholds marked [ours] are our choices.
All functions are batched over any leading dims (batch, layer, head) and compute in
float64.
"""

from dataclasses import dataclass

import einops
import numpy as np
import scipy.stats
import torch
from jaxtyping import Float
from torch import Tensor

from tl_geom._checks import check_finite, check_weights
from tl_geom.errors import TlGeomError

_Packed = list[tuple[int, ...] | list[int]]  # einops.pack shapes

__all__ = [
    "NormStability",
    "PositionalCV",
    "SinkRecallCorrelation",
    "attention_entropy",
    "norm_cv_positions",
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
    v = values.double()
    if v.numel() == 0:  # let einops name the shapes it cannot pack
        return einops.pack([v], "* key d")
    # A view where possible: einops.pack of one tensor copies it (torch.cat).
    return v.reshape(-1, *v.shape[-2:]), [tuple(v.shape[:-2])]


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


@dataclass(frozen=True)
class PositionalCV:
    """Assumption 1, second reading: CV over positions of the mean norm across windows.

    Attributes:
        cv: ``sqrt(max(0, var_pos - sampling)) / mean`` (the positional part), ``[...]``.
        cv_raw: ``sqrt(var_pos) / mean`` (shrinks with the number of windows W).
        windows: W.
    """

    cv: Tensor
    cv_raw: Tensor
    windows: int


def norm_cv_positions(norms: Float[Tensor, "windows *lead key"], *, sink: int = 0) -> PositionalCV:
    """CV over positions of the per-position mean value norm across windows [ours].

    ``mu_i = mean_w n_{w,i}``, ``s_i^2 = sum_w (n_{w,i} - mu_i)^2 / (W - 1)`` over the
    W windows, positions ``i != sink``. ``var_pos = mean_i (mu_i - mubar)^2`` (population)
    contains the sampling part ``mean_i s_i^2 / W`` (each ``mu_i`` is a mean of W
    draws); removing it, ``CV = sqrt(max(0, var_pos - mean_i s_i^2 / W)) / mubar``, an
    estimate that does not depend on W. ``cv_raw = sqrt(var_pos) / mubar``. NaN for
    W < 2 or a zero mean. Spec: geometry.md, "Empirical assumptions", item 1.

    Args:
        norms: ``||v_i||`` per window and position, ``[W, ..., L]``, ``L >= 3``.
        sink: the position left out (default 0).

    >>> n = torch.tensor([[1.0, 1.0, 3.0], [1.0, 3.0, 1.0]])
    >>> r = norm_cv_positions(n)
    >>> float(r.cv_raw), float(r.cv)
    (0.0, 0.0)
    """
    if norms.ndim < 2 or not norms.is_floating_point():
        raise TlGeomError(f"norms must be a floating [W, ..., L] tensor, got {tuple(norms.shape)}")
    check_finite("norms", norms)
    _check_sink(sink, norms.shape[-1], need=3)
    n = norms.double()
    keep = torch.ones(n.shape[-1], dtype=torch.bool, device=n.device)
    keep[sink] = False
    n = n[..., keep]
    w = n.shape[0]
    mu = n.mean(0)
    mubar = mu.mean(-1)
    var_pos = ((mu - mubar.unsqueeze(-1)) ** 2).mean(-1)
    if w < 2:
        nan = torch.full_like(mubar, float("nan"))
        return PositionalCV(nan, nan.clone(), w)
    sampling = n.var(0, unbiased=True).mean(-1) / w
    cv_raw = var_pos.sqrt() / mubar
    cv = (var_pos - sampling).clamp_min(0).sqrt() / mubar
    return PositionalCV(cv, cv_raw, w)


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

    ``scipy.stats.spearmanr`` of the columns ``[x, y_1, .., y_nn]`` (ties get the average
    of the ranks they span), row ``x``. A constant ``x`` or column gives nan. Returns
    ``[nn]`` (float64, on ``x``'s device).

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
    xs, ys = x.double().cpu().numpy(), y.double().cpu().numpy()
    out = np.full(ys.shape[1], np.nan)
    varies = np.flatnonzero(np.ptp(ys, axis=0) > 0) if np.ptp(xs) > 0 else np.array([], int)
    if varies.size:  # spearmanr answers one nan for all if any column is constant
        stat = scipy.stats.spearmanr(np.column_stack([xs, ys[:, varies]])).statistic  # pyright: ignore[reportAttributeAccessIssue]
        rho = np.atleast_2d(np.asarray(stat, np.float64))
        out[varies] = rho[0, 1:] if rho.shape[0] > 1 else rho.ravel()  # two columns: a scalar
    return torch.from_numpy(out).to(x.device)


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
