"""The self-contained page of ``tl-geom sparsify``: loss curves, ranking, raw table.

Held-out loss change against the fraction of heads removed, per ablation and rule
(:mod:`tl_geom.jobs.sparsify`), as inline SVG; every string from the data is escaped.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tl_geom.app.columns import column
from tl_geom.app.html import esc, fmt, page, page_path, require_matplotlib, write_page
from tl_geom.app.html import table as html_table

__all__ = ["sparsify_svg", "write_sparsify_report"]

_RAW = ("ablation", "rule", "seed", "fraction", "heads", "loss", "delta_loss")
"""The columns of sparsify.csv shown in the raw table, in order."""


def sparsify_svg(table: pd.DataFrame) -> str:
    """Held-out loss change vs fraction of heads removed, one panel per ablation.

    One line per rule; ``random``: mean over seeds, shaded min-max.
    """
    from matplotlib.figure import Figure

    from tl_geom.app.plotting import group_stats, to_svg

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
    return to_svg(fig)


def write_sparsify_report(
    table: pd.DataFrame, summary: pd.DataFrame, run: dict[str, Any], path: Path
) -> Path:
    """A self-contained page for ``tl-geom sparsify``: loss curves, ranking, raw table.

    Args:
        table: ``sparsify.csv`` (rule, fraction, seed, loss, delta_loss, ablation, heads).
        summary: mean delta_loss per ablation and rule (``Sparsification.summary()``).
        run: provenance (``sparsify.json``).
        path: the file (``sparsify_report.html`` inside it if it is a directory, so it
            never replaces an analysis' ``report.html``).

    Raises:
        TlGeomError: matplotlib is not installed.
    """
    require_matplotlib("the HTML report")
    from tl_geom.app.plotting import plot_style

    path = page_path(path, "sparsify_report.html")
    with plot_style(), np.errstate(all="ignore"):
        svg = sparsify_svg(table)
    ranking = [(r["ablation"], r["rule"], r["delta_loss"]) for _, r in summary.iterrows()]
    raw = [tuple(r[c] for c in _RAW) for _, r in table.iterrows()]
    title = f"tl_geom sparsification: {run.get('model', '')}"
    body = (
        f"<h1>{esc(title)}</h1>"
        f"<p>{esc(run.get('heads_total'))} heads scored on {esc(run.get('windows'))} windows "
        f"of {esc(run.get('ctx'))} tokens; loss on {esc(run.get('heldout'))} held-out "
        f"windows (base loss {esc(fmt(run.get('base_loss'), '.4f'))} nats). Head types: "
        f"{esc(run.get('type_counts'))}.</p>"
        f'<div class="plot">{svg}</div>'
        "<h2>Ranking (mean loss change over the fractions &gt; 0; lower is better)</h2>"
        + html_table(("ablation", "rule", "mean delta_loss"), ranking)
        + "<details><summary>sparsify.csv</summary>"
        + html_table(_RAW, raw)
        + f"</details><h2>Provenance</h2><pre>{esc(json.dumps(run, indent=2, default=str))}</pre>"
    )
    return write_page(path, page(title, body))
