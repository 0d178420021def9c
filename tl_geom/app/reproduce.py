"""Does it match the papers? Run their experiments and judge each claim (``tl-geom reproduce``).

For every model, the experiments of the three papers run at the scale a :class:`Budget`
sets, through the library's own functions (nothing is re-implemented here):

    geometry       analyze (sdpa where possible): separability vs random, rho0, the
                   assumption diagnostics, head types          -> 7 claims, every model
    normalization  final-query rows at L = norm_ctx: d~ vs L and N, KS critical N,
                   N_s/N, gradient sensitivity on the rows' own logits -> 5, every model
    sparsify       head removal by type, heuristics, random     -> 1, decoders
    sink origins   variance discrepancy, massive activations, super neurons -> 3, decoders
    interventions  self-only mask, variance amplification (+ control) -> 2, decoders
    headnorm       the two-arm TinyLM study                     -> 1, once per run

Each claim is judged by a function of its paper's claims module, with its verdict rule
beside it (:mod:`tl_geom.geometry.claims`, :mod:`tl_geom.geometry.assumption_claims`,
:mod:`tl_geom.normalization.claims`, :mod:`tl_geom.sinks.claims`). ``reproduce(out=DIR)``
writes ``claims.csv`` (``claim, paper, source, model, measured, verdict, n, interval``),
``claims.html`` (a plot per claim, offline) and ``reproduce.json`` (budget, numbers, plot
data, timings per experiment and claim).
"""

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tl_geom.app.budget import FULL, QUICK, Budget
from tl_geom.app.geometry_experiments import Findings, geometry_experiment, sparsify_experiment
from tl_geom.app.normalization_experiments import normalization_experiment
from tl_geom.app.sinks_experiments import (
    headnorm_experiment,
    interventions_experiment,
    sink_origins_experiment,
)
from tl_geom.claim import ClaimText, Finding
from tl_geom.errors import TlGeomError
from tl_geom.geometry import claims as gc
from tl_geom.jobs.results import atomic_write_text
from tl_geom.jobs.run_facts import open_model
from tl_geom.lens.data import load_corpus
from tl_geom.lens.hooks import is_causal, model_dims
from tl_geom.normalization import claims as nc
from tl_geom.sinks import claims as sc

__all__ = [
    "CLAIMS",
    "EXPERIMENTS",
    "FULL",
    "QUICK",
    "Budget",
    "ClaimRow",
    "Reproduction",
    "reproduce",
]

CLAIMS: dict[str, ClaimText] = {**gc.CLAIMS, **nc.CLAIMS, **sc.CLAIMS}
"""Claim id -> text, paper and section, over the three papers (their ``claims`` modules)."""

COLUMNS = ("claim", "paper", "source", "model", "measured", "verdict", "n", "interval")
DEFAULT_MODELS = ("smollm2-135m", "minilm-l6")


def _interval_text(interval: tuple[float, float] | None) -> str:
    """``"lo..hi"`` (``g`` form) of a Finding's interval, ``""`` without one."""
    return "" if interval is None else f"{interval[0]:g}..{interval[1]:g}"


