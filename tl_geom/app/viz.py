"""The figures of the analysis report as inline SVG strings: drawing only, no fitting.

P, R, F1 vs N against the random baseline and the envelope, F1 per layer, layer x head
heatmaps, the attention profile with its 4-phase fit, histograms. Every value drawn
comes from the tables or from the arguments (the profile fit is computed by the caller,
:func:`tl_geom.app.report_checks.phase_fits`). Primitives: :mod:`tl_geom.app.plotting`;
head types: :mod:`tl_geom.app.viz_types`. Every function accepts NaN entries and grids
of one layer, one head or one N.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from tl_geom.app.columns import column
from tl_geom.app.plotting import (
    colour_limits,
    group_stats,
    label_grid,
    log2_axis,
    pick,
    to_svg,
)
from tl_geom.errors import TlGeomError

__all__ = [
    "PHASES",
    "PhaseFit",
    "curves_figure",
    "curves_svg",
    "heatmaps_figure",
    "heatmaps_svg",
    "histograms_svg",
    "layer_f1_svg",
    "profile_svg",
    "query_row_svg",
]

PHASES = ("sink", "plateau", "band", "ramp")
_PHASE_COLOURS = ("#d62728", "#7f7f7f", "#1f77b4", "#2ca02c")


@dataclass(frozen=True)
class PhaseFit:
    """The 4-phase fit of one layer's mean profile, as drawn.

    Attributes:
        layer: the model layer.
        starts: first position of each phase (sink, plateau, band, ramp); empty if no fit.
        means: mean weight of each phase; empty if no fit.
        r2_rest: fit quality over positions >= 1 (NaN if no fit).
        holds: whether assumption 3 holds for the mean profile.
        note: why there is no fit, or "".
    """

    layer: int
    starts: tuple[int, ...] = ()
    means: tuple[float, ...] = ()
    r2_rest: float = float("nan")
    holds: bool = False
    note: str = ""


def curves_svg(metrics: pd.DataFrame, envelope: pd.DataFrame) -> str:
    """:func:`curves_figure` as inline SVG."""
    return to_svg(curves_figure(metrics, envelope))


def curves_figure(metrics: pd.DataFrame, envelope: pd.DataFrame) -> Figure:
    """P, R, F1 vs N averaged over heads: top-N, random subsets, and the envelope.

    Shaded: +-1 pooled standard deviation over windows, ``sqrt(mean_heads(std^2))``.
    """
    names = (("precision", "Precision"), ("recall", "Recall"), ("f1", "F1"))
    n, n_env = column(metrics, "n"), column(envelope, "n")
    n[n < 1], n_env[n_env < 1] = np.nan, np.nan
    fig = Figure(figsize=(9.0, 2.6))
    axes = fig.subplots(1, 3, sharey=True)
    for ax, (m, label) in zip(axes, names, strict=True):
        x, top = group_stats(n, column(metrics, m))
        _, var = group_stats(n, column(metrics, m + "_std") ** 2)
        _, rnd = group_stats(n, column(metrics, m + "_random"))
        sd = np.sqrt(var["mean"])
        ax.fill_between(x, top["mean"] - sd, top["mean"] + sd, color="C0", alpha=0.2, lw=0)
        ax.plot(x, top["mean"], "o-", color="C0", ms=3, label="top-N")
        ax.plot(x, rnd["mean"], "s-", color="C1", ms=3, label="random N")
        ex, env = group_stats(n_env, column(envelope, m))
        if len(ex):
            ax.plot(ex, env["mean"], "--", color="k", lw=1.2, label="envelope")
        log2_axis(ax, sorted({int(v) for v in (*x, *ex)}))
        ax.set_title(label)
        ax.set_xlabel("N")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower left", frameon=False)
    return fig


def layer_f1_svg(metrics: pd.DataFrame, *, max_panels: int = 36) -> tuple[str, list[int]]:
    """Small multiples of F1 vs N, one panel per layer (evenly chosen if many).

    Each panel: mean over heads (line), range over heads (band), random mean (dashed).
    Returns the SVG and the layers drawn.
    """
    layer, n = column(metrics, "layer"), column(metrics, "n")
    n[n < 1] = np.nan
    f1, f1_random = column(metrics, "f1"), column(metrics, "f1_random")
    layers = pick(sorted({int(v) for v in layer[np.isfinite(layer) & np.isfinite(n)]}), max_panels)
    if not layers:
        return "", []
    ncol = min(6, len(layers))
    nrow = math.ceil(len(layers) / ncol)
    fig = Figure(figsize=(1.6 * ncol + 0.4, 1.3 * nrow + 0.3))
    # not sharex/sharey: limits are set per panel, as sharing costs O(panels^2)
    axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
    ns = sorted({int(v) for v in n[np.isfinite(n)]})
    for ax, lay in zip(axes, layers, strict=False):
        sel = layer == lay
        x, top = group_stats(n[sel], f1[sel])
        _, rnd = group_stats(n[sel], f1_random[sel])
        ax.fill_between(x, top["min"], top["max"], color="C0", alpha=0.2, lw=0)
        ax.plot(x, top["mean"], "o-", color="C0", ms=2, lw=1)
        ax.plot(x, rnd["mean"], "--", color="C1", lw=1)
        ax.set_title(f"layer {lay}", pad=2)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        log2_axis(ax, ns, max_ticks=4)
    for ax in axes[len(layers) :]:
        ax.set_axis_off()
    for k, ax in enumerate(axes[: len(layers)]):
        ax.tick_params(labelbottom=k + ncol >= len(layers), labelleft=k % ncol == 0)
    fig.supxlabel("N", fontsize=8)
    fig.supylabel("F1", fontsize=8)
    return to_svg(fig), layers


def heatmaps_svg(
    panels: Sequence[tuple[str, np.ndarray, str, str]],
    layers: Sequence[int],
    heads: Sequence[int],
    *,
    shared: bool = False,
) -> str:
    """:func:`heatmaps_figure` as inline SVG."""
    return to_svg(heatmaps_figure(panels, layers, heads, shared=shared))


def heatmaps_figure(
    panels: Sequence[tuple[str, np.ndarray, str, str]],
    layers: Sequence[int],
    heads: Sequence[int],
    *,
    shared: bool = False,
) -> Figure:
    """One row of layer x head heatmaps.

    Args:
        panels: ``(title, grid [layer, head], colormap, scale)``; scale ``"unit"`` is
            ``[0, 1]``, ``"symmetric"`` is ``+-max|x|`` around 0, ``"range"`` the finite range.
        layers: row labels.
        heads: column labels.
        shared: one colour scale and colour bar for the whole row (same quantity).
    """
    w = max(2.0, 0.22 * len(heads) + 1.2)
    h = max(1.5, 0.16 * len(layers) + 0.8)
    fig = Figure(figsize=(w * len(panels), h))
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)).ravel()
    joint = np.concatenate([grid.ravel() for _, grid, _, _ in panels])
    for ax, (title, grid, cmap, scale) in zip(axes, panels, strict=True):
        vmin, vmax = colour_limits(joint if shared else grid, scale)
        cm = mpl.colormaps[cmap].with_extremes(bad="#e4e4e4")
        im = ax.imshow(grid, cmap=cm, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
        if not shared:
            fig.colorbar(im, ax=ax, fraction=0.08, pad=0.03)
        elif ax is axes[-1]:
            fig.colorbar(im, ax=list(axes), fraction=0.08 / len(panels), pad=0.02)
        ax.set_title(title)
        ax.set_xlabel("head")
        label_grid(ax, layers, heads)
    axes[0].set_ylabel("layer")
    return fig


def profile_svg(rows: np.ndarray, fits: Sequence[PhaseFit]) -> str:
    """Mean final-query attention over key position per layer, with its 4-phase fit.

    ``rows`` is ``[layer, key]`` (one mean profile per layer drawn) and ``fits`` its
    :class:`PhaseFit` per row (a fit with a ``note`` draws the profile alone). The fitted
    profile is piecewise constant: ``means[k]`` from ``starts[k]`` to the next start.
    """
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[0] != len(fits) or rows.shape[0] == 0 or rows.shape[1] == 0:
        raise TlGeomError(f"rows must be [layer, key] with one fit per row, got {rows.shape}")
    length = rows.shape[1]
    fig = Figure(figsize=(min(9.0, 2.4 * len(fits) + 0.6), 2.4))
    axes = np.atleast_1d(fig.subplots(1, len(fits), sharey=True, squeeze=False)).ravel()
    positive = rows[rows > 0]
    floor = max(float(positive.min()) / 2, 1e-12) if positive.size else 1e-12
    pos = np.arange(length)
    for ax, fit, row in zip(axes, fits, rows, strict=True):
        ax.plot(pos, np.maximum(row, floor), color="C0", lw=0.8, label="mean over heads")
        ax.plot(0, max(row[0], floor), "o", color=_PHASE_COLOURS[0], ms=4)  # the sink itself
        if not fit.note:
            bounds = [*fit.starts, length]
            for k, name in enumerate(PHASES):
                ax.axvspan(
                    bounds[k] - 0.5,
                    bounds[k + 1] - 0.5,
                    color=_PHASE_COLOURS[k],
                    alpha=0.15,
                    lw=0,
                    label=name,
                )
            fitted = np.maximum(np.repeat(np.asarray(fit.means), np.diff(bounds)), floor)
            ax.step(pos, fitted, where="mid", color="k", lw=1, ls="--", label="4-phase fit")
        ax.set_yscale("log")
        ax.set_title(f"layer {fit.layer}")
        ax.set_xlabel("key position")
        ax.set_xlim(-0.5, length - 0.5)
    axes[0].set_ylabel("attention of the final query")
    legend: dict[str, Artist] = {}
    for ax in axes[: len(fits)]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.legend(
        list(legend.values()),
        list(legend),
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=6,
        frameon=False,
    )
    return to_svg(fig)


def histograms_svg(values: Sequence[tuple[str, np.ndarray]]) -> str:
    """Side-by-side histograms of the finite entries of each ``(label, values)``."""
    fig = Figure(figsize=(3.0 * len(values), 2.2))
    axes = np.atleast_1d(fig.subplots(1, len(values), squeeze=False)).ravel()
    for ax, (label, x) in zip(axes, values, strict=True):
        finite = x[np.isfinite(x)]
        if finite.size:
            ax.hist(finite, bins=min(30, max(5, finite.size // 3)), color="C0", alpha=0.8)
        else:
            ax.text(0.5, 0.5, "no finite values", ha="center", transform=ax.transAxes)
        ax.set_xlabel(label)
        ax.set_ylabel("heads")
        ax.set_title(f"{label} ({finite.size} of {x.size} heads)")
    return to_svg(fig)


def query_row_svg(weights: np.ndarray, labels: Sequence[str], names: Sequence[str]) -> str:
    """The measured query's weights ``[head, K]`` over its heaviest keys, one row per head.

    ``labels`` name the K keys (drawn under the columns), ``names`` the heads. The colour
    is the weight as measured (log scale, so the sink and the small keys both show).
    """
    w = np.asarray(weights, dtype=np.float64)
    fig = Figure(figsize=(max(4.0, 0.28 * w.shape[1] + 1.5), max(1.6, 0.22 * w.shape[0] + 1.2)))
    ax = fig.subplots()
    positive = w[w > 0]
    floor = float(positive.min()) if positive.size else 1e-12
    norm = LogNorm(vmin=max(floor, 1e-6), vmax=max(float(w.max()), floor * 10))
    im = ax.imshow(np.maximum(w, floor), cmap="magma", norm=norm, aspect="auto")
    fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02, label="weight")
    safe = [str(s).replace("$", r"\$").replace("\n", r"\n") for s in labels]  # no mathtext
    ax.set_xticks(range(w.shape[1]), safe, rotation=90, fontsize=6)
    ax.set_yticks(range(w.shape[0]), list(names), fontsize=6)
    ax.set_xlabel("key (position order)")
    return to_svg(fig)
