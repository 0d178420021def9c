"""The self-contained ``claims.html`` page of ``tl-geom reproduce``: a table and a plot per claim.

Plots are inline SVG drawn with :class:`matplotlib.figure.Figure` (no pyplot, no
backend), styled by :func:`tl_geom.app.plotting.plot_style`; the page loads nothing from the
network. Every string from the data is escaped.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np

from tl_geom.app.html import esc, page, require_matplotlib, table, write_page
from tl_geom.geometry import claims as gc
from tl_geom.normalization import claims as nc
from tl_geom.sinks import claims as sc

__all__ = ["claim_svg", "write_claims_report"]

_VERDICT_CSS = """
.v-reproduced{color:#1a7f37;font-weight:600} .v-partly{color:#9a6700;font-weight:600}
.v-not{color:#b42318;font-weight:600} .claim{display:inline-block;width:380px;
vertical-align:top;margin:0 1em 1.2em 0} .claim p{margin:.2em 0;font-size:13px}
.claims td,.claims th{text-align:left}
"""
_FOLDER = {gc.PAPER: "geometry", nc.PAPER: "normalization", sc.PAPER: "sinks"}
"""Paper id -> the folder of its claims and verdict rules."""


def claim_svg(plot: dict[str, Any]) -> str:
    """One small SVG from a :class:`tl_geom.claim.Finding` ``plot`` dict ("" if empty).

    ``kind="line"``: one line per series against ``x``; ``kind="bar"``: grouped bars
    over the ``x`` labels. ``band``: the paper's range as a shaded horizontal band.
    """
    from matplotlib.figure import Figure

    from tl_geom.app.plotting import to_svg

    series: dict[str, list[float]] = plot.get("series") or {}
    x = plot.get("x") or []
    if not series or not x:
        return ""
    fig = Figure(figsize=(3.6, 2.4))
    ax = fig.add_subplot()
    if plot.get("kind") == "bar":
        width = 0.8 / len(series)
        pos = np.arange(len(x))
        for i, (label, ys) in enumerate(series.items()):
            ax.bar(pos + i * width - 0.4 + width / 2, np.asarray(ys, float), width, label=label)
        ax.set_xticks(pos, labels=[str(v) for v in x])
    else:
        for label, ys in series.items():
            ax.plot(np.asarray(x, float), np.asarray(ys, float), marker="o", ms=3, label=label)
        if plot.get("logx"):
            ax.set_xscale("log")
    if plot.get("logy"):
        ax.set_yscale("log")
    band = plot.get("band")
    if band:
        ax.axhspan(float(band[0]), float(band[1]), color="#2ca02c", alpha=0.15, label="paper")
    ax.set_xlabel(str(plot.get("xlabel", "")))
    ax.set_ylabel(str(plot.get("ylabel", "")))
    if len(series) > 1 or band:
        ax.legend(fontsize=6)
    return to_svg(fig)


def _verdict_class(verdict: str) -> str:
    return {"reproduced": "v-reproduced", "partly": "v-partly"}.get(verdict, "v-not")


def write_claims_report(rows: list[dict[str, Any]], run: dict[str, Any], path: Path) -> Path:
    """Write ``claims.html``: the claims table, one plot per claim and model, provenance.

    Args:
        rows: :meth:`tl_geom.app.reproduce.ClaimRow.to_dict` of every claim.
        run: the run's provenance (budget, timings).
        path: the file to write.

    Raises:
        TlGeomError: matplotlib is not installed.
    """
    require_matplotlib("claims.html")
    from tl_geom.app.plotting import plot_style

    counts = {
        v: sum(r["verdict"] == v for r in rows)
        for v in ("reproduced", "partly", "not reproduced", "inconclusive")
    }
    claims = table(
        ("claim", "paper", "model", "measured", "verdict"),
        [(r["claim"], r["paper"], r["model"], r["measured"], r["verdict"]) for r in rows],
    )
    cards = []
    with plot_style(), np.errstate(all="ignore"):
        for r in rows:
            cards.append(
                f'<div class="claim"><p><b>{esc(r["claim"])}</b></p>'
                f"<p>{esc(r['source'])} &middot; {esc(r['model'])} &middot; "
                f'<span class="{_verdict_class(r["verdict"])}">{esc(r["verdict"])}</span></p>'
                f'<div class="plot">{claim_svg(r["plot"])}</div>'
                f"<p>{esc(r['measured'])}</p>"
                f'<p class="note">rule: claim_{esc(r["claim_id"])} of '
                f"tl_geom.{_FOLDER.get(r['paper'], '?')} "
                f"({esc(r['experiment'])}, {r['seconds']:.1f}s)</p></div>"
            )
    summary = ", ".join(f"{n} {esc(v)}" for v, n in counts.items())
    title = "tl_geom: does it match the papers?"
    body = (
        f"<h1>{esc(title)}</h1><p>{len(rows)} claims x models: {summary}. Thresholds of the "
        "verdicts are ours (the claims modules of tl_geom.geometry, tl_geom.normalization, "
        "tl_geom.sinks); a claim that fails here is a finding about "
        "these models at this scale.</p>"
        f'<h2>Claims</h2><div class="claims">{claims}</div>'
        f"<h2>Plots</h2>{''.join(cards)}"
        f"<h2>Provenance</h2><pre>{esc(json.dumps(run, indent=2, default=str))}</pre>"
    )
    return write_page(path, page(title, body, css=_VERDICT_CSS))
