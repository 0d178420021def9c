"""The self-contained HTML report of one analysis run (``report.html`` in ``--out``).

One file that works offline: plots are inline SVG (:mod:`tl_geom.app.viz`), and the
circuitsvis attention view carries its JavaScript inline (``RenderedHTML.local_src``;
``str(html)`` is ``cdn_src``, which imports from unpkg and renders blank offline).
Every string taken from the data (tokens, model and corpus names, run.json) is escaped.
"""

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tl_geom.errors import TlGeomError
from tl_geom.jobs.results import Analysis, AttentionView, atomic_write_text

__all__ = ["SECTIONS", "write_report", "write_sparsify_report"]

SECTIONS = (
    ("summary", "Summary"),
    ("curves", "Separability vs N"),
    ("heatmaps", "Heads at a glance"),
    ("taxonomy", "Head types"),
    ("profile", "Attention profile of the final query"),
    ("diagnostics", "Assumption checks"),
    ("attention", "Attention view"),
    ("provenance", "Provenance"),
)
"""``(id, title)`` of the report's sections, in page order."""

_CHECKS = (  # (assumption, holds column, measure columns)
    ("1. stable value norms (CV small)", "norm_cv_holds", ("norm_cv",)),
    ("1. compressed sink value (lambda small)", "sink_compressed", ("sink_lambda",)),
    ("2. exponential similarity decay", "decay_holds", ("beta", "beta_r2")),
    ("3. four-phase attention profile", "profile_holds", ("profile_r2",)),
)
_CSS = """
body{font:14px/1.45 system-ui,sans-serif;max-width:1200px;margin:0 auto;padding:0 1em 3em}
nav a{margin-right:1em} h2{border-bottom:1px solid #ccc;padding-top:.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
td,th{border:1px solid #ddd;padding:2px 8px;text-align:right} th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left} .yes{color:#1a7f37} .no{color:#b42318}
.plot svg{max-width:100%;height:auto} pre{background:#f6f6f6;padding:1em;overflow:auto}
.note{color:#666;font-size:13px}
"""


def _esc(x: object) -> str:
    return html.escape(str(x), quote=True)


def _fmt(x: object, spec: str = ".3f") -> str:
    """Numbers formatted, NaN and None as ``n/a``; anything else as text."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, bool | np.bool_):
        return str(bool(x))
    if isinstance(x, int | np.integer):
        return str(int(x))
    if isinstance(x, float | np.floating):
        return format(float(x), spec)
    return str(x)


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """An HTML table; every cell is formatted with :func:`_fmt` and escaped."""

    def cell(tag: str, x: object) -> str:
        cls = {"✓": ' class="yes"', "✗": ' class="no"'}.get(str(x), "")
        return f"<{tag}{cls}>{_esc(_fmt(x))}</{tag}>"

    head = "".join(cell("th", h) for h in header)
    body = "".join("<tr>" + "".join(cell("td", x) for x in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _nanmean(x: np.ndarray) -> float:
    finite = x[np.isfinite(x)]
    return float(finite.mean()) if finite.size else float("nan")


def _nanmedian(x: np.ndarray) -> float:
    finite = x[np.isfinite(x)]
    return float(np.median(finite)) if finite.size else float("nan")


def _holds(df: pd.DataFrame, name: str) -> list[bool | None]:
    """A boolean column read back from CSV: True/False, or None where unknown."""
    if name not in df.columns:
        return [None] * len(df)
    table = {"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False}
    return [None if pd.isna(v) else table.get(str(v).strip().lower()) for v in df[name]]


def _ints(*arrays: np.ndarray) -> list[int]:
    return sorted({int(v) for a in arrays for v in a if np.isfinite(v)})


def _grid(
    df: pd.DataFrame, values: np.ndarray, layers: list[int], heads: list[int], rows: np.ndarray
) -> np.ndarray:
    """``[layer, head]`` mean of the finite ``values`` over ``df``'s selected rows (else NaN)."""
    from tl_geom.app.viz import column

    li = {v: i for i, v in enumerate(layers)}
    hi = {v: i for i, v in enumerate(heads)}
    total, count = np.zeros((len(layers), len(heads))), np.zeros((len(layers), len(heads)))
    cols = (column(df, "layer")[rows], column(df, "head")[rows], values[rows])
    for lay, head, v in zip(*cols, strict=True):
        if np.isfinite(v) and np.isfinite(lay) and np.isfinite(head):
            i, j = li.get(int(lay)), hi.get(int(head))
            if i is not None and j is not None:
                total[i, j] += v
                count[i, j] += 1
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _lookup(run: dict[str, Any], *keys: str) -> Any:
    """The first of ``keys`` set in ``run`` or in its ``config``/``args`` dict."""
    for src in (run, run.get("config"), run.get("args"), run.get("arguments")):
        if isinstance(src, dict):
            for k in keys:
                if src.get(k) not in (None, ""):
                    return src[k]
    return None


