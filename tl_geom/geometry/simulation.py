"""Expected separability under the fitted assumption model, by simulation.

The "theoretical envelope" curve drawn next to measured P/R curves (spec: geometry.md,
"Bounds", last item): values are sampled with the measured norm CV, sink compression
lambda and cosine decay beta (diagnostics.py), weights follow a given or fitted
attention profile, and ``separability`` runs on all samples in one batched call.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from tl_geom._checks import check_n, check_weights
from tl_geom._shapes import unpack_n
from tl_geom.errors import TlGeomError
from tl_geom.geometry import kernels
from tl_geom.geometry.top_n import separability

__all__ = ["SimulatedSeparability", "sample_values", "simulate_heads", "simulate_separability"]


@dataclass(frozen=True)
class SimulatedSeparability:
    """Monte Carlo P/R/F under the assumption model; means and std over samples.

    Shapes ``[...]`` or ``[..., len(n)]``; ``perfect`` is the fraction of samples
    with P = R = 1.
    """

    n: tuple[int, ...]
    precision: Tensor
    precision_std: Tensor
    recall: Tensor
    recall_std: Tensor
    f1: Tensor
    f1_std: Tensor
    perfect: Tensor


def sample_values(
    length: int,
    d: int,
    *,
    cv: float = 0.0,
    lam: float = 1.0,
    beta: float = math.inf,
    c_inf: float = 0.0,
    samples: int = 1,
    sink: int = 0,
    generator: torch.Generator | None = None,
) -> Float[Tensor, "samples key d"]:
    """Values drawn from the assumption model (spec: geometry.md, "Empirical assumptions").

    Directions: a Gaussian AR(1) chain over positions, ``z_0 ~ N(0, I_d)``,
    ``z_t = rho z_{t-1} + sqrt(1 - rho^2) e_t`` with ``rho = exp(-beta)``, so
    ``E<z_s, z_t> / d = exp(-beta |s - t|)`` and, for large d, ``cos(v_s, v_t)`` is
    close to that. Built in one matmul with the chain's ``L x L`` Cholesky factor.
    ``beta = inf`` gives independent directions. A shared mean direction: with
    ``g ~ N(0, I_d)`` drawn once per sample, ``x_t = sqrt(c_inf) g + sqrt(1 - c_inf) z_t``,
    so ``E<x_s, x_t> / d = c_inf + (1 - c_inf) exp(-beta |s - t|)`` (the plateau model
    of ``decay.cosine_decay``). Norms: log-normal with mean 1 and
    coefficient of variation exactly ``cv`` for non-sink positions; the sink's norm is
    ``lam`` times the mean of the others in that sample.
    """
    if length < 2 or d < 1 or samples < 1 or not 0 <= sink < length:
        raise TlGeomError(
            f"need length >= 2, d >= 1, samples >= 1, 0 <= sink < length; "
            f"got length={length}, d={d}, samples={samples}, sink={sink}"
        )
    if cv < 0 or lam < 0 or beta < 0 or math.isnan(beta) or not 0 <= c_inf < 1:
        raise TlGeomError(
            f"cv, lam, beta must be >= 0 and 0 <= c_inf < 1; got {cv}, {lam}, {beta}, {c_inf}"
        )
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    rho = math.exp(-beta)
    t = torch.arange(length, dtype=torch.float64)
    lag = (t.view(-1, 1) - t.view(1, -1)).clamp_min(0)
    chol = torch.tril(torch.pow(torch.tensor(rho, dtype=torch.float64), lag))
    chol[:, 1:] *= math.sqrt(max(1.0 - rho * rho, 0.0))
    eps = torch.randn(samples, length, d, generator=gen, dtype=torch.float64)
    z = torch.einsum("tk,skd->std", chol, eps)
    if c_inf > 0:
        shared = torch.randn(samples, 1, d, generator=gen, dtype=torch.float64)
        z = math.sqrt(c_inf) * shared + math.sqrt(1 - c_inf) * z
    u = z / z.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    sigma2 = math.log1p(cv * cv)
    xi = torch.randn(samples, length, generator=gen, dtype=torch.float64)
    r = torch.exp(math.sqrt(sigma2) * xi - sigma2 / 2)
    rest = torch.ones(length, dtype=torch.bool)
    rest[sink] = False
    r[:, sink] = lam * r[:, rest].mean(-1)
    return r.unsqueeze(-1) * u


def simulate_separability(
    alpha: Float[Tensor, "*lead key"],
    n: int | Sequence[int],
    *,
    d: int,
    cv: float = 0.0,
    lam: float = 1.0,
    beta: float = math.inf,
    samples: int = 64,
    sink: int = 0,
    seed: int = 0,
) -> SimulatedSeparability:
    """Expected P, R, F at each N under the fitted assumption model, by simulation.

    ``E[P_N] = mean over samples of separability(alpha, V, N).precision`` with
    ``V ~`` :func:`sample_values` (norm CV ``cv``, sink compression ``lam``, cosine decay
    ``beta``) and a fixed attention profile ``alpha`` (measured, or the fitted profile
    of ``diagnostics.attention_profile``). All samples go through one batched call.
    This is the "theoretical envelope" curve of the spec, not a bound.

    Args:
        alpha: attention profile(s) ``[..., L]``; each row gets its own value draws.
        n: one N or a list.
        d: value dimension.
        cv: norm coefficient of variation (non-sink positions).
        lam: sink compression ``||v_sink|| / mean ||v_i||``.
        beta: cosine decay rate per position (``inf``: independent directions).
        samples: Monte Carlo draws per row.
        sink: sink position.
        seed: seed of the private generator (results are reproducible).

    Returns:
        A :class:`SimulatedSeparability` with means, std and the perfect rate.
    """
    check_weights(alpha)
    ns = check_n(n, alpha.shape[-1])
    a, packed = einops.pack([alpha.double()], "* key")
    gen = torch.Generator().manual_seed(seed)
    v = sample_values(
        a.shape[-1],
        d,
        cv=cv,
        lam=lam,
        beta=beta,
        samples=samples * a.shape[0],
        sink=sink,
        generator=gen,
    )
    v = einops.rearrange(v, "(s b) k d -> s b k d", s=samples)
    rows = a.unsqueeze(0).expand(samples, -1, -1).contiguous()
    res = separability(rows, v, list(ns), prefix=True)  # counts only: sums by prefix
    scalar = isinstance(n, Integral)

    def stat(x: Tensor, std: bool = False) -> Tensor:
        m = x.double().std(0, unbiased=False) if std else x.double().mean(0)
        return unpack_n(m, packed, scalar)

    return SimulatedSeparability(
        n=ns,
        precision=stat(res.precision),
        precision_std=stat(res.precision, True),
        recall=stat(res.recall),
        recall_std=stat(res.recall, True),
        f1=stat(res.f1),
        f1_std=stat(res.f1, True),
        perfect=stat(res.perfect),
    )


def _sample_rows(
    length: int, d: int, params: Tensor, samples: int, sink: int, gen: torch.Generator
) -> Tensor:
    """:func:`sample_values` with parameters per row: ``params [B, 4]`` = cv, lam, beta, c_inf.

    Same model, built by the AR(1) recursion over positions (``O(L d)`` per sample, no
    ``L x L`` factor): ``z_t = rho z_{t-1} + sqrt(1 - rho^2) e_t``, one chain per thread
    in numba where installed (``kernels.ar1_chain``, the same bits). Returns
    ``[B, samples, L, d]``.
    """
    b = params.shape[0]
    cv, lam, beta, c_inf = params.double().unbind(-1)
    rho = torch.exp(-beta).view(b, 1, 1)  # beta = inf gives rho = 0
    # One [B, samples, L, d] buffer, updated in place (z overwrites eps position by
    # position; the same operations as out-of-place, so the same bits): the envelope of
    # an L = 8192 run held four such buffers (1 GB) at once.
    z = torch.randn(b, samples, length, d, generator=gen, dtype=torch.float64)
    scale = (1 - rho * rho).clamp_min(0).sqrt()
    if not (kernels.enabled(z) and kernels.ar1_chain(z, scale, rho)):  # the same bits
        for t in range(1, length):  # a loop over positions, vectorised over heads, samples
            z[:, :, t].mul_(scale).add_(rho * z[:, :, t - 1])
    shared = torch.randn(b, samples, 1, d, generator=gen, dtype=torch.float64)
    c = c_inf.clamp(0, 1).view(b, 1, 1, 1)
    z.mul_((1 - c).sqrt()).add_(c.sqrt() * shared)
    z.div_(z.norm(dim=-1, keepdim=True).clamp_min(1e-300))
    sigma2 = torch.log1p(cv * cv).view(b, 1, 1)
    xi = torch.randn(b, samples, length, generator=gen, dtype=torch.float64)
    r = torch.exp(sigma2.sqrt() * xi - sigma2 / 2)
    rest = torch.ones(length, dtype=torch.bool)
    rest[sink] = False
    r[:, :, sink] = lam.view(b, 1) * r[:, :, rest].mean(-1)
    return z.mul_(r.unsqueeze(-1))


def simulate_heads(
    alpha: Float[Tensor, "heads key"],
    n: Sequence[int],
    *,
    d: int,
    params: Float[Tensor, "heads 4"],
    samples: int = 8,
    sink: int = 0,
    seed: int = 0,
    chunk: int = 8,
) -> SimulatedSeparability:
    """The envelope per head: expected P, R, F of each head under its own fitted model.

    Head h: weights ``alpha[h]`` (its mean final-query profile), values from the
    assumption model with its own ``params[h] = (cv, lam, beta, c_inf)`` (norm CV, sink
    compression, cosine decay and plateau, the shared mean direction);
    ``E[P_N] = mean over samples of separability(alpha_h, V, N)``. Averaging the
    ``[heads, N]`` result over heads is averaging as ``metrics.csv`` does. Heads go
    ``chunk`` at a time (memory ``chunk x samples x L x d``). Spec: geometry.md,
    "Bounds", last item.
    """
    check_weights(alpha)
    ns = check_n(list(n), alpha.shape[-1])
    if params.shape != (alpha.shape[0], 4):
        raise TlGeomError(f"params must be [heads, 4], got {tuple(params.shape)}")
    gen = torch.Generator().manual_seed(seed)
    stats: list[list[Tensor]] = []
    for lo in range(0, alpha.shape[0], chunk):  # chunks of heads: memory, not math
        a = alpha[lo : lo + chunk].double()
        v = _sample_rows(a.shape[-1], d, params[lo : lo + chunk], samples, sink, gen)
        rows = a.unsqueeze(1).expand_as(v[..., 0]).contiguous()
        res = separability(rows, v, list(ns), prefix=True)  # counts only: sums by prefix
        prf = [x.double() for x in (res.precision, res.recall, res.f1)]
        stats.append(
            [x.mean(1) for x in prf]
            + [x.std(1, unbiased=False) for x in prf]
            + [res.perfect.double().mean(1)]
        )
    p, r, f, ps, rs, fs, perfect = (torch.cat(c) for c in zip(*stats, strict=True))
    return SimulatedSeparability(ns, p, ps, r, rs, f, fs, perfect)
