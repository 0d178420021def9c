"""Plots of the HTML report as inline SVG strings, and its offline circuitsvis view.

Figures are built with :class:`matplotlib.figure.Figure` directly, never through
``pyplot``: no backend is selected, no figure is registered anywhere, and the caller's
plotting state is untouched (matplotlib's recipe for web servers). Styling is applied
inside :func:`plot_style` only. Every function accepts NaN entries and grids of one
layer, one head or one N.
"""

import io
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import matplotlib as mpl
import matplotlib.style
import numpy as np
import pandas as pd
import torch
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from tl_geom.errors import TlGeomError
from tl_geom.geometry.profile import attention_profile

__all__ = [
    "PHASES",
    "TYPE_COLOURS",
    "PhaseFit",
    "attention_view_html",
    "column",
    "curves_svg",
    "group_stats",
    "heatmaps_svg",
    "histograms_svg",
    "layer_f1_svg",
    "pick",
    "plot_style",
    "profile_svg",
    "sparsify_svg",
    "type_curves_svg",
    "type_depth_svg",
    "type_map_svg",
]

PHASES = ("sink", "plateau", "band", "ramp")
_PHASE_COLOURS = ("#d62728", "#7f7f7f", "#1f77b4", "#2ca02c")
_RC = {
    "svg.fonttype": "none",  # text stays text: smaller pages, searchable labels
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


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


@contextmanager
def plot_style() -> Iterator[None]:
    """Matplotlib defaults plus the report's sizes, restored on exit."""
    with matplotlib.style.context(["default", _RC]):
        yield


def column(df: pd.DataFrame, name: str) -> np.ndarray:
    """``df[name]`` as float64: NaN where missing or not a number, all NaN if absent."""
    if name not in df.columns:
        return np.full(len(df), np.nan)
    raw = np.asarray(df[name].to_numpy())
    try:
        return raw.astype(np.float64)
    except (TypeError, ValueError):
        return np.array([_to_float(v) for v in raw], dtype=np.float64)


def _to_float(v: object) -> float:
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def group_stats(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per distinct finite key: NaN-skipping ``mean``, ``min`` and ``max`` of ``values``.

    Returns the sorted keys and ``{"mean", "min", "max"}`` arrays aligned with them
    (NaN where a key has no finite value).
    """
    ok = np.isfinite(keys)
    uniq, inv = np.unique(keys[ok], return_inverse=True)
    v = values[ok]
    fin = np.isfinite(v)
    count = np.bincount(inv[fin], minlength=len(uniq)).astype(np.float64)
    total = np.bincount(inv[fin], weights=v[fin], minlength=len(uniq))
    lo, hi = np.full(len(uniq), np.inf), np.full(len(uniq), -np.inf)
    np.minimum.at(lo, inv[fin], v[fin])
    np.maximum.at(hi, inv[fin], v[fin])
    none = count == 0
    with np.errstate(all="ignore"):
        mean = np.where(none, np.nan, total / np.maximum(count, 1))
    return uniq, {
        "mean": mean,
        "min": np.where(none, np.nan, lo),
        "max": np.where(none, np.nan, hi),
    }


def pick(items: Sequence[int], k: int) -> list[int]:
    """At most ``k`` items, evenly spaced, always with the first and the last.

    >>> pick([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 4)
    [0, 3, 6, 9]
    """
    if len(items) <= k:
        return list(items)
    idx = np.unique(np.linspace(0, len(items) - 1, k).round().astype(int))
    return [items[i] for i in idx]


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.find("<svg") :]  # drop the XML prolog and DOCTYPE for inlining


def _log2_axis(ax: Axes, ns: Sequence[int], max_ticks: int = 8) -> None:
    ax.set_xscale("log", base=2)
    if len(ns) == 0:
        return
    step = max(1, math.ceil(len(ns) / max_ticks))
    ticks = list(ns)[::step]
    ax.set_xticks(ticks, labels=[str(n) for n in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(min(ns) / 1.3, max(ns) * 1.3)


def curves_svg(metrics: pd.DataFrame, envelope: pd.DataFrame) -> str:
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
        _log2_axis(ax, sorted({int(v) for v in (*x, *ex)}))
        ax.set_title(label)
        ax.set_xlabel("N")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower left", frameon=False)
    return _svg(fig)


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
        _log2_axis(ax, ns, max_ticks=4)
    for ax in axes[len(layers) :]:
        ax.set_axis_off()
    for k, ax in enumerate(axes[: len(layers)]):
        ax.tick_params(labelbottom=k + ncol >= len(layers), labelleft=k % ncol == 0)
    fig.supxlabel("N", fontsize=8)
    fig.supylabel("F1", fontsize=8)
    return _svg(fig), layers


def _limits(values: np.ndarray, scale: str) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if scale == "unit" or finite.size == 0:
        return 0.0, 1.0
    if scale == "symmetric":
        top = max(float(np.abs(finite).max()), 1e-12)
        return -top, top
    lo, hi = float(finite.min()), float(finite.max())
    return (lo - 0.5, hi + 0.5) if lo == hi else (lo, hi)


def heatmaps_svg(
    panels: Sequence[tuple[str, np.ndarray, str, str]],
    layers: Sequence[int],
    heads: Sequence[int],
    *,
    shared: bool = False,
) -> str:
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
    joint = np.concatenate([p[1].ravel() for p in panels])
    for ax, (title, grid, cmap, scale) in zip(axes, panels, strict=True):
        vmin, vmax = _limits(joint if shared else grid, scale)
        cm = mpl.colormaps[cmap].with_extremes(bad="#e4e4e4")
        im = ax.imshow(grid, cmap=cm, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
        if not shared:
            fig.colorbar(im, ax=ax, fraction=0.08, pad=0.03)
        elif ax is axes[-1]:
            fig.colorbar(im, ax=list(axes), fraction=0.08 / len(panels), pad=0.02)
        ax.set_title(title)
        ax.set_xlabel("head")
        for setter, labels in ((ax.set_xticks, heads), (ax.set_yticks, layers)):
            idx = pick(list(range(len(labels))), 12)
            setter(idx, labels=[str(labels[i]) for i in idx])
    axes[0].set_ylabel("layer")
    return _svg(fig)


def profile_svg(
    profiles: np.ndarray, layer_ids: Sequence[int], *, max_layers: int = 4
) -> tuple[str, list[PhaseFit]]:
    """Mean final-query attention over key position per layer, with the 4-phase fit.

    ``profiles`` is ``[layer, head, key]``; heads are averaged (NaN skipped) and the row
    renormalised before :func:`tl_geom.geometry.profile.attention_profile` fits it. Returns the
    SVG and one :class:`PhaseFit` per layer drawn.
    """
    prof = np.asarray(profiles, dtype=np.float64)
    if prof.ndim != 3 or prof.shape[0] == 0 or prof.shape[2] == 0:
        raise TlGeomError(f"profiles must be [layer, head, key], got shape {prof.shape}")
    chosen = pick(list(range(prof.shape[0])), max_layers)
    sub = prof[chosen]  # mean over heads, NaN skipped (a layer with none gives zeros)
    count = np.isfinite(sub).sum(1)
    rows = np.nan_to_num(sub, nan=0.0).sum(1) / np.maximum(count, 1)
    rows = np.clip(rows, 0.0, None)
    sums = rows.sum(-1, keepdims=True)
    rows = np.where(sums > 0, rows / np.where(sums > 0, sums, 1.0), 0.0)
    length = rows.shape[1]
    fits: list[PhaseFit] = []
    fig = Figure(figsize=(min(9.0, 2.4 * len(chosen) + 0.6), 2.4))
    axes = np.atleast_1d(fig.subplots(1, len(chosen), sharey=True, squeeze=False)).ravel()
    positive = rows[rows > 0]
    floor = max(float(positive.min()) / 2, 1e-12) if positive.size else 1e-12
    pos = np.arange(length)
    for ax, i, row in zip(axes, chosen, rows, strict=True):
        layer = layer_ids[i] if i < len(layer_ids) else i
        ax.plot(pos, np.maximum(row, floor), color="C0", lw=0.8, label="mean over heads")
        ax.plot(0, max(row[0], floor), "o", color=_PHASE_COLOURS[0], ms=4)  # the sink itself
        try:
            fit = attention_profile(torch.from_numpy(row[None]))
        except TlGeomError as exc:
            fits.append(PhaseFit(layer, note=str(exc)))
        else:
            cps = [int(c) for c in fit.change_points[0]]
            bounds = [0, *cps, length]
            for k, name in enumerate(PHASES):
                ax.axvspan(
                    bounds[k] - 0.5,
                    bounds[k + 1] - 0.5,
                    color=_PHASE_COLOURS[k],
                    alpha=0.15,
                    lw=0,
                    label=name,
                )
            fitted = np.maximum(fit.fitted[0].numpy(), floor)
            ax.step(pos, fitted, where="mid", color="k", lw=1, ls="--", label="4-phase fit")
            means = tuple(float(m) for m in fit.means[0])
            fits.append(
                PhaseFit(layer, (0, *cps), means, float(fit.r2_rest[0]), bool(fit.holds[0]))
            )
        ax.set_yscale("log")
        ax.set_title(f"layer {layer}")
        ax.set_xlabel("key position")
        ax.set_xlim(-0.5, length - 0.5)
    axes[0].set_ylabel("attention of the final query")
    legend: dict[str, Artist] = {}
    for ax in axes[: len(chosen)]:
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
    return _svg(fig), fits


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
    return _svg(fig)


def attention_view_html(pattern: np.ndarray, tokens: Sequence[str], names: Sequence[str]) -> str:
    """The circuitsvis ``attention_heads`` view of ``[head, T, T]`` weights, for an offline page.

    Uses ``RenderedHTML.local_src`` (the ~1.3 MB circuitsvis bundle inline); ``str()`` of
    the rendered object is ``cdn_src``, which imports from unpkg and is blank offline.

    Raises:
        ImportError: circuitsvis is not installed.
    """
    from circuitsvis.attention import attention_heads

    rendered = attention_heads(
        attention=pattern, tokens=list(tokens), attention_head_names=list(names)
    )
    return _inline_circuitsvis(rendered.local_src)


def _inline_circuitsvis(src: str) -> str:
    r"""Make circuitsvis's ``local_src`` safe to embed in a larger page.

    It opens with ``<div id=.../>``, which HTML parses as an unclosed div that would
    swallow the rest of the page; its props are JSON inside the script, where a token
    ``</script>`` would end the script: ``<`` there becomes ``\u003c`` (same string in JS).
    The source-map comment is dropped (nothing to fetch).
    """
    src = re.sub(r'^\s*<div id="([\w-]+)"([^>]*?)\s*/>', r'<div id="\1"\2></div>', src, count=1)
    src = re.sub(r"^//# sourceMappingURL=\S*\s*$", "", src, flags=re.MULTILINE)
    cut, end = src.rfind("CircuitsVis.render("), src.rfind("</script>")
    if 0 <= cut < end:
        src = src[:cut] + src[cut:end].replace("<", "\\u003c") + src[end:]
    return src


TYPE_COLOURS = {
    "Retriever": "#1f77b4",
    "Mixer": "#2ca02c",
    "Reset": "#d62728",
    "unclear": "#bdbdbd",
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
    for setter, labels in ((ax.set_xticks, heads), (ax.set_yticks, layers)):
        idx = pick(list(range(len(labels))), 12)
        setter(idx, labels=[str(labels[i]) for i in idx])
    handles = [Patch(color=c, label=t) for t, c in TYPE_COLOURS.items()]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    return _svg(fig)


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
    return _svg(fig)


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
            _log2_axis(ax, ns, max_ticks=5)
    axes[0].set_ylabel("cosine")
    if present:
        axes[0].legend(loc="lower left", frameon=False)
    return _svg(fig), drawn


def sparsify_svg(table: pd.DataFrame) -> str:
    """Held-out loss change vs fraction of heads removed, one panel per ablation.

    One line per rule; ``random``: mean over seeds, shaded min-max.
    """
    ablations = list(dict.fromkeys(table["ablation"].astype(str))) if len(table) else []
    fig = Figure(figsize=(4.2 * max(1, len(ablations)) + 0.4, 3.0))
    axes = np.atleast_1d(fig.subplots(1, max(1, len(ablations)), squeeze=False)).ravel()
    for ax, abl in zip(axes, ablations, strict=False):
        sub = pd.DataFrame(table[table["ablation"].astype(str) == abl])
        for i, rule in enumerate(dict.fromkeys(sub["rule"].astype(str))):
            part = pd.DataFrame(sub[sub["rule"].astype(str) == rule])
            x, st = group_stats(column(part, "fraction"), column(part, "delta_loss"))
            style = "--" if rule == "random" else "o-"
            colour = "k" if rule == "random" else f"C{i}"
            ax.plot(x * 100, st["mean"], style, color=colour, ms=3, label=rule)
            if rule == "random":
                ax.fill_between(x * 100, st["min"], st["max"], color="k", alpha=0.12, lw=0)
        ax.set_title(f"{abl}-ablation")
        ax.set_xlabel("heads removed (%)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out loss change (nats)")
    if ablations:
        axes[0].legend(loc="upper left", frameon=False)
    return _svg(fig)
