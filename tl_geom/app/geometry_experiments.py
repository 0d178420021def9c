"""The separability paper's experiments of ``tl-geom reproduce`` (arXiv 2602.01893).

Each runs the library's own functions on a model and returns (claim id, finding) pairs,
judged by :mod:`tl_geom.geometry.claims` and :mod:`tl_geom.geometry.assumption_claims`.
"""

import math
from typing import Any

from tl_geom.app.budget import Budget
from tl_geom.claim import Finding
from tl_geom.geometry import assumption_claims as gac
from tl_geom.geometry import claims as gc
from tl_geom.jobs.analyze import analyze
from tl_geom.jobs.config import RULES
from tl_geom.jobs.sparsify import sparsify

__all__ = ["Findings", "geometry_experiment", "sparsify_experiment"]

Findings = list[tuple[str, Finding]]
"""What an experiment returns: (claim id, finding) pairs."""


def geometry_experiment(model: Any, corpus: str, b: Budget) -> Findings:
    """``analyze`` (sdpa where possible) -> separability vs random, rho0, the assumptions, types."""
    a = analyze(
        model, corpus, windows=b.windows, ctx=b.ctx, n=b.n_grid, draws=b.draws,
        seed=b.seed, backend="auto", progress=False,
    )  # fmt: skip
    ari = float(a.run.get("taxonomy", {}).get("kmeans", {}).get("adjusted_rand", math.nan))
    return [
        ("top_beats_random", gc.claim_top_beats_random(a.metrics)),
        ("peak_small_n", gc.claim_peak_small_n(a.metrics)),
        ("rho0_recall", gac.claim_rho0_recall(a.metrics, a.heads)),
        ("value_norms", gac.claim_value_norms(a.heads)),
        ("cosine_decay", gac.claim_cosine_decay(a.heads)),
        ("four_phase", gac.claim_four_phase(a.heads)),
        ("head_regimes", gac.claim_head_regimes(a.heads, ari)),
    ]


def sparsify_experiment(model: Any, corpus: str, b: Budget) -> Findings:
    """``sparsify`` with zero ablation (the paper's): type-guided vs heuristic vs random."""
    res = sparsify(
        model, corpus, windows=b.sparsify_windows, ctx=b.sparsify_ctx, heldout=b.heldout,
        fractions=(0.0, *b.fractions), rules=RULES, ablations=("zero",), seeds=b.seeds,
        progress=False,
    )  # fmt: skip
    return [("sparsify", gc.claim_sparsify(res.table))]
