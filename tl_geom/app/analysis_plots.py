"""An :class:`~tl_geom.jobs.results.Analysis` drawn in a notebook: matplotlib figures.

``analysis.plot_curves()``, ``analysis.plot_heatmap("f1", n=4)`` and
``analysis.report(path)`` call these; they wrap the report's own plot code
(:mod:`tl_geom.app.viz`), so a notebook and ``report.html`` draw the same figures.
"""

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from tl_geom.app.columns import column, grid, ints
from tl_geom.app.plotting import plot_style
from tl_geom.app.report import write_report
from tl_geom.app.viz import curves_figure, heatmaps_figure
from tl_geom.errors import TlGeomError
from tl_geom.jobs.results import Analysis

__all__ = ["plot_curves", "plot_heatmap", "report"]


def plot_curves(analysis: Analysis) -> Figure:
    """P, R, F1 vs N over heads: top-N, random N-subsets, the envelope (report "curves")."""
    with plot_style(), np.errstate(all="ignore"):
        return curves_figure(analysis.metrics, analysis.envelope)


def plot_heatmap(analysis: Analysis, column_name: str = "f1", n: int | None = None) -> Figure:
    """A layer x head heatmap of one column of ``metrics`` at one N, or of ``heads``.

    Args:
        analysis: the tables of one run.
        column_name: a column of ``metrics.csv`` (``f1``, ``f1_random``, ``precision``,
            ...: then ``n`` picks the N, default the smallest N >= 2) or of ``heads.csv``
            (``sink_mass``, ``entropy``, ...).
        n: the N of a metrics column.

    Raises:
        TlGeomError: a column in neither table, an N not in the grid.
    """
    m, h = analysis.metrics, analysis.heads
    layers = ints(column(m, "layer"), column(h, "layer"))
    heads = ints(column(m, "head"), column(h, "head"))
    if column_name in m.columns:
        ns = ints(column(m, "n"))
        chosen = n if n is not None else next((k for k in ns if k >= 2), ns[0])
        if chosen not in ns:
            raise TlGeomError(f"n={chosen} is not in the run's N grid {ns}")
        sel = column(m, "n") == chosen
        values, title = (
            grid(m, column(m, column_name), layers, heads, sel),
            f"{column_name}, N = {chosen}",
        )
    elif column_name in h.columns:
        every = np.ones(len(h), dtype=bool)
        values, title = grid(h, column(h, column_name), layers, heads, every), column_name
    else:
        raise TlGeomError(
            f"column {column_name!r} is in neither metrics ({', '.join(m.columns)}) "
            f"nor heads ({', '.join(h.columns)})"
        )
    scale = "unit" if column_name in ("precision", "recall", "f1") else "range"
    with plot_style(), np.errstate(all="ignore"):
        return heatmaps_figure([(title, values, "viridis", scale)], layers, heads)


def report(analysis: Analysis, path: str | Path) -> Path:
    """The self-contained ``report.html`` (:func:`tl_geom.app.report.write_report`)."""
    return write_report(analysis, Path(path))
