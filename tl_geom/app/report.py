"""The self-contained HTML report of one analysis run (``report.html`` in ``--out``).

One file that works offline: plots are inline SVG (:mod:`tl_geom.app.viz`,
:mod:`tl_geom.app.viz_types`), and the circuitsvis attention view carries its JavaScript
inline (:mod:`tl_geom.app.attention_view`). The assumption-check sections are
:mod:`tl_geom.app.report_checks`; the HTML kit :mod:`tl_geom.app.html`. Every string
taken from the data (tokens, model and corpus names, run.json) is escaped.
"""

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from tl_geom.app.columns import column, grid, ints, lookup, nanmean
from tl_geom.app.headline import headline
from tl_geom.app.html import esc, fmt, page, page_path, require_matplotlib, table, write_page
from tl_geom.app.report_attention import attention_section
from tl_geom.app.report_checks import diagnostics_section, profile_section
from tl_geom.app.report_heads import heads_section
from tl_geom.geometry.taxonomy import HEAD_TYPES
from tl_geom.jobs.results import Analysis

__all__ = ["SECTIONS", "write_report"]

SECTIONS = (
    ("summary", "Summary"),
    ("curves", "Separability vs N"),
    ("heatmaps", "Heads at a glance"),
    ("taxonomy", "Head types"),
    ("heads", "Heads to look at"),
    ("profile", "Attention profile of the final query"),
    ("diagnostics", "Assumption checks"),
    ("attention", "Attention view"),
    ("provenance", "Provenance"),
)
"""``(id, title)`` of the report's sections, in page order."""


def _summary(a: Analysis, ns: list[int], layers: list[int], heads: list[int]) -> str:
    run = a.run
    corpus = lookup(run, "corpus")
    if isinstance(corpus, dict):
        corpus = ", ".join(f"{k}={v}" for k, v in corpus.items())
    windows = lookup(run, "windows")
    if windows is None:
        counts = column(a.metrics, "windows")
        windows = int(counts[np.isfinite(counts)].max()) if np.isfinite(counts).any() else None
    ctx = lookup(run, "ctx", "length", "L")
    if ctx is None and a.profiles.ndim == 3:
        ctx = a.profiles.shape[-1]
    rows: list[tuple[str, object]] = [
        ("model", lookup(run, "model", "model_name")),
        ("corpus", corpus),
        ("windows", windows),
        ("ctx (tokens per window)", ctx),
        ("queries", lookup(run, "queries")),
        ("layers x heads", f"{len(layers)} x {len(heads)}"),
        ("N grid", ", ".join(str(n) for n in ns) or None),
    ]
    timed: dict[str, Any] = {}
    for key in ("timings_s", "timings"):
        if isinstance(run.get(key), dict):
            timed |= run[key]
    for k, v in timed.items():  # floats are seconds, ints counts (windows_run)
        shown = f"{v:.2f} s" if isinstance(v, float) and math.isfinite(v) else v
        rows.append((f"time: {k}", shown))
    parts = [table(("run", ""), rows)]
    text: list[str] = []
    n_heads = len(layers) * len(heads)
    has_baseline = _has_baseline(a)
    if not has_baseline:
        text.append("No random baseline in this run (draws = 0): top-N only.")
    lead = headline(a.metrics, a.run.get("window_gaps"))
    sink = nanmean(column(a.heads, "sink_mass"))
    queries = lookup(run, "queries")
    who = "The final query rows" if queries in (None, "last", -1) else "The query rows analysed"
    uniform = f" (uniform attention would put {1 / ctx:.4f})" if isinstance(ctx, int) else ""
    text.append(
        f"{who} put {fmt(sink)} of its weight on position 0 on average over "
        f"{n_heads} heads{uniform}; mean entropy {fmt(nanmean(column(a.heads, 'entropy')))} nats."
    )
    imp0 = column(a.heads, "imp0")
    if np.isfinite(imp0).any():
        known = imp0[np.isfinite(imp0)]
        text.append(
            f"Sink rate (sinks.md): imp(0) > 0.3 over the first 64 queries in "
            f"{int((known > 0.3).sum())} of {known.size} heads ({fmt((known > 0.3).mean())})."
        )
    if lead:  # the headline first: the smallest non-trivial N (headline.py)
        items = "".join(f"<li>{esc(t)}</li>" for t in lead)
        parts.insert(0, f"<p><b>Top-N against random N-subsets</b></p><ul>{items}</ul>")
    parts.append(f"<p>{esc(' '.join(text))}</p>")
    if "type" in a.heads.columns:
        counts = a.heads["type"].fillna("missing").astype(str).value_counts()
        parts.append("<h3>Head types</h3>" + table(("type", "heads"), list(counts.items())))
    return "".join(parts)


