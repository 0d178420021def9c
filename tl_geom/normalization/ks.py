"""Two-sample Kolmogorov-Smirnov test with exact p-values, batched over leading dims.

Used for the top-N vs random-N comparison of normalization.md ("Experiments to
reproduce": the critical N where top-N stops being distinguishable from random).
Pure statistics: torch and einops only.
"""

import math
from dataclasses import dataclass

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from tl_geom._checks import check_finite
from tl_geom.errors import TlGeomError

__all__ = ["KSTest", "ks_two_sample"]


@dataclass(frozen=True)
class KSTest:
    """Two-sample Kolmogorov-Smirnov tests, batched over leading dims.

    Attributes:
        statistic: ``D = sup_x |F_1(x) - F_2(x)|``, ``[...]``.
        pvalue: exact two-sided ``P(D' >= D)`` under H0, ``[...]``.
        n1: size of the first sample.
        n2: size of the second sample.
    """

    statistic: Tensor
    pvalue: Tensor
    n1: int
    n2: int


def ks_two_sample(sample1: Float[Tensor, "*batch m"], sample2: Float[Tensor, "*batch n"]) -> KSTest:
    """Two-sample KS statistic and exact two-sided p-value, batched over leading dims.

    D = max_x |F_1(x) - F_2(x)| over the pooled points (right-continuous ECDFs, so ties
    are handled as in ``scipy.stats.ks_2samp``). In integer units, ``D = h / lcm(m, n)``;
    ``p = 1 - P(lattice path (0,0) -> (m,n) stays in |i n - j m| < h gcd(m, n))``, the
    exact null distribution (scipy's ``method="exact"``, which its ``"auto"`` uses up to
    10000 points per sample). The path count is a masked cumsum per row, vectorised over
    the batch, rescaled each row (float64, log-scale bookkeeping). Cost O(m n) per test.
    Spec: normalization.md, "Experiments to reproduce" (KS test).

    Args:
        sample1: ``[..., m]``.
        sample2: ``[..., n]``.

    Returns:
        A :class:`KSTest` with ``[...]`` statistic and p-value.

    >>> res = ks_two_sample(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([4.0, 5.0, 6.0]))
    >>> float(res.statistic), round(float(res.pvalue), 6)
    (1.0, 0.1)
    """
    for name, x in (("sample1", sample1), ("sample2", sample2)):
        if x.ndim < 1 or x.shape[-1] < 1:
            raise TlGeomError(f"{name} must be [..., size] with size >= 1, got {tuple(x.shape)}")
        check_finite(name, x)
    if sample1.shape[:-1] != sample2.shape[:-1]:
        raise TlGeomError(
            f"batch dims disagree: sample1 {tuple(sample1.shape)}, sample2 {tuple(sample2.shape)}"
        )
    x1, packed = einops.pack([sample1.double()], "* m")
    x2, _ = einops.pack([sample2.double()], "* n")
    m, n = x1.shape[-1], x2.shape[-1]
    x1, x2 = x1.sort(-1).values, x2.sort(-1).values
    pooled = torch.cat([x1, x2], -1).contiguous()
    c1 = torch.searchsorted(x1.contiguous(), pooled, right=True)
    c2 = torch.searchsorted(x2.contiguous(), pooled, right=True)
    d_int = (c1 * n - c2 * m).abs().amax(-1)  # D * m * n, exact integers
    p = _ks_exact_pvalue(m, n, d_int)  # h gcd(m, n) = d_int, h = D lcm(m, n)
    (stat,) = einops.unpack(d_int.double() / (m * n), packed, "*")
    (pval,) = einops.unpack(p, packed, "*")
    return KSTest(statistic=stat, pvalue=pval, n1=m, n2=n)


def _ks_exact_pvalue(m: int, n: int, bound: Tensor) -> Tensor:
    """``P(max_k |i_k n - j_k m| >= bound)`` for a uniform lattice path, per entry of ``bound``.

    Summed over first exits (no ``1 - P(inside)`` cancellation, so tiny p-values keep
    their relative precision): a path leaves the band first at an outside cell
    ``(i, j)`` entered from an inside one; ``u(i, j)`` counts inside paths from the
    origin, ``C(m - i + n - j, m - i)`` the free paths from the exit to ``(m, n)``.
    """
    dev = bound.device
    j = torch.arange(n + 1, device=dev)
    lim = bound.view(-1, 1)
    u = torch.zeros(bound.shape[0], n + 1, dtype=torch.float64, device=dev)
    u[:, 0] = 1.0  # a virtual row -1 feeding the origin
    log_scale = torch.zeros(bound.shape[0], 1, dtype=torch.float64, device=dev)
    p = torch.zeros(bound.shape[0], dtype=torch.float64, device=dev)
    log_total = math.lgamma(m + n + 1) - math.lgamma(m + 1) - math.lgamma(n + 1)
    jd = j.double()
    for i in range(m + 1):  # rows of the lattice; inside cells of a row are contiguous
        inside = (i * n - j * m).abs().unsqueeze(0) < lim
        new = torch.where(inside, torch.where(inside, u, 0.0).cumsum(-1), 0.0)
        # entries into outside cells: from above (u) or from the left (new), both inside
        left = torch.nn.functional.pad(new[:, :-1], (1, 0))
        inflow = torch.where(inside, 0.0, u + left)
        log_rest = (
            torch.lgamma(m - i + n + 1 - jd) - math.lgamma(m - i + 1) - torch.lgamma(n + 1 - jd)
        )
        p += (inflow * torch.exp(log_scale + log_rest - log_total)).sum(-1)
        top = new.amax(-1, keepdim=True).clamp_min(1e-300)
        u = new / top
        log_scale = log_scale + top.log()
    p = p.clamp(0.0, 1.0)
    return torch.where(bound == 0, torch.ones_like(p), p)
