"""Softmax with temperature: weight bounds, the exact Jacobian, gradient bounds, sensitivity.

Spec: normalization.md, "Quantities" (softmax bounds, gradient sensitivity), from arXiv
2508.17821. With logits ``z in R^L``, temperature ``T > 0`` and ``a = softmax(z / T)``:

    exp(-2 Delta / T) / L <= a_i <= exp(2 Delta / T) / L      when |z_i| <= Delta
    J = da / dz = (diag(a) - a a^T) / T

Numeric status of each stated bound (pinned by ``tests/test_normalization.py``):

- ``softmax_weight_bounds``: holds (proof in its docstring).
- ``jacobian_entry_bound``, ``|J_ij| <= 1/(4T)``: holds; tight at two equal logits.
- ``jacobian_spectral_bound``, ``||J||_2 <= 1/(2T)``: holds; tight at two equal logits.
- ``gradient_norm_bound``, the paper's ``min{1/(4T), sqrt 2}``: fails numerically,
  counterexample ``z = (0, 0)``; see its docstring.
- ``gradient_row_bound``, ``||grad_z a_i||_2 <= sqrt(2)/(4T)`` [ours]: holds; tight.
"""

import math
from collections.abc import Sequence

import einops
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from tl_geom._checks import check_finite
from tl_geom.errors import TlGeomError

__all__ = [
    "gradient_norm_bound",
    "gradient_row_bound",
    "gradient_sensitivity",
    "jacobian_entry_bound",
    "jacobian_spectral_bound",
    "saturation_share",
    "softmax_jacobian",
    "softmax_weight_bounds",
]


def _check_positive(name: str, x: float) -> float:
    """Return ``float(x)`` or raise unless it is finite and > 0."""
    xf = float(x)
    if not math.isfinite(xf) or xf <= 0:
        raise TlGeomError(f"{name}={x!r} must be finite and > 0")
    return xf


