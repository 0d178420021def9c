"""Assumption-check sections of ``report.html``: the attention profile and the diagnostics.

The profile section fits the 4-phase model (:func:`tl_geom.geometry.profile.attention_profile`)
once per layer drawn, here, and hands the fit to :func:`tl_geom.app.viz.profile_svg`,
which only draws. Strings from the data are escaped (:mod:`tl_geom.app.html`).
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from tl_geom.app.columns import column, holds, ints, nanmedian
from tl_geom.app.html import esc, fmt, table
from tl_geom.errors import TlGeomError
from tl_geom.geometry.profile import attention_profile
from tl_geom.jobs.results import Analysis

if TYPE_CHECKING:  # viz imports matplotlib, an optional dependency: imported when drawing
    from tl_geom.app.viz import PhaseFit

__all__ = [
    "CHECKS",
    "diagnostics_section",
    "layer_mean_profiles",
    "phase_fits",
    "profile_section",
    "rho0_recall",
]

CHECKS = (  # (assumption, holds column, measure columns)
    ("1. stable value norms (CV small)", "norm_cv_holds", ("norm_cv_tokens",)),
    ("1. compressed sink value (lambda small)", "sink_compressed", ("sink_lambda",)),
    ("2. exponential similarity decay", "decay_holds", ("beta", "beta_r2")),
    ("3. four-phase attention profile", "profile_holds", ("profile_r2",)),
)
"""The assumption checks of heads.csv: label, its holds column, its measure columns."""

_MEASURES = ("sink_mass", "entropy", "norm_cv_tokens", "sink_lambda", "beta", "beta_r2", "rho0")
"""Measure columns of the per-head table, in order (then ``profile_r2``)."""


def layer_mean_profiles(
    profiles: np.ndarray, *, max_layers: int = 4
) -> tuple[list[int], np.ndarray]:
    """The layers drawn (indices into ``profiles``) and their mean profile ``[chosen, key]``.

    ``profiles`` is ``[layer, head, key]``; heads are averaged (NaN skipped, a layer
    with none gives zeros), negatives clipped and each row renormalised to sum 1.
    At most ``max_layers`` layers, evenly spaced, with the first and the last.
    """
    from tl_geom.app.plotting import pick

    prof = np.asarray(profiles, dtype=np.float64)
    if prof.ndim != 3 or prof.shape[0] == 0 or prof.shape[2] == 0:
        raise TlGeomError(f"profiles must be [layer, head, key], got shape {prof.shape}")
    chosen = pick(list(range(prof.shape[0])), max_layers)
    sub = prof[chosen]
    count = np.isfinite(sub).sum(1)
    rows = np.nan_to_num(sub, nan=0.0).sum(1) / np.maximum(count, 1)
    rows = np.clip(rows, 0.0, None)
    sums = rows.sum(-1, keepdims=True)
    return chosen, np.where(sums > 0, rows / np.where(sums > 0, sums, 1.0), 0.0)


def phase_fits(rows: np.ndarray, layers: Sequence[int]) -> list["PhaseFit"]:
    """The 4-phase fit of every mean profile row, by :func:`attention_profile` (once each).

    A row the fit rejects (e.g. fewer than 4 keys) gets a :class:`PhaseFit` with the
    reason in ``note``. ``layers`` names the rows.
    """
    from tl_geom.app.viz import PhaseFit

    fits: list[PhaseFit] = []
    for layer, row in zip(layers, rows, strict=True):
        try:
            fit = attention_profile(torch.from_numpy(row[None]))
        except TlGeomError as exc:
            fits.append(PhaseFit(layer, note=str(exc)))
            continue
        cps = [int(c) for c in fit.change_points[0]]
        means = tuple(float(m) for m in fit.means[0])
        fits.append(PhaseFit(layer, (0, *cps), means, float(fit.r2_rest[0]), bool(fit.holds[0])))
    return fits


def profile_section(a: Analysis, layers: list[int]) -> str:
    """The final query's mean attention profile per layer, its 4-phase fit and a table."""
    from tl_geom.app.viz import PHASES, profile_svg

    prof = np.asarray(a.profiles)
    if prof.ndim != 3 or prof.size == 0:
        return f"<p>No attention profiles (profiles.npy has shape {esc(prof.shape)}).</p>"
    ids = layers if len(layers) == prof.shape[0] else list(range(prof.shape[0]))
    chosen, rows = layer_mean_profiles(prof)
    fits = phase_fits(rows, [ids[i] if i < len(ids) else i for i in chosen])
    svg = profile_svg(rows, fits)
    out: list[tuple[object, ...]] = []
    for f in fits:
        if f.note:
            out.append((f.layer, *["n/a"] * 5, f"no fit: {f.note}"))
        else:
            phases = [f"{s}: {mu:.2e}" for s, mu in zip(f.starts, f.means, strict=True)]
            out.append((f.layer, *phases, f.r2_rest, "✓" if f.holds else "✗"))
    header = ("layer", *[f"{p} (start: mean)" for p in PHASES], "R² (pos >= 1)", "holds")
    return (
        f'<div class="plot">{svg}</div><p class="note">Mean over heads of the final query\'s '
        "attention (log scale); shaded: the 4 phases of the exact least-squares "
        "piecewise-constant fit (tl_geom.geometry.profile.attention_profile); dashed: the fit.</p>"
        + table(header, out)
    )


