"""Experiment tables of normalization.md ("Experiments to reproduce"), from given tensors.

Each function takes weights and values (or a callable giving them for a window length)
and returns a tidy pandas DataFrame; running a model to get them is the caller's job.
"""

import math
from collections.abc import Callable, Sequence
from numbers import Integral

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from tl_geom._checks import check_values, check_weights
from tl_geom.errors import TlGeomError
from tl_geom.normalization.distinguishability import (
    Form,
    critical_n,
    cumulative_distance,
    distinguishability,
    random_cumulative_distance,
)

__all__ = [
    "critical_n_vs_length",
    "distance_frame",
    "distance_vs_length",
    "distance_vs_n",
    "distinguishability_frame",
    "distinguishability_vs_n",
    "truncate_windows",
]

Windows = tuple[Tensor, Tensor] | Callable[[int], tuple[Tensor, Tensor]]


def truncate_windows(
    alpha: Float[Tensor, "*lead key"],
    values: Float[Tensor, "*lead key d"],
    length: int,
) -> tuple[Tensor, Tensor]:
    """The first ``length`` keys of each window, weights renormalised to sum to 1.

    alpha'_i = alpha_i / sum_{j < length} alpha_j  for i < length
    [ours] This is the softmax of the same query over the first ``length`` logits (a
    softmax restricted to a subset is the renormalised softmax), i.e. the long window's
    query attending to a shorter causal prefix; it is not the model run on a shorter
    window, whose final query is a different token. Pass a callable to the
    ``*_vs_length`` helpers to use windows computed at each length instead.
    """
    length_max = alpha.shape[-1]
    if isinstance(length, bool) or not isinstance(length, Integral):
        raise TlGeomError(f"length={length!r} must be an int")
    if not 2 <= length <= length_max:
        raise TlGeomError(f"length={length} out of range 2..{length_max}")
    check_weights(alpha)
    check_values(alpha, values)
    head = alpha[..., :length]
    mass = head.sum(-1, keepdim=True)
    if bool((mass <= 0).any()):
        raise TlGeomError(f"some rows have no weight on the first {length} keys")
    return head / mass, values[..., :length, :]


def _windows_at(source: Windows, length: int) -> tuple[Tensor, Tensor]:
    if callable(source):
        return source(length)
    return truncate_windows(source[0], source[1], length)