def _check_logits(logits: Tensor) -> None:
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise TlGeomError(f"logits need a non-empty key dimension, got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TlGeomError(f"logits must be a floating tensor, got dtype {logits.dtype}")
    check_finite("logits", logits)


def softmax_weight_bounds(length: int, delta: float, temperature: float) -> tuple[float, float]:
    """Bounds on every softmax weight when the logits are bounded, ``|z_i| <= Delta``.

    exp(-2 Delta / T) / L  <=  a_i = exp(z_i/T) / sum_j exp(z_j/T)  <=  exp(2 Delta / T) / L

    Proof: the numerator lies in ``[e^{-Delta/T}, e^{Delta/T}]`` and the denominator,
    a sum of L such terms, in ``[L e^{-Delta/T}, L e^{Delta/T}]``. Status: holds (tested
    on random and extreme logits). Spec: normalization.md, "Quantities"; the paper's
    Corollary 1 takes ``Delta = ||q|| ||k||``.

    Args:
        length: number of keys L (>= 1).
        delta: bound on ``|z_i|`` (>= 0).
        temperature: T > 0.

    Returns:
        ``(lower, upper)``; ``upper`` is ``inf`` where ``exp`` overflows.

    >>> softmax_weight_bounds(4, 0.0, 1.0)
    (0.25, 0.25)
    """
    if isinstance(length, bool) or int(length) != length or length < 1:
        raise TlGeomError(f"length={length!r} must be an int >= 1")
    t = _check_positive("temperature", temperature)
    if not math.isfinite(delta) or delta < 0:
        raise TlGeomError(f"delta={delta!r} must be finite and >= 0")
    x = 2.0 * delta / t
    log_l = math.log(length)
    lower = math.exp(-x - log_l)
    upper = math.exp(x - log_l) if x - log_l < 709.0 else math.inf
    return lower, upper


def softmax_jacobian(
    logits: Float[Tensor, "*lead key"],
    temperature: float = 1.0,
    *,
    dtype: torch.dtype = torch.float64,
) -> Float[Tensor, "*lead key key"]:
    """Exact Jacobian of ``a = softmax(z / T)`` with respect to the logits ``z``.

    J_ij = d a_i / d z_j = (a_i [i = j] - a_i a_j) / T,   i.e.  J = (diag(a) - a a^T) / T

    Symmetric and positive semi-definite (``diag(a) - a a^T`` is the covariance of a
    one-hot vector drawn from ``a``), with ``J 1 = 0``. Batched over leading dims by
    broadcasting. Spec: normalization.md, "Quantities".

    Args:
        logits: ``[..., L]``.
        temperature: T > 0.
        dtype: computation dtype (float64 by default).

    Returns:
        ``[..., L, L]``.

    >>> softmax_jacobian(torch.zeros(2)).tolist()
    [[0.25, -0.25], [-0.25, 0.25]]
    """
    _check_logits(logits)
    t = _check_positive("temperature", temperature)
    a = torch.softmax(logits.to(dtype) / t, dim=-1)
    return (torch.diag_embed(a) - a.unsqueeze(-1) * a.unsqueeze(-2)) / t


def jacobian_entry_bound(temperature: float) -> float:
    """Entry-wise bound ``|J_ij| <= 1/(4T)``.

    Diagonal: ``a_i (1 - a_i) <= 1/4``; off-diagonal: ``a_i a_j <= ((a_i + a_j)/2)^2
    <= 1/4``. Status: holds; tight at two equal logits (``a = (1/2, 1/2)``).
    Spec: normalization.md, "Quantities".

    >>> jacobian_entry_bound(0.5)
    0.5
    """
    return 1.0 / (4.0 * _check_positive("temperature", temperature))


def jacobian_spectral_bound(temperature: float) -> float:
    """Spectral-norm bound ``||J||_2 <= 1/(2T)``.

    ``M = diag(a) - a a^T`` is symmetric PSD, so ``||M||_2 = lambda_max(M)``, and by
    Gershgorin ``lambda_max <= max_i (a_i(1 - a_i) + a_i sum_{j != i} a_j)
    = max_i 2 a_i (1 - a_i) <= 1/2``. Status: holds; tight at ``a = (1/2, 1/2)``
    (eigenvector ``(1, -1)/sqrt 2``). Spec: normalization.md, "Quantities".

    >>> jacobian_spectral_bound(0.5)
    1.0
    """
    return 1.0 / (2.0 * _check_positive("temperature", temperature))


def gradient_norm_bound(temperature: float) -> float:
    """The paper's gradient-norm bound ``||grad_z a||_2 <= min{1/(4T), sqrt 2}``, as stated.

    Status: **fails numerically**. Counterexample: ``z = (0, 0)`` (two equal logits,
    ``a = (1/2, 1/2)``), T = 1: ``||J||_2 = 1/2``, ``||J||_F = 1/2`` and the largest row
    norm ``||grad_z a_i||_2 = sqrt(2)/4 ~ 0.354``, each above the stated ``1/4``; at
    T = 0.01 the same logits give ``||J||_2 = 50``, ``max |J_ij| = 25 > sqrt 2``, so the
    ``sqrt 2`` branch fails too, in every norm we tried (max entry, row, spectral,
    Frobenius). The tight bounds are ``jacobian_spectral_bound`` (``1/(2T)``) and
    ``gradient_row_bound`` (``sqrt(2)/(4T)``). Kept as stated so that the failure is
    visible; spec: normalization.md, "Quantities" ("a bound that fails ... is reported
    as such, never loosened silently").

    >>> gradient_norm_bound(1.0)
    0.25
    """
    return min(1.0 / (4.0 * _check_positive("temperature", temperature)), math.sqrt(2.0))


def gradient_row_bound(temperature: float) -> float:
    """[ours] Bound on the gradient of one weight: ``||grad_z a_i||_2 <= sqrt(2)/(4T)``.

    ``T^2 ||J_i||^2 = a_i^2 (1 - a_i)^2 + a_i^2 sum_{j != i} a_j^2
    <= 2 a_i^2 (1 - a_i)^2 <= 2/16`` (using ``sum_{j != i} a_j^2 <= (1 - a_i)^2``).
    Status: holds; tight at ``a = (1/2, 1/2)``. Not in the paper: the smallest bound of
    the ``c/T`` form that does hold for the row norm (compare ``gradient_norm_bound``).

    >>> round(gradient_row_bound(1.0), 6)
    0.353553
    """
    return math.sqrt(2.0) / (4.0 * _check_positive("temperature", temperature))


def gradient_sensitivity(
    logits: Float[Tensor, "*lead key"],
    temperatures: Sequence[float],
    eps: Sequence[float] = (1e-3, 1e-1, 10.0),
    *,
    draws: int = 16,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    by_row: bool = False,
) -> pd.DataFrame:
    """Sensitivity ``g(T, eps)`` of the attention weights to logit noise, on a T x eps grid.

    change(T, eps)      = E_{rows, xi} || softmax((z + eps xi)/T) - softmax(z/T) ||_1
    sensitivity(T, eps) = change(T, eps) / eps                     (this is g(T, eps))
    jacobian(T)         = E_{rows, xi} || J(z, T) xi ||_1 = lim_{eps -> 0} g(T, eps)
    jacobian_at(T, eps) = E_{rows, xi} || J(z + eps xi, T) xi ||_1   (analytic, at the
                          perturbed logits: what g would be if softmax were linear there)
    capped(T, eps)      = change >= 1: ``||delta a||_1 <= 2`` caps g at ``2 / eps``, and
                          past half the cap the finite difference no longer measures the
                          slope [ours: the threshold]
    with ``xi ~ N(0, I_L)``, ``draws`` draws per row from a generator seeded with
    ``seed``, and the mean taken over all leading dims (rows) and draws.
    Definition [ours]: the paper describes the experiment, not the formula; the
    finite-difference form with the L1 norm (total variation x 2) is the one defined
    here. Spec: normalization.md, "Quantities" and "Experiments to reproduce".

    Vectorised over T, eps and rows; a Python loop over the draws bounds memory at
    ``len(T) * len(eps) * rows * L`` numbers.

    Args:
        logits: pre-softmax scores ``[..., L]`` (e.g. ``hook_attn_scores`` rows, which
            already include the ``1/sqrt(d_head)`` scale).
        temperatures: the T grid, each > 0.
        eps: the noise scales, each > 0.
        draws: noise draws per row (>= 1).
        seed: seed of the noise generator.
        dtype: computation dtype.
        by_row: keep the rows (the leading dims flattened, in order) apart.

    Returns:
        Columns ``temperature, eps, change, sensitivity, jacobian, jacobian_at, capped``,
        one row per (T, eps); with ``by_row`` also ``row``, one row per (T, eps, row)
        (``capped`` then per row).
    """
    _check_logits(logits)
    ts = [_check_positive("temperature", t) for t in temperatures]
    es = [_check_positive("eps", e) for e in eps]
    if not ts or not es:
        raise TlGeomError("temperatures and eps need at least one value each")
    if isinstance(draws, bool) or int(draws) != draws or draws < 1:
        raise TlGeomError(f"draws={draws!r} must be an int >= 1")
    z, _ = einops.pack([logits.to(dtype)], "* key")
    t_t = torch.tensor(ts, dtype=dtype, device=z.device).view(-1, 1, 1, 1)  # [T, 1, 1, 1]
    e_t = torch.tensor(es, dtype=dtype, device=z.device).view(1, -1, 1, 1)  # [1, E, 1, 1]
    base = torch.softmax(z / t_t[:, 0], dim=-1)  # [T, rows, L]
    gen = torch.Generator(device=z.device).manual_seed(seed)
    rows = z.shape[0]
    change = torch.zeros(len(ts), len(es), rows, dtype=dtype, device=z.device)
    jac_at = torch.zeros(len(ts), len(es), rows, dtype=dtype, device=z.device)
    jac = torch.zeros(len(ts), rows, dtype=dtype, device=z.device)
    for _ in range(int(draws)):
        xi = torch.randn(z.shape, generator=gen, dtype=dtype, device=z.device)
        pert = torch.softmax((z + e_t * xi) / t_t, dim=-1)  # [T, E, rows, L]
        change += (pert - base.unsqueeze(1)).abs().sum(-1)
        px = pert * xi
        jac_at += ((px - pert * px.sum(-1, keepdim=True)) / t_t).abs().sum(-1)
        ax = base * xi
        jxi = (ax - base * ax.sum(-1, keepdim=True)) / t_t[:, 0]
        jac += jxi.abs().sum(-1)
    change, jac_at, jac = change / draws, jac_at / draws, jac.unsqueeze(1) / draws
    if not by_row:
        change, jac_at, jac = change.mean(-1), jac_at.mean(-1), jac.mean(-1)
    grid = torch.meshgrid(
        t_t.flatten(),
        e_t.flatten(),
        *([torch.arange(rows, device=z.device, dtype=dtype)] if by_row else []),
        indexing="ij",
    )
    out = {
        "temperature": grid[0].flatten().cpu().numpy(),
        "eps": grid[1].flatten().cpu().numpy(),
        "change": change.flatten().cpu().numpy(),
        "sensitivity": (change / grid[1]).flatten().cpu().numpy(),
        "jacobian": jac.expand_as(change).flatten().cpu().numpy(),
        "jacobian_at": jac_at.flatten().cpu().numpy(),
        "capped": (change >= 1.0).flatten().cpu().numpy(),
    }
    if by_row:
        out["row"] = grid[2].flatten().long().cpu().numpy()
    return pd.DataFrame(out)


def saturation_share(logits: Float[Tensor, "*lead key"], temperature: float = 1.0) -> float:
    """Share of rows whose largest logit gap exceeds ``T log L``: saturated softmax rows.

    gap = z_(1) - z_(2), the top logit minus the runner-up [ours: "largest logit gap"];
    past ``T log L`` the top weight is more than L times any other, so small logit noise
    barely moves the weights and g falls below the 1/T law. Spec: normalization.md,
    "Experiments to reproduce" (the share of saturated rows).

    >>> saturation_share(torch.tensor([[5.0, 0.0, 0.0], [1.0, 0.5, 0.0]]))
    0.5
    """
    _check_logits(logits)
    t = _check_positive("temperature", temperature)
    top2 = logits.double().topk(2, dim=-1).values
    gap = top2[..., 0] - top2[..., 1]
    return float((gap > t * math.log(logits.shape[-1])).double().mean())
