"""Four-segment fit of the final query's attention profile over key position.

Spec: geometry.md, "Empirical assumptions", item 3: a sink spike at 0, a low plateau,
an oscillating band and a recency ramp. Fitted by exact least squares over a binned
profile (dynamic programming over change points).
"""

from dataclasses import dataclass

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from tl_geom._checks import check_weights
from tl_geom.errors import TlGeomError

__all__ = ["AttentionProfile", "attention_profile"]


@dataclass(frozen=True)
class AttentionProfile:
    """Assumption 3: 4-segment piecewise-constant fit of one row of weights over keys.

    Attributes:
        change_points: ``[..., 3]`` first positions of segments 2, 3, 4 (plateau, band, ramp).
        means: ``[..., 4]`` mean weight per segment.
        fitted: ``[..., L]`` the fitted profile (it sums to 1 like the row).
        r2: ``1 - SSE_4 / SSE_1`` over all positions (vs one segment).
        r2_rest: the same over positions ``>= 1`` (segments 2-4 vs their overall mean),
            which the sink spike cannot inflate.
        holds: sink isolated (first change point is 1) and highest, plateau the lowest
            of segments 2-4, and ``r2_rest >= r2_min``.
    """

    change_points: Tensor
    means: Tensor
    fitted: Tensor
    r2: Tensor
    r2_rest: Tensor
    holds: Tensor
    r2_min: float


def _segment_dp(p1: Tensor, p2: Tensor, pw: Tensor, segments: int) -> Tensor:
    """Exact least-squares segmentation of units by dynamic programming.

    ``p1, p2, pw``: prefix sums ``[rows, U + 1]`` of weight, squared weight and count.
    ``cost(a, b) = sum x^2 - (sum x)^2 / count`` over units ``a..b-1``;
    ``E_k(b) = min_a E_{k-1}(a) + cost(a, b)``. Returns the segment starts
    ``[rows, segments - 1]`` as unit indices. ``O(segments U^2)`` per row.
    """
    units = p1.shape[1] - 1
    dn = pw.unsqueeze(1) - pw.unsqueeze(2)  # [rows, a, b]
    s1 = p1.unsqueeze(1) - p1.unsqueeze(2)
    cost = (p2.unsqueeze(1) - p2.unsqueeze(2)) - s1**2 / dn.clamp_min(1)
    a_idx = torch.arange(units + 1)
    cost = cost.masked_fill(a_idx.view(-1, 1) >= a_idx.view(1, -1), float("inf"))
    best = cost[:, 0, :]  # E_1
    back: list[Tensor] = []
    for _ in range(segments - 1):
        total = best.unsqueeze(-1) + cost
        best, arg = total.min(1)
        back.append(arg)
    starts: list[Tensor] = []
    end = torch.full((p1.shape[0], 1), units)
    for arg in reversed(back):
        end = torch.gather(arg, 1, end)
        starts.append(end)
    return torch.cat(starts[::-1], dim=1)


def attention_profile(
    alpha: Float[Tensor, "*lead key"],
    *,
    bins: int = 128,
    r2_min: float = 0.5,
) -> AttentionProfile:
    """Four-segment piecewise-constant fit of a row of weights over key position (assumption 3).

    Segments: sink spike, low plateau, oscillating band, recency ramp. Position 0 is
    one unit; positions ``1..L-1`` are pooled into ``min(bins, L - 1)`` contiguous bins
    of near-equal size [ours]. The change points minimising the total squared error
    ``sum_k sum_{i in seg k} (alpha_i - mean_k)^2`` over the raw positions, among all
    splits at unit edges, are found exactly by dynamic programming (``O(bins^2)``
    per row). Piecewise-constant (not linear) segments keep the fitted profile a
    distribution, so it can drive :func:`tl_geom.geometry.bounds.simulate_separability`.
    "Holds" [ours]: segment 1 is exactly position 0 and has the largest mean, segment 2
    (plateau) has the smallest mean of segments 2-4, and ``r2_rest >= r2_min``. The
    oscillation inside the band is not tested.

    Args:
        alpha: one row of weights per head (the final query), ``[..., L]``, ``L >= 4``.
        bins: resolution of the change points (default 128 [ours]).
        r2_min: threshold on ``r2_rest`` [ours].
    """
    check_weights(alpha)
    length = alpha.shape[-1]
    if length < 4 or bins < 3:
        raise TlGeomError(f"need L >= 4 and bins >= 3 for 4 segments, got L={length}, bins={bins}")
    a, packed = einops.pack([alpha.double()], "* key")
    nb = min(bins, length - 1)
    # bin b starts at 1 + round_half_up((L - 1) b / nb), in exact integer arithmetic
    edges = 1 + (2 * (length - 1) * torch.arange(nb + 1) + nb) // (2 * nb)
    edges = torch.cat([torch.zeros(1, dtype=torch.long), edges])  # unit u = [edges[u], edges[u+1])
    zero = torch.zeros(a.shape[0], 1, dtype=torch.float64)
    c1 = torch.cat([zero, a.cumsum(-1)], -1)
    c2 = torch.cat([zero, (a * a).cumsum(-1)], -1)
    starts = _segment_dp(c1[:, edges], c2[:, edges], edges.double().expand(a.shape[0], -1), 4)
    cps = edges[starts]  # [rows, 3] positions
    pos = torch.arange(length)
    seg = (pos.view(1, 1, -1) >= cps.unsqueeze(-1)).sum(1)  # [rows, L] in 0..3
    sums = torch.zeros(a.shape[0], 4, dtype=torch.float64).scatter_add(1, seg, a)
    cnt = torch.zeros(a.shape[0], 4, dtype=torch.float64).scatter_add(1, seg, torch.ones_like(a))
    means = sums / cnt
    fitted = torch.gather(means, 1, seg)
    sq = (a - fitted) ** 2
    tot = (a - a.mean(-1, keepdim=True)) ** 2
    rest = a[:, 1:]
    tot_rest = (rest - rest.mean(-1, keepdim=True)) ** 2

    def ratio(num: Tensor, den: Tensor) -> Tensor:
        return torch.where(den > 0, 1 - num / den.clamp_min(1e-300), float("nan"))

    r2 = ratio(sq.sum(-1), tot.sum(-1))
    r2_rest = ratio(sq[:, 1:].sum(-1), tot_rest.sum(-1))
    holds = (
        (cps[:, 0] == 1)
        & (means[:, 0] > means[:, 1:].amax(-1))
        & (means[:, 1] < means[:, 2:].amin(-1))
        & (r2_rest >= r2_min)
    )
    cps_o, means_o = einops.unpack(cps, packed, "* s")[0], einops.unpack(means, packed, "* s")[0]
    fitted_o = einops.unpack(fitted, packed, "* key")[0]
    r2_o, r2r_o, holds_o = (einops.unpack(x, packed, "*")[0] for x in (r2, r2_rest, holds))
    return AttentionProfile(cps_o, means_o, fitted_o, r2_o, r2r_o, holds_o, r2_min)