def _summary(a: Analysis, ns: list[int], layers: list[int], heads: list[int]) -> str:
    from tl_geom.app.viz import column

    run = a.run
    corpus = _lookup(run, "corpus")
    if isinstance(corpus, dict):
        corpus = ", ".join(f"{k}={v}" for k, v in corpus.items())
    windows = _lookup(run, "windows")
    if windows is None:
        counts = column(a.metrics, "windows")
        windows = int(counts[np.isfinite(counts)].max()) if np.isfinite(counts).any() else None
    ctx = _lookup(run, "ctx", "length", "L")
    if ctx is None and a.profiles.ndim == 3:
        ctx = a.profiles.shape[-1]
    rows: list[tuple[str, object]] = [
        ("model", _lookup(run, "model", "model_name")),
        ("corpus", corpus),
        ("windows", windows),
        ("ctx (tokens per window)", ctx),
        ("queries", _lookup(run, "queries")),
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
    parts = [_table(("run", ""), rows)]
    text: list[str] = []
    n_heads = len(layers) * len(heads)
    has_baseline = _has_baseline(a)
    if not has_baseline:
        text.append("No random baseline in this run (draws = 0): top-N only.")
    for n in dict.fromkeys([ns[0], ns[-1]] if ns and has_baseline else []):
        sel = column(a.metrics, "n") == n
        f1 = column(a.metrics, "f1")[sel]
        rnd = column(a.metrics, "f1_random")[sel]
        both = np.isfinite(f1) & np.isfinite(rnd)
        better = int(np.sum(f1[both] > rnd[both]))
        text.append(
            f"At N = {n} the top-N keys reach a mean F1 of {_fmt(_nanmean(f1))} against "
            f"{_fmt(_nanmean(rnd))} for random {n}-subsets (gap {_fmt(_nanmean(f1 - rnd), '+.3f')}"
            f"; top-N ahead in {better} of the {int(both.sum())} heads with both values)."
        )
    sink = _nanmean(column(a.heads, "sink_mass"))
    queries = _lookup(run, "queries")
    who = "The final query rows" if queries in (None, "last", -1) else "The query rows analysed"
    uniform = f" (uniform attention would put {1 / ctx:.4f})" if isinstance(ctx, int) else ""
    text.append(
        f"{who} put {_fmt(sink)} of its weight on position 0 on average over "
        f"{n_heads} heads{uniform}; mean entropy {_fmt(_nanmean(column(a.heads, 'entropy')))} nats."
    )
    imp0 = column(a.heads, "imp0")
    if np.isfinite(imp0).any():
        known = imp0[np.isfinite(imp0)]
        text.append(
            f"Sink rate (sinks.md): imp(0) > 0.3 over the first 64 queries in "
            f"{int((known > 0.3).sum())} of {known.size} heads ({_fmt((known > 0.3).mean())})."
        )
    parts.append(f"<p>{_esc(' '.join(text))}</p>")
    if "type" in a.heads.columns:
        counts = a.heads["type"].fillna("missing").astype(str).value_counts()
        parts.append("<h3>Head types</h3>" + _table(("type", "heads"), list(counts.items())))
    return "".join(parts)


def _has_baseline(a: Analysis) -> bool:
    """Whether metrics.csv holds any random-baseline value (not a ``draws = 0`` run)."""
    from tl_geom.app.viz import column

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
        f'<p class="note">Layers {_esc(", ".join(map(str, drawn)))}. Line: mean over heads; '
        "band: range over heads; dashed: random N-subsets.</p>"
    )