def _has_baseline(a: Analysis) -> bool:
    """Whether metrics.csv holds any random-baseline value (not a ``draws = 0`` run)."""
    return bool(np.isfinite(column(a.metrics, "f1_random")).any())


def _curves(a: Analysis) -> str:
    from tl_geom.app.viz import curves_svg, layer_f1_svg

    if len(a.metrics) == 0:
        return "<p>metrics.csv is empty.</p>"
    small, drawn = layer_f1_svg(a.metrics)
    return (
        f'<div class="plot">{curves_svg(a.metrics, a.envelope)}</div>'
        '<p class="note">Means over all heads. Blue: the top-N keys, shaded +-1 s.d. over '
        "windows (pooled over heads); orange: random N-subsets; dashed black: the expected "
        "value under the fitted assumption model (envelope.csv).</p>"
        f"<h3>F1 vs N per layer</h3><div class='plot'>{small}</div>"
        f'<p class="note">Layers {esc(", ".join(map(str, drawn)))}. Line: mean over heads; '
        "band: range over heads; dashed: random N-subsets.</p>"
    )


def _heatmaps(a: Analysis, ns: list[int], layers: list[int], heads: list[int]) -> str:
    from tl_geom.app.viz import heatmaps_svg

    if not layers or not heads:
        return "<p>No layer/head rows to draw.</p>"
    nz = [n for n in ns if n >= 2] or ns  # N = 1 is perfect for any subset: not shown
    chosen = list(dict.fromkeys([nz[0], nz[len(nz) // 2], nz[-1]])) if nz else []
    m, f1 = a.metrics, column(a.metrics, "f1")
    gap = f1 - column(m, "f1_random")
    has_baseline = _has_baseline(a)
    sel = [column(m, "n") == n for n in chosen]
    f1s = [
        (f"F1, N = {n}", grid(m, f1, layers, heads, s), "viridis", "unit")
        for n, s in zip(chosen, sel, strict=True)
    ]
    gaps = [
        (f"F1 - random, N = {n}", grid(m, gap, layers, heads, s), "RdBu", "symmetric")
        for n, s in zip(chosen, sel, strict=True)
        if has_baseline
    ]
    every = np.ones(len(a.heads), dtype=bool)
    per_head = [
        (name, grid(a.heads, column(a.heads, col), layers, heads, every), cmap, scale)
        for name, col, cmap, scale in (
            ("sink mass", "sink_mass", "magma", "range"),
            ("imp(0), first 64 queries", "imp0", "magma", "range"),
            ("entropy (nats)", "entropy", "viridis", "range"),
            ("rho0", "rho0", "RdBu_r", "symmetric"),
        )
    ]
    out = []
    for panels, shared in ((f1s, True), (gaps, True), (per_head, False)):
        if panels:
            svg = heatmaps_svg(panels, layers, heads, shared=shared)
            out.append(f'<div class="plot">{svg}</div>')
    out.append(
        '<p class="note">Rows are layers, columns heads; grey: no value. Gap: blue where '
        "the top-N keys separate better than random subsets.</p>"
    )
    return "".join(out)


def _taxonomy(a: Analysis, layers: list[int], heads: list[int]) -> str:
    from tl_geom.app.viz_types import type_curves_svg, type_depth_svg, type_map_svg

    h = a.heads
    kinds = h["type"].astype(str).to_numpy() if "type" in h.columns else np.array([])
    tax = a.run.get("taxonomy") if isinstance(a.run.get("taxonomy"), dict) else None
    if not {"c_last", "c_sink"} <= set(a.metrics.columns) or tax is None or not layers:
        return "<p>No head types in this run (no taxonomy curves in the tables).</p>"
    cfg = tax.get("config", {})
    km = tax.get("kmeans", {})
    rules = (
        "Final query, curves averaged over windows and read in log N (rules on N and N / L, "
        f"not on grid positions): early N &le; {esc(fmt(cfg.get('early_n')))}, late N &ge; "
        f"{esc(fmt(cfg.get('late_frac'), '.3g'))} L. Retriever: the last token holds &ge; "
        f"{esc(fmt(cfg.get('retriever_share')))} of the mass split and c_last &ge; "
        f"{esc(fmt(cfg.get('retriever_min')))} on average over 2 &le; N &le; "
        f"{esc(fmt(cfg.get('early_n')))} and over N &ge; 2. Mixer: c_sink falls and c_last "
        f"rises by &ge; {esc(fmt(cfg.get('shift_min')))}, the curves swap order, and c_last "
        f"reaches {esc(fmt(cfg.get('weak_max')))} before N = "
        f"{esc(fmt(cfg.get('cross_frac'), '.3g'))} L. Reset: early c_sink &ge; "
        f"{esc(fmt(cfg.get('sink_min')))}, sink share of the mass split &ge; the last "
        f"token's, c_last below {esc(fmt(cfg.get('weak_max')))} until N = "
        f"{esc(fmt(cfg.get('cross_frac'), '.3g'))} L. No rule or several: unclear. Label "
        "stability: the share of bootstrap resamples of the windows giving the same label "
        "(heads.csv type_stability). Thresholds are ours "
        "(tl_geom.geometry.taxonomy.TaxonomyConfig)."
    )
    check = (
        f"Unsupervised check: k-means (k = 3) on both curves and the mass shares agrees with "
        f"the rules on {esc(fmt(km.get('accuracy')))} of the "
        f"{esc(fmt(km.get('labelled_heads')))} labelled heads (best cluster-to-type map); "
        f"adjusted Rand index {esc(fmt(km.get('adjusted_rand')))}."
    )
    grid = np.full((len(layers), len(heads)), "", dtype=object)
    li = {v: i for i, v in enumerate(layers)}
    hi = {v: i for i, v in enumerate(heads)}
    for lay, head, kind in zip(column(h, "layer"), column(h, "head"), kinds, strict=True):
        if np.isfinite(lay) and np.isfinite(head) and int(lay) in li and int(head) in hi:
            grid[li[int(lay)], hi[int(head)]] = kind
    curves, drawn = type_curves_svg(a.metrics, h)
    layer = column(h, "layer")
    thirds = np.array_split(np.array(layers), 3)
    names = HEAD_TYPES
    depth_rows: list[tuple[object, ...]] = []
    for part in thirds:
        if len(part):
            sel = np.isin(layer, part)
            depth_rows.append(
                (f"layers {part[0]}-{part[-1]}", *[int(np.sum(sel & (kinds == t))) for t in names])
            )
    examples = "; ".join(
        f"{t}: " + ", ".join(f"L{lay}H{hd}" for lay, hd in pairs) for t, pairs in drawn.items()
    )
    return (
        f"<p>{rules}</p><p>{check}</p>"
        f'<div class="plot">{type_map_svg(grid, layers, heads)}</div>'
        f'<div class="plot">{type_depth_svg(layer, list(kinds))}</div>'
        + table(("depth", *names), depth_rows)
        + f'<div class="plot">{curves}</div>'
        f'<p class="note">Solid: c_last = cos(s_N, v_q); dashed: c_sink = cos(s_N, v_0). '
        f"Thick: the type's mean; thin black: example heads ({esc(examples)}).</p>"
    )


def write_report(analysis: Analysis, path: Path) -> Path:
    """Write the self-contained HTML report of ``analysis`` to ``path``.

    Sections (ids in :data:`SECTIONS`): summary, P/R/F1 curves vs N against the random
    baseline and the envelope, layer x head heatmaps, head types, the heads to look at
    (:mod:`tl_geom.app.report_heads`), the final query's attention
    profile with its 4-phase fit, assumption checks, the circuitsvis attention view
    (inline JavaScript) and run.json. No request leaves the page.

    Args:
        analysis: the tables of one run.
        path: the file to write (``report.html`` inside it if it is a directory).

    Returns:
        The path written.

    Raises:
        TlGeomError: matplotlib is not installed.
    """
    require_matplotlib("the HTML report")
    from tl_geom.app.plotting import plot_style

    path = page_path(path)
    a = analysis
    ns = [n for n in ints(column(a.metrics, "n")) if n >= 1]
    layers = ints(column(a.metrics, "layer"), column(a.heads, "layer"))
    heads = ints(column(a.metrics, "head"), column(a.heads, "head"))
    with plot_style(), np.errstate(all="ignore"):
        bodies = {
            "summary": _summary(a, ns, layers, heads),
            "curves": _curves(a),
            "heatmaps": _heatmaps(a, ns, layers, heads),
            "taxonomy": _taxonomy(a, layers, heads),
            "heads": heads_section(a, ns),
            "profile": profile_section(a, layers),
            "diagnostics": diagnostics_section(a),
            "attention": attention_section(a.view, a.heads),
            "provenance": f"<pre>{esc(json.dumps(a.run, indent=2, default=str))}</pre>",
        }
    model = lookup(a.run, "model", "model_name")
    title = f"tl_geom report: {model}" if model is not None else "tl_geom report"
    nav = " ".join(f'<a href="#{sid}">{esc(t)}</a>' for sid, t in SECTIONS)
    sections = "\n".join(
        f'<section id="{sid}"><h2>{esc(t)}</h2>\n{bodies[sid]}\n</section>' for sid, t in SECTIONS
    )
    body = f"<h1>{esc(title)}</h1><nav>{nav}</nav>\n{sections}\n"
    return write_page(path, page(title, body, viewport=True))