def _mean_std(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and (population) std over all dims but the last, ``[nn]`` each."""
    flat = x.reshape(-1, x.shape[-1])
    return flat.mean(0), flat.std(0, correction=0)


def distance_vs_n(
    alpha: Float[Tensor, "*lead key"],
    values: Float[Tensor, "*lead key d"],
    ns: Sequence[int],
    *,
    form: Form = "sum",
    draws: int = 16,
    seed: int = 0,
) -> pd.DataFrame:
    """``d~_N`` against N at fixed L: top-N and random-N, mean and std over rows.

    Paper (normalization.md, "Experiments to reproduce"): at L = 1024 the curve
    flattens beyond N about 20.

    Returns:
        Columns ``n, d_top, d_top_std, d_random, d_random_std`` (random: mean over
        draws per row first).
    """
    grid = list(ns)
    top = cumulative_distance(alpha, values, grid, form=form)
    rnd = random_cumulative_distance(alpha, values, grid, draws=draws, seed=seed, form=form)
    return distance_frame(top, rnd, grid)


def distance_frame(
    top: Float[Tensor, "*lead nn"], rnd: Float[Tensor, "*lead nn"], ns: Sequence[int]
) -> pd.DataFrame:
    """The table of :func:`distance_vs_n` from ``d~_N`` already measured per row.

    ``top``: top-N ``d~_N``; ``rnd``: random-N, already averaged over draws per row.
    """
    t_mean, t_std = _mean_std(top)
    r_mean, r_std = _mean_std(rnd)
    return pd.DataFrame(
        {
            "n": list(ns),
            "d_top": t_mean.cpu().numpy(),
            "d_top_std": t_std.cpu().numpy(),
            "d_random": r_mean.cpu().numpy(),
            "d_random_std": r_std.cpu().numpy(),
        }
    )


def distance_vs_length(
    source: Windows,
    lengths: Sequence[int],
    n: int = 5,
    *,
    form: Form = "sum",
    draws: int = 16,
    seed: int = 0,
) -> pd.DataFrame:
    """``d~_N`` against the context length L at fixed N (paper: N = 5, L = 32..1024).

    ``source`` is either ``(alpha, values)`` at the largest length, truncated to each L
    by :func:`truncate_windows` [ours], or a callable ``L -> (alpha, values)`` giving
    windows of each length. Paper: ``d~`` grows about linearly with L.

    Returns:
        Columns ``length, n, d_top, d_top_std, d_random, d_random_std``.
    """
    frames: list[pd.DataFrame] = []
    for length in lengths:  # shapes differ per L
        a, v = _windows_at(source, length)
        df = distance_vs_n(a, v, [n], form=form, draws=draws, seed=seed)
        df.insert(0, "length", length)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def distinguishability_vs_n(
    alpha: Float[Tensor, "*lead key"],
    values: Float[Tensor, "*#lead key d"],
    ns: Sequence[int],
) -> pd.DataFrame:
    """``N_s / N`` against N: mean and std over rows.

    Paper: declines up to N ~ 16, then saturates around 0.70-0.85 (normalization.md,
    "Experiments to reproduce").

    ``values`` may broadcast against ``alpha``'s lead dims, e.g. one residual stream
    shared by a layer's heads (``[layer, batch, 1, L, d]`` against ``[layer, batch,
    head, L]``): then it is expanded one slice of the first lead dim at a time, so the
    expanded ``[..., L, d]`` never exists whole.

    Returns:
        Columns ``n, ns_over_n, ns_over_n_std``.
    """
    grid = list(ns)
    lead = tuple(alpha.shape[:-1])
    if tuple(values.shape[:-2]) == lead:
        ratio = distinguishability(alpha, values, grid)
    else:
        if torch.broadcast_shapes(lead, values.shape[:-2]) != torch.Size(lead) or not lead:
            raise TlGeomError(
                f"values {tuple(values.shape)} do not broadcast to alpha {tuple(alpha.shape)}"
            )
        full = values.expand(*lead, *values.shape[-2:])
        pairs = zip(alpha, full, strict=True)
        ratio = torch.stack([distinguishability(a, v, grid) for a, v in pairs])
    return distinguishability_frame(ratio, grid)


def distinguishability_frame(ratio: Float[Tensor, "*lead nn"], ns: Sequence[int]) -> pd.DataFrame:
    """The table of :func:`distinguishability_vs_n` from ``N_s / N`` already measured per row.

    Returns:
        Columns ``n, ns_over_n, ns_over_n_std`` (mean and population std over rows).
    """
    mean, std = _mean_std(ratio)
    return pd.DataFrame(
        {"n": list(ns), "ns_over_n": mean.cpu().numpy(), "ns_over_n_std": std.cpu().numpy()}
    )


def critical_n_vs_length(
    source: Windows,
    lengths: Sequence[int],
    ns: Sequence[int],
    *,
    level: float = 0.01,
    draws: int = 1,
    seed: int = 0,
    form: Form = "sum",
) -> pd.DataFrame:
    """Critical N (:func:`critical_n`) against L; the grid at each L is ``ns`` cut to N < L.

    ``source`` as in :func:`distance_vs_length`. Paper: ``N* ~ 0.06 L``.

    Returns:
        Columns ``length, critical_n, critical_fraction, grid_max``; ``critical_n`` is
        NaN where every N on the grid rejects (then ``N* > grid_max``).
    """
    rows: list[dict[str, float]] = []
    for length in lengths:
        a, v = _windows_at(source, length)
        grid = [k for k in ns if k < length]
        if not grid:
            raise TlGeomError(f"no N in {list(ns)} is below L={length}")
        res = critical_n(a, v, grid, level=level, draws=draws, seed=seed, form=form)
        crit = math.nan if res.n is None else float(res.n)
        rows.append(
            {
                "length": length,
                "critical_n": crit,
                "critical_fraction": crit / length,
                "grid_max": max(grid),
            }
        )
    return pd.DataFrame(rows)