def _heatmaps(a: Analysis, ns: list[int], layers: list[int], heads: list[int]) -> str:
    from tl_geom.app.viz import column, heatmaps_svg

    if not layers or not heads:
        return "<p>No layer/head rows to draw.</p>"
    chosen = list(dict.fromkeys([ns[0], ns[len(ns) // 2], ns[-1]])) if ns else []
    m, f1 = a.metrics, column(a.metrics, "f1")
    gap = f1 - column(m, "f1_random")
    has_baseline = _has_baseline(a)
    sel = [column(m, "n") == n for n in chosen]
    f1s = [
        (f"F1, N = {n}", _grid(m, f1, layers, heads, s), "viridis", "unit")
        for n, s in zip(chosen, sel, strict=True)
    ]
    gaps = [
        (f"F1 - random, N = {n}", _grid(m, gap, layers, heads, s), "RdBu", "symmetric")
        for n, s in zip(chosen, sel, strict=True)
        if has_baseline
    ]
    every = np.ones(len(a.heads), dtype=bool)
    per_head = [
        (name, _grid(a.heads, column(a.heads, col), layers, heads, every), cmap, scale)
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
    from tl_geom.app.viz import column, type_curves_svg, type_depth_svg, type_map_svg

    h = a.heads
    kinds = h["type"].astype(str).to_numpy() if "type" in h.columns else np.array([])
    tax = a.run.get("taxonomy") if isinstance(a.run.get("taxonomy"), dict) else None
    if not {"c_last", "c_sink"} <= set(a.metrics.columns) or tax is None or not layers:
        return "<p>No head types in this run (no taxonomy curves in the tables).</p>"
    cfg = tax.get("config", {})
    km = tax.get("kmeans", {})
    rules = (
        f"Final query, curves averaged over windows; early / late = first / last third of "
        f"the N grid. Retriever: c_last &ge; {_esc(_fmt(cfg.get('retriever_min')))} at every N. "
        f"Mixer: c_sink falls and c_last rises by &ge; {_esc(_fmt(cfg.get('shift_min')))} "
        "and the curves cross. Reset: early c_sink &ge; "
        f"{_esc(_fmt(cfg.get('sink_min')))}, c_last &lt; {_esc(_fmt(cfg.get('weak_max')))} "
        "outside the late third, sink share of the mass split &ge; the last token's. "
        "No rule or several: unclear. Thresholds are ours "
        "(tl_geom.geometry.taxonomy.TaxonomyConfig)."
    )
    check = (
        f"Unsupervised check: k-means (k = 3) on both curves and the mass shares agrees with "
        f"the rules on {_esc(_fmt(km.get('accuracy')))} of the "
        f"{_esc(_fmt(km.get('labelled_heads')))} labelled heads (best cluster-to-type map); "
        f"adjusted Rand index {_esc(_fmt(km.get('adjusted_rand')))}."
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
    names = ("Retriever", "Mixer", "Reset", "unclear")
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
        + _table(("depth", *names), depth_rows)
        + f'<div class="plot">{curves}</div>'
        f'<p class="note">Solid: c_last = cos(s_N, v_q); dashed: c_sink = cos(s_N, v_0). '
        f"Thick: the type's mean; thin black: example heads ({_esc(examples)}).</p>"
    )


def _profile(a: Analysis, layers: list[int]) -> str:
    from tl_geom.app.viz import PHASES, profile_svg

    prof = np.asarray(a.profiles)
    if prof.ndim != 3 or prof.size == 0:
        return f"<p>No attention profiles (profiles.npy has shape {_esc(prof.shape)}).</p>"
    ids = layers if len(layers) == prof.shape[0] else list(range(prof.shape[0]))
    svg, fits = profile_svg(prof, ids)
    rows: list[tuple[object, ...]] = []
    for f in fits:
        if f.note:
            rows.append((f.layer, *["n/a"] * 5, f"no fit: {f.note}"))
        else:
            phases = [f"{s}: {mu:.2e}" for s, mu in zip(f.starts, f.means, strict=True)]
            rows.append((f.layer, *phases, f.r2_rest, "✓" if f.holds else "✗"))
    header = ("layer", *[f"{p} (start: mean)" for p in PHASES], "R² (pos >= 1)", "holds")
    return (
        f'<div class="plot">{svg}</div><p class="note">Mean over heads of the final query\'s '
        "attention (log scale); shaded: the 4 phases of the exact least-squares "
        "piecewise-constant fit (tl_geom.geometry.profile.attention_profile); dashed: the fit.</p>"
        + _table(header, rows)
    )


def _rho0_recall(a: Analysis) -> list[tuple[object, ...]]:
    """Per N: the heads with both values and Spearman(rho0, recall) across them."""
    from scipy.stats import rankdata

    from tl_geom.app.viz import column

    def keyed(df: pd.DataFrame, col: str, rows: np.ndarray) -> dict[tuple[float, float], float]:
        cols = (column(df, "layer")[rows], column(df, "head")[rows], column(df, col)[rows])
        return {(lay, h): v for lay, h, v in zip(*cols, strict=True) if np.isfinite(v)}

    rho0 = keyed(a.heads, "rho0", np.ones(len(a.heads), dtype=bool))
    n = column(a.metrics, "n")
    out: list[tuple[object, ...]] = []
    for k in _ints(n):
        recall = keyed(a.metrics, "recall", n == k)
        both = [(rho0[key], r) for key, r in recall.items() if key in rho0]
        rho = None
        if len(both) > 2:
            x, y = (rankdata(np.array(v)) for v in zip(*both, strict=True))
            rho = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else None
        out.append((k, len(both), rho))
    return out


def _diagnostics(a: Analysis) -> str:
    from tl_geom.app.viz import column, histograms_svg

    h = a.heads
    counts: list[tuple[object, ...]] = []
    for label, col, measures in _CHECKS:
        v = _holds(h, col)
        yes, no = sum(x is True for x in v), sum(x is False for x in v)
        med = ", ".join(f"{m} {_fmt(_nanmedian(column(h, m)))}" for m in measures)
        counts.append((label, col, yes, no, len(v) - yes - no, med))
    parts = [_table(("assumption", "column", "holds", "fails", "unknown", "median"), counts)]
    rec = _rho0_recall(a)
    if rec:
        header = ("N", "heads", "Spearman(rho0, recall)")
        parts.append("<h3>4. sink similarity vs recall</h3>" + _table(header, rec))
    hist = histograms_svg([("norm_cv", column(h, "norm_cv")), ("beta", column(h, "beta"))])
    parts.append(f'<div class="plot">{hist}</div>')
    measures = ("sink_mass", "entropy", "norm_cv", "sink_lambda", "beta", "beta_r2", "rho0")
    cols = [column(h, c) for c in ("layer", "head", *measures, "profile_r2")]
    flags = [_holds(h, c) for _, c, _ in _CHECKS]
    types = h["type"].astype(str).tolist() if "type" in h.columns else ["n/a"] * len(h)
    mark = {True: "✓", False: "✗", None: "?"}
    per_head = [
        (
            _fmt(cols[0][i], ".0f"),
            _fmt(cols[1][i], ".0f"),
            types[i],
            *(c[i] for c in cols[2:]),
            *(mark[f[i]] for f in flags),
        )
        for i in range(len(h))
    ]
    header = ("layer", "head", "type", *measures, "profile_r2", "norms", "sink", "decay", "profile")
    parts.append(
        f"<details><summary>Per-head table ({len(h)} heads; ✓ holds, ✗ fails, ? unknown)"
        f"</summary>{_table(header, per_head)}</details>"
    )
    return "".join(parts)


def _view_types(view: AttentionView, heads: pd.DataFrame, n_heads: int) -> list[str]:
    """The type of each head of the view's layer ("" where unknown)."""
    from tl_geom.app.viz import column

    out = [""] * n_heads
    if "type" not in heads.columns:
        return out
    lay, hd = column(heads, "layer"), column(heads, "head")
    for i, kind in enumerate(heads["type"].astype(str)):
        if lay[i] == view.layer and np.isfinite(hd[i]) and 0 <= int(hd[i]) < n_heads:
            out[int(hd[i])] = "" if kind == "unclassified" else kind
    return out


def _attention(view: AttentionView | None, heads: pd.DataFrame) -> str:
    if view is None:
        return "<p>No attention view in this run (view.json was not written).</p>"
    from tl_geom.app.viz import TYPE_COLOURS, attention_view_html

    pattern = np.nan_to_num(np.asarray(view.pattern, dtype=np.float64), nan=0.0)
    t = len(view.tokens)
    if pattern.ndim != 3 or pattern.shape[1:] != (t, t) or t == 0:
        return f"<p>view.json does not match: pattern {_esc(pattern.shape)} for {t} tokens.</p>"
    kinds = _view_types(view, heads, pattern.shape[0])
    rank = {k: i for i, k in enumerate(TYPE_COLOURS)}
    order = sorted(range(pattern.shape[0]), key=lambda h: (rank.get(kinds[h], len(rank)), h))
    names = [f"L{view.layer}H{h} {kinds[h]}".strip() for h in order]
    try:
        embed = attention_view_html(pattern[order], [str(x) for x in view.tokens], names)
    except ImportError:
        return "<p>circuitsvis is not installed: <code>pip install 'tl-geom[viz]'</code>.</p>"
    chips = "".join(
        f'<span style="background:{TYPE_COLOURS.get(kinds[h], "#fff")};padding:1px 6px;'
        f'margin-right:4px;border-radius:3px;border:1px solid #ccc">{_esc(name)}</span>'
        for h, name in zip(order, names, strict=True)
    )
    grouped = " grouped by head type (colours as in Head types)" if any(kinds) else ""
    return (
        f"<p>Layer {_esc(view.layer)}, the first {t} tokens of one window; rows renormalised "
        f"over the tokens shown. Heads{grouped}; click a head to enlarge it.</p>"
        f"<p>{chips}</p>" + embed
    )


def write_report(analysis: Analysis, path: Path) -> Path:
    """Write the self-contained HTML report of ``analysis`` to ``path``.

    Sections (ids in :data:`SECTIONS`): summary, P/R/F1 curves vs N against the random
    baseline and the envelope, layer x head heatmaps, the final query's attention
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
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise TlGeomError("the HTML report needs matplotlib: pip install 'tl-geom[viz]'") from None
    from tl_geom.app.viz import column, plot_style

    path = Path(path)
    if path.is_dir():
        path = path / "report.html"
    a = analysis
    ns = [n for n in _ints(column(a.metrics, "n")) if n >= 1]
    layers = _ints(column(a.metrics, "layer"), column(a.heads, "layer"))
    heads = _ints(column(a.metrics, "head"), column(a.heads, "head"))
    with plot_style(), np.errstate(all="ignore"):
        bodies = {
            "summary": _summary(a, ns, layers, heads),
            "curves": _curves(a),
            "heatmaps": _heatmaps(a, ns, layers, heads),
            "taxonomy": _taxonomy(a, layers, heads),
            "profile": _profile(a, layers),
            "diagnostics": _diagnostics(a),
            "attention": _attention(a.view, a.heads),
            "provenance": f"<pre>{_esc(json.dumps(a.run, indent=2, default=str))}</pre>",
        }
    model = _lookup(a.run, "model", "model_name")
    title = f"tl_geom report: {model}" if model is not None else "tl_geom report"
    nav = " ".join(f'<a href="#{sid}">{_esc(t)}</a>' for sid, t in SECTIONS)
    sections = "\n".join(
        f'<section id="{sid}"><h2>{_esc(t)}</h2>\n{bodies[sid]}\n</section>' for sid, t in SECTIONS
    )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head>\n"
        f"<body><h1>{_esc(title)}</h1><nav>{nav}</nav>\n{sections}\n</body></html>\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, page)
    return path


def write_sparsify_report(
    table: pd.DataFrame, summary: pd.DataFrame, run: dict[str, Any], path: Path
) -> Path:
    """A self-contained page for ``tl-geom sparsify``: loss curves, ranking, raw table.

    Args:
        table: ``sparsify.csv`` (rule, fraction, seed, loss, delta_loss, ablation, heads).
        summary: mean delta_loss per ablation and rule (``Sparsification.summary()``).
        run: provenance (``sparsify.json``).
        path: the file (``report.html`` inside it if it is a directory).
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise TlGeomError("the HTML report needs matplotlib: pip install 'tl-geom[viz]'") from None
    from tl_geom.app.viz import plot_style, sparsify_svg

    path = Path(path)
    if path.is_dir():
        path = path / "report.html"
    with plot_style(), np.errstate(all="ignore"):
        svg = sparsify_svg(table)
    ranking = [(r["ablation"], r["rule"], r["delta_loss"]) for _, r in summary.iterrows()]
    raw = [
        tuple(r[c] for c in ("ablation", "rule", "seed", "fraction", "heads", "loss", "delta_loss"))
        for _, r in table.iterrows()
    ]
    title = f"tl_geom sparsification: {run.get('model', '')}"
    body = (
        f"<h1>{_esc(title)}</h1>"
        f"<p>{_esc(run.get('heads_total'))} heads scored on {_esc(run.get('windows'))} windows "
        f"of {_esc(run.get('ctx'))} tokens; loss on {_esc(run.get('heldout'))} held-out "
        f"windows (base loss {_esc(_fmt(run.get('base_loss'), '.4f'))} nats). Head types: "
        f"{_esc(run.get('type_counts'))}.</p>"
        f'<div class="plot">{svg}</div>'
        "<h2>Ranking (mean loss change over the fractions &gt; 0; lower is better)</h2>"
        + _table(("ablation", "rule", "mean delta_loss"), ranking)
        + "<details><summary>sparsify.csv</summary>"
        + _table(("ablation", "rule", "seed", "fraction", "heads", "loss", "delta_loss"), raw)
        + f"</details><h2>Provenance</h2><pre>{_esc(json.dumps(run, indent=2, default=str))}</pre>"
    )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head>\n<body>{body}</body></html>\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, page)
    return path
