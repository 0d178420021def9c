"""The report's "heads to look at": one head at a time, as :func:`tl_geom.inspect_head` shows it.

For each head of :class:`~tl_geom.jobs.results.HeadRows` (a few of each type and the
extremes of the heatmaps, :func:`tl_geom.jobs.head_rows.pick_heads`): P/R/F vs N against
random N-subsets, the value-space picture of ``y_i = alpha_i v_i`` with the top-N set
and ``s_N`` (a 2-D PCA projection), the distances ``D_i = ||y_i - s_N||`` by rank with
``r_max`` and ``r_min`` (geometry.md, "Metrics"), and the top tokens. All of window 0's
final query; inline SVG and tables only (no script: the circuitsvis bundle is in the
attention view once, not once per head).
"""

import numpy as np
import torch

from tl_geom.app.html import esc, fmt, table
from tl_geom.app.inspect_head import HeadInspection, inspect_row
from tl_geom.app.plotting import to_svg
from tl_geom.jobs.results import Analysis

__all__ = ["heads_section"]


def _anchor(layer: int, head: int) -> str:
    return f"head-L{layer}H{head}"


def heads_section(a: Analysis, ns: list[int], *, draws: int = 64) -> str:
    """The section's HTML: an index of the picked heads, then one panel per head.

    ``ns``: the run's N grid (N beyond the window's keys are left out); ``draws``:
    random subsets per N for each head's baseline (seed 0).
    """
    rows = a.head_rows
    if rows is None or not rows.layers:
        return "<p>No heads to look at in this run (inspect.npz was not written).</p>"
    length = rows.alpha.shape[1]
    grid = sorted({n for n in ns if 1 <= n < length} | {rows.show})
    shown = [
        inspect_row(
            (lay, hd, length - 1),
            torch.from_numpy(np.asarray(rows.alpha[i])),
            torch.from_numpy(np.asarray(rows.values[i])),
            rows.tokens,
            grid,
            show=rows.show,
            draws=draws,
        )
        for i, (lay, hd) in enumerate(zip(rows.layers, rows.heads, strict=True))
    ]
    k = grid.index(rows.show)
    index = table(
        ("head", "why", f"F1 at N = {rows.show}", "random", "r_max", "r_min"),
        [
            (
                f"L{v.layer}H{v.head}",
                why,
                float(v.result.f1[k]),
                float(v.random.f1[k]),
                float(v.result.r_max[k]),
                float(v.result.r_min[k]),
            )
            for v, why in zip(shown, rows.reasons, strict=True)
        ],
    )
    links = " ".join(
        f'<a href="#{_anchor(v.layer, v.head)}">L{v.layer}H{v.head}</a>' for v in shown
    )
    parts = [
        f"<p>The final query (position {length - 1}) of window 0, in {len(shown)} heads: "
        f"a few of each type and the extremes of the heatmaps. Pictures at N = {rows.show}; "
        "every number is separability's on this one row (the tables above average over "
        f"windows). {links}</p>",
        index,
    ]
    parts += [_panel(v, why) for v, why in zip(shown, rows.reasons, strict=True)]
    return "".join(parts)


def _panel(view: HeadInspection, why: str) -> str:
    f1 = float(view.result.f1[view.result.n.index(view.show)])
    top = view.top_tokens().head(max(8, 2 * view.show))
    tokens = top.to_html(index=False, float_format="{:.4g}".format, escape=True)  # pyright: ignore
    return (
        f'<h3 id="{_anchor(view.layer, view.head)}">Layer {view.layer}, head {view.head}: '
        f"{esc(why)}</h3><p><code>{esc(repr(view))}</code></p>"
        f'<div class="plot">{to_svg(view.figure())}</div>'
        '<p class="note">Left: P, R, F1 of the top-N keys (solid) and of random '
        f"N-subsets (dashed). Middle: y_i = alpha_i v_i in the first two principal "
        f"directions, the top-{view.show} keys in red, s_{view.show} the star (a "
        f"projection). Right: the exact distances D_i to s_{view.show} by rank, r_max "
        f"(red) and r_min (dashed); r_min above r_max: the top-{view.show} set is "
        f"perfectly separated (here F1 = {esc(fmt(f1))}).</p>"
        f"{tokens}"
    )
