"""Critical N per head, windows as samples (spec: normalization.md, "Experiments to reproduce").

A KS test rejects any fixed difference once the samples are large, so a test that pools
rows of many heads and windows measures its sample size, not the model. Here each head
is tested on its own, the samples are the windows (one final-query ``d~`` per window:
top-N against one random N-subset), and the sample size is the same at every L
**[ours]**:

    per head h and grid N:  KS( {d~_N(top, w, h)}_w , {d~_N(random, w, h)}_w )
    N*_h = min{N in grid : p_h(N) >= level}   (NaN: rejects at every N, N* > max grid)

The distribution of ``N*_h / L`` over heads is what the paper's ``N* ~ 0.06 L`` is
compared with. Pure statistics: torch and pandas only.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import einops
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from tl_geom.errors import TlGeomError
from tl_geom.normalization.ks import ks_two_sample

__all__ = ["MIN_WINDOWS", "HeadCriticalN", "critical_n_by_head"]

MIN_WINDOWS = 32
"""Fewer windows than this per head and L: the per-head test is underpowered [ours]."""


@dataclass(frozen=True)
class HeadCriticalN:
    """Per-head KS tests of top-N vs random-N ``d~`` over windows.

    Attributes:
        n_star: ``[*head]`` the first grid N the test does not reject (float; NaN when it
            rejects at every N).
        statistic, pvalue: ``[*head, len(ns)]``.
        ns: the N grid, ascending; ``windows``: the sample size of each test; ``level``.
    """

    n_star: Tensor
    statistic: Tensor
    pvalue: Tensor
    ns: tuple[int, ...]
    windows: int
    level: float

    def to_frame(self, length: int) -> pd.DataFrame:
        """Columns ``length, head, n, statistic, pvalue, n_star, windows`` (heads flattened)."""
        stat = self.statistic.reshape(-1, len(self.ns))
        pval = self.pvalue.reshape(-1, len(self.ns))
        star = self.n_star.reshape(-1)
        heads, grid = torch.meshgrid(
            torch.arange(stat.shape[0]), torch.tensor(self.ns), indexing="ij"
        )
        return pd.DataFrame(
            {
                "length": length,
                "head": heads.reshape(-1).numpy(),
                "n": grid.reshape(-1).numpy(),
                "statistic": stat.reshape(-1).double().numpy(),
                "pvalue": pval.reshape(-1).double().numpy(),
                "n_star": star.repeat_interleave(len(self.ns)).double().numpy(),
                "windows": self.windows,
            }
        )


def critical_n_by_head(
    top: Float[Tensor, "window *head nn"],
    random: Float[Tensor, "window *head nn"],
    ns: Sequence[int],
    *,
    level: float = 0.01,
) -> HeadCriticalN:
    """Per-head critical N from ``d~`` of the top-N set and of a random N-subset per window.

    ``top[w, ..., j]``, ``random[w, ..., j]``: ``d~_{ns[j]}`` of window w's final query
    (:func:`~tl_geom.normalization.distinguishability.cumulative_distance`, and
    ``random_cumulative_distance(..., draws=1, reduce="none")``: one draw per window,
    so the random sample is independent across windows). Two-sample exact KS over the
    window dim per head and N (:func:`~tl_geom.normalization.ks.ks_two_sample`);
    ``N* = min{N : p >= level}`` [ours: the first non-rejection], NaN if none.
    Spec: normalization.md, "Experiments to reproduce" (KS, corrected protocol).

    Raises:
        TlGeomError: shapes disagree, the grid does not match the last dim, level not in
            (0, 1), fewer than 2 windows.
    """
    if top.shape != random.shape:
        raise TlGeomError(f"top {tuple(top.shape)} and random {tuple(random.shape)} differ")
    grid = list(ns)
    if top.ndim < 2 or top.shape[-1] != len(grid) or grid != sorted(set(grid)):
        raise TlGeomError(
            f"need [window, ..., len(ns)] with ns ascending, got {tuple(top.shape)}, ns={grid}"
        )
    if not 0.0 < level < 1.0:
        raise TlGeomError(f"level={level!r} must be in (0, 1)")
    if top.shape[0] < 2:
        raise TlGeomError(f"{top.shape[0]} windows; the per-head test needs at least 2")
    s1 = einops.rearrange(top, "w ... nn -> ... nn w")
    s2 = einops.rearrange(random, "w ... nn -> ... nn w")
    res = ks_two_sample(s1, s2)  # [..., nn]
    ok = res.pvalue >= level
    first = torch.where(ok.any(-1), ok.double().argmax(-1), -1)
    grid_t = torch.tensor(grid, dtype=torch.float64)
    n_star = torch.where(first >= 0, grid_t[first.clamp_min(0)], torch.tensor(math.nan))
    return HeadCriticalN(
        n_star=n_star,
        statistic=res.statistic,
        pvalue=res.pvalue,
        ns=tuple(grid),
        windows=int(top.shape[0]),
        level=level,
    )