def rho0_recall(a: Analysis) -> list[tuple[object, ...]]:
    """Per N: the heads with both values and Spearman(rho0, recall) across them."""
    from scipy.stats import rankdata

    def keyed(df: pd.DataFrame, col: str, rows: np.ndarray) -> dict[tuple[float, float], float]:
        cols = (column(df, "layer")[rows], column(df, "head")[rows], column(df, col)[rows])
        return {(lay, h): v for lay, h, v in zip(*cols, strict=True) if np.isfinite(v)}

    rho0 = keyed(a.heads, "rho0", np.ones(len(a.heads), dtype=bool))
    n = column(a.metrics, "n")
    out: list[tuple[object, ...]] = []
    for k in ints(n):
        recall = keyed(a.metrics, "recall", n == k)
        both = [(rho0[key], r) for key, r in recall.items() if key in rho0]
        rho = None
        if len(both) > 2:
            x, y = (rankdata(np.array(v)) for v in zip(*both, strict=True))
            rho = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else None
        out.append((k, len(both), rho))
    return out


def _per_head(h: pd.DataFrame) -> str:
    """The per-head table: measures, types and the check marks (collapsed)."""
    cols = {c: column(h, c) for c in ("layer", "head", *_MEASURES, "profile_r2")}
    flags = [holds(h, c) for _, c, _ in CHECKS]
    types = h["type"].astype(str).tolist() if "type" in h.columns else ["n/a"] * len(h)
    mark = {True: "✓", False: "✗", None: "?"}
    rows = [
        (
            fmt(cols["layer"][i], ".0f"),
            fmt(cols["head"][i], ".0f"),
            types[i],
            *(cols[c][i] for c in (*_MEASURES, "profile_r2")),
            *(mark[f[i]] for f in flags),
        )
        for i in range(len(h))
    ]
    header = (
        "layer",
        "head",
        "type",
        *_MEASURES,
        "profile_r2",
        "norms",
        "sink",
        "decay",
        "profile",
    )
    return (
        f"<details><summary>Per-head table ({len(h)} heads; ✓ holds, ✗ fails, ? unknown)"
        f"</summary>{table(header, rows)}</details>"
    )


def diagnostics_section(a: Analysis) -> str:
    """Counts of every assumption check, rho0 vs recall, histograms, the per-head table."""
    from tl_geom.app.viz import histograms_svg

    h = a.heads
    counts: list[tuple[object, ...]] = []
    for label, col, measures in CHECKS:
        v = holds(h, col)
        yes, no = sum(x is True for x in v), sum(x is False for x in v)
        med = ", ".join(f"{m} {fmt(nanmedian(column(h, m)))}" for m in measures)
        counts.append((label, col, yes, no, len(v) - yes - no, med))
    parts = [table(("assumption", "column", "holds", "fails", "unknown", "median"), counts)]
    rec = rho0_recall(a)
    if rec:
        header = ("N", "heads", "Spearman(rho0, recall)")
        parts.append("<h3>4. sink similarity vs recall</h3>" + table(header, rec))
    hist = histograms_svg(
        [("norm_cv_tokens", column(h, "norm_cv_tokens")), ("beta", column(h, "beta"))]
    )
    parts.append(f'<div class="plot">{hist}</div>')
    parts.append(_per_head(h))
    return "".join(parts)