@dataclass(frozen=True)
class ClaimRow:
    """One row of ``claims.csv`` plus what ``claims.html`` and ``reproduce.json`` need."""

    claim_id: str
    model: str
    finding: Finding
    experiment: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The CSV columns, then ``claim_id, numbers, plot, experiment, seconds``.

        ``n`` is the sample size behind the verdict and ``interval`` its 95% interval as
        ``[lo, hi]`` (empty where the claim's rule has none).
        """
        text = CLAIMS[self.claim_id]
        return {
            "claim": text.claim,
            "paper": text.paper,
            "source": f"{text.paper}, {text.source}",
            "model": self.model,
            "measured": self.finding.measured,
            "verdict": self.finding.verdict,
            "n": self.finding.n,
            "interval": _interval_text(self.finding.interval),
            "claim_id": self.claim_id,
            "numbers": self.finding.numbers,
            "plot": self.finding.plot,
            "experiment": self.experiment,
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class Reproduction:
    """All claims of one ``reproduce`` run and its provenance (budget, timings)."""

    rows: list[ClaimRow]
    run: dict[str, Any]

    def to_frame(self) -> pd.DataFrame:
        """The ``claims.csv`` table: ``COLUMNS`` (measured, verdict, n, interval, ...)."""
        frame = pd.DataFrame([{k: r.to_dict()[k] for k in COLUMNS} for r in self.rows])
        # as claims.csv reads back: a missing n or interval is NaN
        frame["n"] = np.asarray(pd.to_numeric(frame["n"], errors="coerce"), dtype=np.float64)
        frame["interval"] = frame["interval"].replace("", np.nan)
        return frame

    def save(self, out: Path) -> None:
        """Write ``claims.csv``, ``reproduce.json`` and ``claims.html`` into ``out``."""
        from tl_geom.app.claims_report import write_claims_report

        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "claims.csv", self.to_frame().to_csv(index=False))
        doc = {**self.run, "claims": [r.to_dict() for r in self.rows]}
        atomic_write_text(out / "reproduce.json", json.dumps(doc, indent=2, default=_json))
        write_claims_report([r.to_dict() for r in self.rows], self.run, out / "claims.html")


def _json(x: Any) -> Any:
    if isinstance(x, np.integer | np.floating | np.bool_):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


# --- the run -----------------------------------------------------------------------------


_FAST: dict[str, Callable[[Any, str, Budget], Findings]] = {
    "geometry": geometry_experiment,
    "normalization": normalization_experiment,
}
_HOOKS: dict[str, Callable[[Any, str, Budget], Findings]] = {
    "sparsify": sparsify_experiment,
    "sink_origins": sink_origins_experiment,
    "interventions": interventions_experiment,
}
EXPERIMENTS = (*_FAST, *_HOOKS, "headnorm")
"""The experiment names, in run order (``reproduce(experiments=...)``, ``--only``)."""


def _fit_context(budget: Budget, n_ctx: int | None) -> Budget:
    """``budget`` with ``ctx`` and ``norm_ctx`` cut to the model's context [ours].

    MiniLM (n_ctx 512) under :data:`FULL` (L = 1024) runs at L = 512, recorded in
    ``reproduce.json`` as ``context_clamped``.
    """
    if not n_ctx or max(budget.ctx, budget.norm_ctx) <= n_ctx:
        return budget
    return replace(budget, ctx=min(budget.ctx, n_ctx), norm_ctx=min(budget.norm_ctx, n_ctx))


def _run_models(
    models: Sequence[str],
    todo: set[str],
    budget: Budget,
    corpus: str,
    run: Callable[..., None],
    timings: dict[str, float],
    clamped: dict[str, dict[str, int]],
) -> None:
    """The experiments of :func:`reproduce` in order: per model the fast ones, then the hooked."""
    for name in models:
        causal = None
        if todo & set(_FAST):
            t0 = time.perf_counter()
            fast = open_model(name, "auto")
            timings[f"load_fast:{name}"] = time.perf_counter() - t0
            fitted = _fit_context(budget, model_dims(fast).n_ctx)
            if fitted != budget:
                clamped[name] = {"ctx": fitted.ctx, "norm_ctx": fitted.norm_ctx}
            for exp in (e for e in _FAST if e in todo):
                run(exp, name, _FAST[exp], fast, corpus, fitted)
            causal = is_causal(fast)
            del fast
        if causal is False or not todo & set(_HOOKS):
            continue
        from tl_geom.lens.models import load_model

        t0 = time.perf_counter()
        bridge = load_model(name)
        timings[f"load_hooks:{name}"] = time.perf_counter() - t0
        if is_causal(bridge):
            for exp in (e for e in _HOOKS if e in todo):
                run(exp, name, _HOOKS[exp], bridge, corpus, budget)
        del bridge
    cfg = budget.headnorm
    if cfg is not None and "headnorm" in todo:
        run("headnorm", f"tinylm-{cfg.n_layers}x{cfg.n_heads}", headnorm_experiment, cfg, corpus)


def reproduce(
    models: Sequence[str] = DEFAULT_MODELS,
    *,
    budget: Budget = QUICK,
    corpus: str = "war_and_peace",
    out: str | Path | None = None,
    experiments: Sequence[str] | None = None,
    progress: bool = True,
) -> Reproduction:
    """Run the papers' experiments on ``models`` and judge every claim that applies.

    Encoders (bidirectional attention, e.g. ``minilm-l6``) get the geometry and
    normalization claims; decoders also sparsification, sink origins and the
    interventions. The HeadNorm study runs once (model ``tinylm-LxH``) unless
    ``budget.headnorm`` is None.

    Args:
        models: shipped names, local directories or cached hub ids.
        budget: sizes (:data:`QUICK`, :data:`FULL` or your own :class:`Budget`).
        corpus: shipped corpus name or UTF-8 file.
        out: directory for ``claims.csv``, ``claims.html``, ``reproduce.json`` (None: memory).
        experiments: a subset of :data:`EXPERIMENTS` (None: all).
        progress: print one line per finished experiment.

    Returns:
        A :class:`Reproduction` (``to_frame()`` is ``claims.csv``). If an experiment
        raises, the claims finished so far are still written to ``out`` (``error`` in
        ``reproduce.json``) before the exception propagates.
    """
    todo = set(EXPERIMENTS if experiments is None else experiments)
    unknown = sorted(todo - set(EXPERIMENTS))
    if unknown:
        raise TlGeomError(f"unknown experiments {unknown}; known: {', '.join(EXPERIMENTS)}")
    if not todo or (not models and (budget.headnorm is None or "headnorm" not in todo)):
        raise TlGeomError("nothing to run: no models (or no experiments) and no HeadNorm study")
    load_corpus(corpus)  # fail fast on a missing corpus
    t_start = time.perf_counter()
    rows: list[ClaimRow] = []
    timings: dict[str, float] = {}
    clamped: dict[str, dict[str, int]] = {}

    def run(name: str, model_name: str, fn: Callable[..., Findings], *args: Any) -> None:
        t0 = time.perf_counter()
        found = fn(*args)
        secs = time.perf_counter() - t0
        timings[f"{name}:{model_name}"] = secs
        rows.extend(ClaimRow(cid, model_name, f, name, secs) for cid, f in found)
        if progress:
            verdicts = ", ".join(f"{cid} {f.verdict}" for cid, f in found)
            print(f"[reproduce] {model_name} {name} ({secs:.1f}s): {verdicts}", flush=True)

    def finish(error: str | None) -> Reproduction:
        timings["total"] = time.perf_counter() - t_start
        run_info = {
            "models": list(models),
            "corpus": corpus,
            "experiments": [e for e in EXPERIMENTS if e in todo],
            "context_clamped": clamped,
            "budget": budget.to_dict(),
            "timings_s": timings,
            "torch_threads": torch.get_num_threads(),
            "error": error,
        }
        result = Reproduction(rows, run_info)
        if out is not None and (rows or error is None):
            result.save(Path(out))
        return result

    try:
        _run_models(models, todo, budget, corpus, run, timings, clamped)
    except Exception as exc:  # keep the finished claims of a long run, then re-raise
        finish(f"{type(exc).__name__}: {exc}")
        raise
    return finish(None)
