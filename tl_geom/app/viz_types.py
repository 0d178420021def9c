"""Figures of the head types (spec: geometry.md, "Head taxonomy") as inline SVG strings.

A map of the types over layer x head, their count per layer, and the ``c_last`` /
``c_sink`` curves per type, all coloured by :data:`TYPE_COLOURS`. Drawing only: the
types come from ``heads.csv`` and the curves from ``metrics.csv``.
"""

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tl_geom.app.columns import column
from tl_geom.app.plotting import group_stats, label_grid, log2_axis, pick, to_svg
from tl_geom.geometry.taxonomy import MIXER, RESET, RETRIEVER, UNCLEAR

__all__ = ["TYPE_COLOURS", "type_curves_svg", "type_depth_svg", "type_map_svg"]

TYPE_COLOURS = {
    RETRIEVER: "#1f77b4",
    MIXER: "#2ca02c",
    RESET: "#d62728",
    UNCLEAR: "#bdbdbd",
}
"""Colour of each head type in the report (maps, bars, curves, the attention view)."""


def type_map_svg(types: np.ndarray, layers: Sequence[int], heads: Sequence[int]) -> str:
    """Layer x head map of head types: ``types`` is ``[layer, head]`` of names ("" = none)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    names = list(TYPE_COLOURS)
    codes = np.full(types.shape, np.nan)
    for k, name in enumerate(names):
        codes[types == name] = k
    cmap = ListedColormap(list(TYPE_COLOURS.values())).with_extremes(bad="#ffffff")
    w = max(2.5, 0.22 * len(heads) + 1.8)
    h = max(1.6, 0.16 * len(layers) + 0.8)
    fig = Figure(figsize=(w, h))
    ax = fig.subplots()
    ax.imshow(codes, cmap=cmap, vmin=-0.5, vmax=len(names) - 0.5, aspect="auto")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title("head type")
    label_grid(ax, layers, heads)
    handles = [Patch(color=c, label=t) for t, c in TYPE_COLOURS.items()]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    return to_svg(fig)


def type_depth_svg(layer: np.ndarray, types: Sequence[str]) -> str:
    """Stacked bars: how many heads of each type in every layer."""
    layers = sorted({int(v) for v in layer[np.isfinite(layer)]})
    fig = Figure(figsize=(min(9.0, 0.22 * len(layers) + 2.5), 2.4))
    ax = fig.subplots()
    bottom = np.zeros(len(layers))
    kinds = np.asarray(types, dtype=object)
    for name, colour in TYPE_COLOURS.items():
        counts = np.array([np.sum((layer == lay) & (kinds == name)) for lay in layers], float)
        ax.bar(layers, counts, bottom=bottom, color=colour, label=name, width=0.85)
        bottom += counts
    ax.set_xlabel("layer")
    ax.set_ylabel("heads")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return to_svg(fig)


def type_curves_svg(
    metrics: pd.DataFrame, heads: pd.DataFrame, *, examples: int = 3
) -> tuple[str, dict[str, list[tuple[int, int]]]]:
    """``c_last`` (solid) and ``c_sink`` (dashed) vs N, one panel per head type.

    Each panel: the type's mean curves (thick) and up to ``examples`` heads evenly
    chosen in depth order (thin). Returns the SVG and the ``(layer, head)`` drawn.
    """
    n, m_layer, m_head = column(metrics, "n"), column(metrics, "layer"), column(metrics, "head")
    c_last, c_sink = column(metrics, "c_last"), column(metrics, "c_sink")
    kinds = heads["type"].astype(str).to_numpy() if "type" in heads.columns else np.array([])
    present = [t for t in TYPE_COLOURS if np.any(kinds == t)]
    fig = Figure(figsize=(2.4 * max(1, len(present)) + 0.4, 2.4))
    axes = np.atleast_1d(fig.subplots(1, max(1, len(present)), sharey=True, squeeze=False)).ravel()
    drawn: dict[str, list[tuple[int, int]]] = {}
    ns = sorted({int(v) for v in n[np.isfinite(n) & (n >= 1)]})
    key = m_layer * 100_000 + m_head
    for ax, name in zip(axes, present, strict=False):
        sel = kinds == name
        pairs = list(
            zip(
                column(heads, "layer")[sel].astype(int),
                column(heads, "head")[sel].astype(int),
                strict=True,
            )
        )
        rows = np.isin(key, [lay * 100_000 + h for lay, h in pairs])
        x, mean_last = group_stats(n[rows], c_last[rows])
        _, mean_sink = group_stats(n[rows], c_sink[rows])
        colour = TYPE_COLOURS[name]
        ax.plot(x, mean_last["mean"], "-", color=colour, lw=2.2, label="c_last (mean)")
        ax.plot(x, mean_sink["mean"], "--", color=colour, lw=2.2, label="c_sink (mean)")
        chosen = [pairs[i] for i in pick(list(range(len(pairs))), examples)]
        for lay, h in chosen:
            one = key == lay * 100_000 + h
            order = np.argsort(n[one])
            ax.plot(n[one][order], c_last[one][order], "-", color="k", lw=0.6, alpha=0.6)
            ax.plot(n[one][order], c_sink[one][order], "--", color="k", lw=0.6, alpha=0.6)
        drawn[name] = [(int(a), int(b)) for a, b in chosen]
        ax.set_title(f"{name} ({len(pairs)} heads)")
        ax.set_xlabel("N")
        ax.set_ylim(-1.05, 1.05)
        ax.grid(alpha=0.3)
        if ns:
            log2_axis(ax, ns, max_ticks=5)
    axes[0].set_ylabel("cosine")
    if present:
        axes[0].legend(loc="lower left", frameon=False)
    return to_svg(fig), drawn
