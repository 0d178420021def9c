"""Plotting primitives of the pages: the style, SVG output, group statistics, axes.

Figures are built with :class:`matplotlib.figure.Figure` directly, never through
``pyplot``: no backend is selected, no figure is registered anywhere, and the caller's
plotting state is untouched (matplotlib's recipe for web servers). Styling is applied
inside :func:`plot_style` only.
"""

import io
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import matplotlib.style
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

__all__ = [
    "colour_limits",
    "group_stats",
    "label_grid",
    "log2_axis",
    "pick",
    "plot_style",
    "to_svg",
]

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


@contextmanager
def plot_style() -> Iterator[None]:
    """Matplotlib defaults plus the report's sizes, restored on exit."""
    with matplotlib.style.context(["default", _RC]):
        yield


def to_svg(fig: Figure) -> str:
    """``fig`` as an inline ``<svg>`` element (no XML prolog, no DOCTYPE, no date)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.find("<svg") :]


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


def log2_axis(ax: Axes, ns: Sequence[int], max_ticks: int = 8) -> None:
    """A log2 x axis labelled with (at most ``max_ticks`` of) the N values ``ns``."""
    ax.set_xscale("log", base=2)
    if len(ns) == 0:
        return
    step = max(1, math.ceil(len(ns) / max_ticks))
    ticks = list(ns)[::step]
    ax.set_xticks(ticks, labels=[str(n) for n in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(min(ns) / 1.3, max(ns) * 1.3)


def label_grid(ax: Axes, layers: Sequence[int], heads: Sequence[int]) -> None:
    """Tick labels of a layer x head image: at most 12 heads (x) and 12 layers (y)."""
    for setter, labels in ((ax.set_xticks, heads), (ax.set_yticks, layers)):
        idx = pick(list(range(len(labels))), 12)
        setter(idx, labels=[str(labels[i]) for i in idx])


def colour_limits(values: np.ndarray, scale: str) -> tuple[float, float]:
    """Colour range: ``"unit"`` is [0, 1], ``"symmetric"`` +-max|x|, else the finite range."""
    finite = values[np.isfinite(values)]
    if scale == "unit" or finite.size == 0:
        return 0.0, 1.0
    if scale == "symmetric":
        top = max(float(np.abs(finite).max()), 1e-12)
        return -top, top
    lo, hi = float(finite.min()), float(finite.max())
    return (lo - 0.5, hi + 0.5) if lo == hi else (lo, hi)
