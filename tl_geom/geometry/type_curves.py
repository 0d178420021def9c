"""Taxonomy signals of one query row per head: ``c_last(N)``, ``c_sink(N)``, the mass split.

Spec: geometry.md, "Head taxonomy". ``s_N`` as in :func:`tl_geom.geometry.top_n.separability`,
``v_q`` the value at the query's own position; a vector that cancels to rounding noise,
shorter than ``ZERO_RTOL max_i ||v_i||``, has cosine 0 **[ours]**:

    c_last(N) = cos(s_N, v_q),   c_sink(N) = cos(s_N, v_0)
    mass split: ||alpha_0 v_0||,  ||alpha_q v_q||,  ||sum_{i != 0, q} alpha_i v_i||

The rules on these signals are in :mod:`tl_geom.geometry.taxonomy`.
Pure math (torch, pandas): no TransformerLens import.
"""

from dataclasses import dataclass

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from tl_geom._checks import check_finite, check_n, check_values, check_weights
from tl_geom.errors import TlGeomError
from tl_geom.geometry.top_n import top_n_rank

__all__ = ["ZERO_RTOL", "HeadCurves", "head_curves"]


@dataclass(frozen=True)
class HeadCurves:
    """Taxonomy signals of one query row per head.

    Attributes:
        n: the N values (trailing dim of the curves).
        c_last: ``cos(s_N, v_q)``, ``[..., nn]``.
        c_sink: ``cos(s_N, v_0)``, ``[..., nn]``.
        mass_sink: ``||alpha_0 v_0||``, ``[...]``.
        mass_last: ``||alpha_q v_q||``, ``[...]``.
        mass_rest: ``||sum_{i != 0, q} alpha_i v_i||``, ``[...]``.
    """

    n: tuple[int, ...]
    c_last: Tensor
    c_sink: Tensor
    mass_sink: Tensor
    mass_last: Tensor
    mass_rest: Tensor

    def to_frame(self) -> pd.DataFrame:
        """One row per leading index and N: ``dim0.., n, c_last, c_sink, mass_*``."""
        lead = tuple(self.c_last.shape[:-1])
        grid = torch.meshgrid(*[torch.arange(s) for s in lead], torch.tensor(self.n), indexing="ij")
        cols: dict[str, object] = {f"dim{i}": g.flatten().numpy() for i, g in enumerate(grid[:-1])}
        cols["n"] = grid[-1].flatten().numpy()
        cols["c_last"] = self.c_last.double().flatten().numpy()
        cols["c_sink"] = self.c_sink.double().flatten().numpy()
        for key in ("mass_sink", "mass_last", "mass_rest"):
            m = getattr(self, key).double().unsqueeze(-1).expand_as(self.c_last)
            cols[key] = m.flatten().numpy()
        return pd.DataFrame(cols)


ZERO_RTOL = 1e-12
"""A vector shorter than ``ZERO_RTOL * max_i ||v_i||`` counts as zero in a cosine [ours]:
an ``s_N`` that cancels to rounding noise has no direction."""


def _cos(a: Tensor, b: Tensor, tiny: Tensor) -> Tensor:
    """Cosine along the last dim; 0 where either vector is shorter than ``tiny`` [ours]."""
    num = (a * b).sum(-1)
    na, nb = a.norm(dim=-1), b.norm(dim=-1)
    ok = (na > tiny) & (nb > tiny)
    return torch.where(ok, num / (na * nb).clamp_min(1e-300), torch.zeros_like(num))


def head_curves(
    alpha: Float[Tensor, "*lead key"],
    values: Float[Tensor, "*lead key d"],
    n: int | list[int] | tuple[int, ...],
    *,
    query: int = -1,
    sink: int = 0,
    s: Float[Tensor, "*lead nn d"] | None = None,
) -> HeadCurves:
    """``c_last(N)``, ``c_sink(N)`` and the mass split of one query row per head.

    c_last(N) = cos(s_N, v_q),  c_sink(N) = cos(s_N, v_sink),  s_N = sum_{i in I_N} alpha_i v_i
    mass split: ||alpha_sink v_sink||, ||alpha_q v_q||, ||sum_{i != sink, q} alpha_i v_i||
    ``I_N`` are the N largest weights, ties to the earlier position, as in
    :func:`tl_geom.geometry.top_n.separability`. A cosine with a vector shorter than
    ``ZERO_RTOL max_i ||v_i||`` is 0 [ours].
    Float64. Spec: geometry.md, "Head taxonomy".

    Args:
        alpha: the query row's weights ``[..., L]``.
        values: value vectors ``[..., L, d]``.
        n: the N grid.
        query: the query's own position q (default the last key, the final query).
        sink: the sink position.
        s: ``s_N`` already computed (``separability(...).s``, ``[..., nn, d]``); else
            computed here.

    Raises:
        TlGeomError: bad weights, values or N; ``query`` equal to ``sink`` or out of range.

    >>> alpha = torch.tensor([0.6, 0.1, 0.3])
    >>> values = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    >>> c = head_curves(alpha, values, [1, 2])
    >>> c.c_sink.round(decimals=4).tolist(), c.c_last.round(decimals=4).tolist()
    ([1.0, 0.7071], [0.0, 0.7071])
    >>> round(c.mass_sink.item(), 4), round(c.mass_last.item(), 4), round(c.mass_rest.item(), 4)
    (0.6, 0.6, 0.1414)
    """
    check_weights(alpha)
    check_values(alpha, values)
    length = alpha.shape[-1]
    ns = check_n(list(n) if not isinstance(n, int) else n, length)
    if not (-length <= query < length and 0 <= sink < length):
        raise TlGeomError(f"query={query}, sink={sink} out of range for L={length}")
    q, k0 = query % length, sink
    if q == k0:
        raise TlGeomError(f"query={query} is the sink position {sink}; the mass split needs both")
    a = alpha.double()
    v = values.double()
    if s is None:
        n_t = torch.tensor(ns, device=a.device)
        selected = top_n_rank(a).unsqueeze(-2) < n_t.view(-1, 1)  # [..., nn, L]
        s = torch.einsum("...nk,...kd->...nd", selected * a.unsqueeze(-2), v)
    else:
        if s.shape[-2] != len(ns) or s.shape[-1] != v.shape[-1]:
            raise TlGeomError(f"s has shape {tuple(s.shape)}; expected [..., {len(ns)}, d]")
        check_finite("s", s)
        s = s.double()
    v_q, v_0 = v[..., q, :], v[..., k0, :]
    y_q, y_0 = a[..., q, None] * v_q, a[..., k0, None] * v_0
    out = torch.einsum("...k,...kd->...d", a, v)
    tiny = (ZERO_RTOL * v.norm(dim=-1).amax(-1)).unsqueeze(-1)  # [..., 1]
    return HeadCurves(
        n=ns,
        c_last=_cos(s, v_q.unsqueeze(-2), tiny),
        c_sink=_cos(s, v_0.unsqueeze(-2), tiny),
        mass_sink=y_0.norm(dim=-1),
        mass_last=y_q.norm(dim=-1),
        mass_rest=(out - y_0 - y_q).norm(dim=-1),
    )
