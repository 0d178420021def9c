"""Tidy tables of batched metrics: one row per leading index and N (``to_frame``)."""

from collections.abc import Sequence

import pandas as pd  # pyright: ignore[reportMissingTypeStubs]
import torch
from torch import Tensor

__all__ = ["mean_table_html", "tidy_frame"]


def tidy_frame(
    metrics: dict[str, Tensor],
    n: tuple[int, ...],
    scalar_n: bool,
    dims: Sequence[str] | None,
    coords: Sequence[Sequence[int]] | None = None,
) -> pd.DataFrame:
    """One row per leading index and N: columns ``*dims, n, *metrics``.

    ``coords[i]`` labels the entries of leading dim ``i`` (real layer ids of a sliced
    capture, say); default ``0..size-1``.
    """
    if scalar_n:
        metrics = {k: v.unsqueeze(-1) for k, v in metrics.items()}
    first = next(iter(metrics.values()))
    lead = tuple(first.shape[:-1])
    names = list(dims) if dims is not None else [f"dim{i}" for i in range(len(lead))]
    if len(names) != len(lead):
        raise ValueError(f"dims has {len(names)} names for {len(lead)} leading dims")
    labels = list(coords) if coords is not None else [range(s) for s in lead]
    if len(labels) != len(lead) or any(len(c) != s for c, s in zip(labels, lead, strict=True)):
        raise ValueError(f"coords of sizes {[len(c) for c in labels]} for leading dims {lead}")
    axes = [torch.tensor(list(c), dtype=torch.long) for c in labels]
    grid = torch.meshgrid(*axes, torch.tensor(n), indexing="ij")
    cols: dict[str, object] = {
        nm: g.flatten().numpy() for nm, g in zip(names, grid[:-1], strict=True)
    }
    cols["n"] = grid[-1].flatten().numpy()
    for k, v in metrics.items():
        cols[k] = v.detach().cpu().double().flatten().numpy()
    return pd.DataFrame(cols)


def mean_table_html(
    frame: pd.DataFrame, columns: Sequence[str] = ("precision", "recall", "f1")
) -> str:
    """HTML table of the means of ``columns`` per N (a notebook's ``_repr_html_``)."""
    means = frame.groupby("n")[list(columns)].mean()  # pyright: ignore[reportUnknownMemberType]
    return str(means.to_html(float_format="{:.3g}".format))  # pyright: ignore
