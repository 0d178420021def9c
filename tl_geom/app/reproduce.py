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
writes ``claims.csv`` (``claim, paper, source, model, measured, verdict``), ``claims.html``
(a plot per claim, offline) and ``reproduce.json`` (budget, numbers, plot data, timings
per experiment and claim).
"""

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tl_geom.claim import ClaimText, Finding
from tl_geom.errors import TlGeomError
from tl_geom.geometry import assumption_claims as gac
from tl_geom.geometry import claims as gc
from tl_geom.jobs.analyze import analyze
from tl_geom.jobs.results import atomic_write_text
from tl_geom.jobs.run_facts import open_model
from tl_geom.jobs.sparsify import RULES, sparsify
from tl_geom.lens.capture import capture_attention
from tl_geom.lens.data import load_corpus, token_windows
from tl_geom.lens.hooks import is_causal, model_dims
from tl_geom.lens.interventions import self_only_mask
from tl_geom.normalization import claims as nc
from tl_geom.normalization.softmax_bounds import gradient_sensitivity
from tl_geom.normalization.tables import (
    critical_n_vs_length,
    distance_vs_length,
    distance_vs_n,
    distinguishability_vs_n,
)
from tl_geom.sinks import claims as sc
from tl_geom.sinks.headnorm import StudyConfig, headnorm_study
from tl_geom.sinks.measures import massive_activation_profile, sink_profile
from tl_geom.sinks.origins import super_neurons, variance_discrepancy
from tl_geom.sinks.shift import sink_shift

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

COLUMNS = ("claim", "paper", "source", "model", "measured", "verdict")
DEFAULT_MODELS = ("smollm2-135m", "minilm-l6")


@dataclass(frozen=True)
class Budget:
    """Sizes of every experiment (``QUICK``: minutes on 2 CPU cores; ``FULL``: the paper's L).

    Attributes:
        windows, ctx, draws: ``analyze``: windows of ``ctx`` tokens, random draws per row;
            N grid 1-6 and powers of two up to ctx/2 [ours: 3, 5, 6 added to resolve the
            paper's "N about 3-6"].
        norm_windows, norm_ctx: final-query rows for the normalization experiments
            (shorter L: the first L keys of the same rows, renormalised [ours]).
        norm_draws: random subsets per row for d~; ``grad_rows``: rows for g(T, eps).
        temperatures, eps: the g(T, eps) grid (must hold T = 0.01 and 1).
        sink_samples, sink_len: corpus windows for the sink measures (paper: 100 x 64).
        position, lams: k and the lam grid of the interventions (paper: k = 10).
        sparsify_windows, sparsify_ctx, heldout, seeds, fractions: ``sparsify`` (zero
            ablation, the paper's).
        headnorm: the :class:`~tl_geom.sinks.headnorm.StudyConfig` (None: skip the study).
        seed: seed of the random baselines.
    """

    windows: int = 2
    ctx: int = 256
    draws: int = 8
    norm_windows: int = 2
    norm_ctx: int = 512
    norm_draws: int = 4
    grad_rows: int = 128
    temperatures: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
    eps: tuple[float, ...] = (1e-3, 1e-1, 10.0)
    sink_samples: int = 8
    sink_len: int = 64
    position: int = 10
    lams: tuple[float, ...] = (4.0, 16.0, 64.0)
    sparsify_windows: int = 2
    sparsify_ctx: int = 128
    heldout: int = 1
    seeds: int = 2
    fractions: tuple[float, ...] = (0.1, 0.2, 0.3)
    headnorm: StudyConfig | None = field(default_factory=lambda: StudyConfig(steps=100))
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("windows", "draws", "norm_windows", "norm_draws", "grad_rows"):
            if getattr(self, name) < 1:
                raise TlGeomError(f"{name}={getattr(self, name)}; expected >= 1")
        for name in ("sink_samples", "sparsify_windows", "heldout", "seeds"):
            if getattr(self, name) < 1:
                raise TlGeomError(f"{name}={getattr(self, name)}; expected >= 1")
        if self.ctx < 16 or self.norm_ctx < 64 or self.sparsify_ctx < 16:
            raise TlGeomError(
                f"ctx={self.ctx}, norm_ctx={self.norm_ctx}, sparsify_ctx={self.sparsify_ctx}; "
                "expected >= 16, >= 64, >= 16"
            )
        if not 0 < self.position < self.sink_len:
            raise TlGeomError(f"position={self.position} out of range 1..{self.sink_len - 1}")
        if 0.01 not in self.temperatures or 1.0 not in self.temperatures:
            raise TlGeomError(f"temperatures must hold 0.01 and 1, got {self.temperatures}")
        if not self.lams or not self.fractions or not self.eps:
            raise TlGeomError("lams, fractions and eps need at least one value each")

    @property
    def n_grid(self) -> tuple[int, ...]:
        """N = 1..6 and the powers of two up to ctx / 2."""
        pow2 = [2**k for k in range(int(math.log2(self.ctx // 2)) + 1)]
        return tuple(sorted({*range(1, 7), *pow2}))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


QUICK = Budget()
"""A few minutes on 2 CPU cores."""

FULL = Budget(
    windows=4,
    ctx=1024,
    draws=16,
    norm_windows=2,
    norm_ctx=1024,
    norm_draws=8,
    grad_rows=256,
    sink_samples=16,
    lams=(4.0, 16.0, 64.0, 256.0),
    sparsify_windows=4,
    sparsify_ctx=256,
    heldout=2,
    seeds=3,
    fractions=(0.05, 0.1, 0.2, 0.3, 0.5),
    headnorm=StudyConfig(steps=1000),
)
"""The paper's L = 1024 for the geometry and normalization experiments."""


@dataclass(frozen=True)
class ClaimRow:
    """One row of ``claims.csv`` plus what ``claims.html`` and ``reproduce.json`` need."""

    claim_id: str
    model: str
    finding: Finding
    experiment: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The CSV columns, then ``claim_id, numbers, plot, experiment, seconds``."""
        text = CLAIMS[self.claim_id]
        return {
            "claim": text.claim,
            "paper": text.paper,
            "source": f"{text.paper}, {text.source}",
            "model": self.model,
            "measured": self.finding.measured,
            "verdict": self.finding.verdict,
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
        """The ``claims.csv`` table: ``claim, paper, source, model, measured, verdict``."""
        return pd.DataFrame([{k: r.to_dict()[k] for k in COLUMNS} for r in self.rows])

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


Findings = list[tuple[str, Finding]]


# --- experiments: each returns (claim id, finding) pairs ----------------------------------


def _geometry(model: Any, corpus: str, b: Budget) -> Findings:
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


def _normalization(model: Any, corpus: str, b: Budget) -> Findings:
    """Final-query rows of ``norm_windows`` windows at L = ``norm_ctx``, all layers and heads.

    Gradient sensitivity uses the rows' own logits: ``z = log alpha`` equals the model's
    scores up to a per-row constant, which softmax ignores [ours] (floored at the
    smallest normal float32 where a weight underflowed); ``grad_rows`` evenly spaced rows.
    """
    tokens = token_windows(
        model.tokenizer, load_corpus(corpus), ctx=b.norm_ctx, windows=b.norm_windows
    )
    backend = "hooks" if hasattr(model, "hook_dict") else "sdpa"
    cap = capture_attention(model, tokens, queries=-1, backend=backend)
    alpha = cap.pattern[..., 0, :].double()  # [b, layer, head, L]
    alpha = alpha / alpha.sum(-1, keepdim=True)
    values = cap.values.double()
    top_len = b.norm_ctx
    lengths = [2**k for k in range(5, int(math.log2(top_len)) + 1)]
    if lengths[-1] != top_len:
        lengths.append(top_len)
    src = (alpha, values)
    by_len = distance_vs_length(src, lengths, n=5, draws=b.norm_draws, seed=b.seed)
    ns = [n for n in (1, 5, 10, 20, 50, 100, 200) if n < top_len]
    by_n = distance_vs_n(alpha, values, ns, draws=b.norm_draws, seed=b.seed)
    grid = sorted({max(1, round(2 ** (k / 2))) for k in range(0, 2 * int(math.log2(top_len)))})
    crit = critical_n_vs_length(src, [x for x in lengths if x >= 64], grid, seed=b.seed)
    ratio = distinguishability_vs_n(
        alpha, values, [2**k for k in range(int(math.log2(top_len // 2)) + 1)]
    )
    rows = alpha.reshape(-1, alpha.shape[-1])
    pick = torch.linspace(0, rows.shape[0] - 1, min(b.grad_rows, rows.shape[0])).round().long()
    logits = rows[pick.unique()].clamp_min(torch.finfo(torch.float32).tiny).log()
    grad = gradient_sensitivity(logits, b.temperatures, b.eps, draws=4, seed=b.seed)
    return [
        ("distance_length", nc.claim_distance_length(by_len)),
        ("distance_plateau", nc.claim_distance_plateau(by_n, top_len)),
        ("critical_n", nc.claim_critical_n(crit)),
        ("recall_saturation", nc.claim_recall_saturation(ratio)),
        ("gradient_sensitivity", nc.claim_gradient_sensitivity(grad)),
    ]


def _sparsify(model: Any, corpus: str, b: Budget) -> Findings:
    res = sparsify(
        model, corpus, windows=b.sparsify_windows, ctx=b.sparsify_ctx, heldout=b.heldout,
        fractions=(0.0, *b.fractions), rules=RULES, ablations=("zero",), seeds=b.seeds,
        progress=False,
    )  # fmt: skip
    return [("sparsify", gc.claim_sparsify(res.table))]


def _sink_tokens(model: Any, corpus: str, b: Budget) -> torch.Tensor:
    return token_windows(
        model.tokenizer, load_corpus(corpus), ctx=b.sink_len, windows=b.sink_samples
    )


def _sink_origins(model: Any, corpus: str, b: Budget) -> Findings:
    tokens = _sink_tokens(model, corpus, b)
    n = max(b.sink_samples, 2)
    var_s = variance_discrepancy(model, length=b.sink_len, samples=n, seed=b.seed, over="samples")
    var_d = variance_discrepancy(model, length=b.sink_len, samples=n, seed=b.seed, over="dims")
    mass = massive_activation_profile(model, tokens)
    top = mass.values[..., 0].mean(0)  # [layer], batch mean of the largest |h|
    ratio = mass.ratio[..., 0].mean(0)
    pos, dim = mass.positions[0, :, 0], mass.dims[0, :, 0]
    sn = super_neurons(model, tokens)
    return [
        (
            "first_position_variance",
            sc.claim_first_position_variance(var_s.variance.numpy(), var_d.variance.numpy()),
        ),
        (
            "massive_activations",
            sc.claim_massive_activations(top.numpy(), ratio.numpy(), pos.numpy(), dim.numpy()),
        ),
        ("super_neurons", sc.claim_super_neurons(sn.to_frame(), sn.dim)),
    ]


def _interventions(model: Any, corpus: str, b: Budget) -> Findings:
    tokens = _sink_tokens(model, corpus, b)
    k = b.position
    before = sink_profile(model, tokens).imp[..., k].mean((0, 2))  # [layer]
    with self_only_mask(model, position=k):
        after = sink_profile(model, tokens).imp[..., k].mean((0, 2))
    shift = sink_shift(model, tokens, position=k, lams=list(b.lams))
    return [
        ("self_only_mask", sc.claim_self_only(before.numpy(), after.numpy(), k)),
        ("variance_amplification", sc.claim_variance_amplification(shift, k)),
    ]


def _headnorm(cfg: StudyConfig, corpus: str) -> Findings:
    res = headnorm_study(replace(cfg, corpus=corpus))
    return [("headnorm", sc.claim_headnorm(res.summary, cfg.steps))]


# --- the run -----------------------------------------------------------------------------


_FAST: dict[str, Callable[[Any, str, Budget], Findings]] = {
    "geometry": _geometry,
    "normalization": _normalization,
}
_HOOKS: dict[str, Callable[[Any, str, Budget], Findings]] = {
    "sparsify": _sparsify,
    "sink_origins": _sink_origins,
    "interventions": _interventions,
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
        run("headnorm", f"tinylm-{cfg.n_layers}x{cfg.n_heads}", _headnorm, cfg, corpus)


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
