"""The report's attention view: the query that was measured, then the first T tokens.

The measured query is the final query of window 0 in the layer with the most sink mass,
over its heaviest keys, with its weights as measured (``view.json``'s ``query_*``,
:func:`tl_geom.jobs.aggregate.aggregate`); the circuitsvis view (its bundle inline,
:mod:`tl_geom.app.attention_view`) shows the same layer among the first T tokens.
"""

import numpy as np
import pandas as pd

from tl_geom.app.columns import column
from tl_geom.app.html import esc, fmt
from tl_geom.jobs.results import AttentionView

__all__ = ["attention_section"]


def _view_types(view: AttentionView, heads: pd.DataFrame, n_heads: int) -> list[str]:
    """The type of each head of the view's layer ("" where unknown)."""
    out = [""] * n_heads
    if "type" not in heads.columns:
        return out
    lay, hd = column(heads, "layer"), column(heads, "head")
    for i, kind in enumerate(heads["type"].astype(str)):
        if lay[i] == view.layer and np.isfinite(hd[i]) and 0 <= int(hd[i]) < n_heads:
            out[int(hd[i])] = "" if kind == "unclassified" else kind
    return out


def attention_section(view: AttentionView | None, heads: pd.DataFrame) -> str:
    """The section's HTML: the measured query's row, then the circuitsvis view of T tokens."""
    if view is None:
        return "<p>No attention view in this run (view.json was not written).</p>"
    from tl_geom.app.attention_view import attention_view_html
    from tl_geom.app.viz_types import TYPE_COLOURS

    pattern = np.nan_to_num(np.asarray(view.pattern, dtype=np.float64), nan=0.0)
    t = len(view.tokens)
    if pattern.ndim != 3 or pattern.shape[1:] != (t, t) or t == 0:
        return f"<p>view.json does not match: pattern {esc(pattern.shape)} for {t} tokens.</p>"
    kinds = _view_types(view, heads, pattern.shape[0])
    rank = {k: i for i, k in enumerate(TYPE_COLOURS)}
    order = sorted(range(pattern.shape[0]), key=lambda h: (rank.get(kinds[h], len(rank)), h))
    names = [f"L{view.layer}H{h} {kinds[h]}".strip() for h in order]
    try:
        embed = attention_view_html(pattern[order], [str(x) for x in view.tokens], names)
    except ImportError:
        missing = "<p>circuitsvis is not installed: <code>pip install 'tl-geom[viz]'</code>.</p>"
        return _measured_query(view, kinds) + missing
    chips = "".join(
        f'<span style="background:{TYPE_COLOURS.get(kinds[h], "#fff")};padding:1px 6px;'
        f'margin-right:4px;border-radius:3px;border:1px solid #ccc">{esc(name)}</span>'
        for h, name in zip(order, names, strict=True)
    )
    grouped = " grouped by head type (colours as in Head types)" if any(kinds) else ""
    return (
        _measured_query(view, kinds)
        + f"<h3>The first {t} tokens</h3><p>Layer {esc(view.layer)}, the first {t} tokens "
        f"of the same window; rows renormalised over the tokens shown. Heads{grouped}; "
        "click a head to enlarge it.</p>"
        f"<p>{chips}</p>" + embed
    )


def _measured_query(view: AttentionView, kinds: list[str]) -> str:
    """The final query of window 0 over its heaviest keys, as measured (not renormalised)."""
    from tl_geom.app.viz import query_row_svg

    w = view.query_weights
    if w is None or w.ndim != 2 or w.shape[1] != len(view.query_positions) or w.size == 0:
        return "<p>This run kept no measured query row (made before view.json held one).</p>"
    keys = [
        f"{tok} ({pos})" for pos, tok in zip(view.query_positions, view.query_tokens, strict=False)
    ]
    names = [f"H{h} {kinds[h]}".strip() if h < len(kinds) else f"H{h}" for h in range(w.shape[0])]
    mass = w.sum(-1)
    query = view.query_tokens[-1] if len(view.query_tokens) > len(keys) else "?"
    return (
        f"<h3>The measured query</h3><p>Layer {esc(view.layer)}: the final query of window 0 "
        f"(the token {esc(repr(query))}), the row of the final-query metrics, "
        f"over its {len(keys)} heaviest keys (ranked by the largest weight over heads). "
        f"Weights as measured: these keys hold {esc(fmt(float(mass.min())))} to "
        f"{esc(fmt(float(mass.max())))} of a head's weight.</p>"
        f'<div class="plot">{query_row_svg(w, keys, names)}</div>'
    )
