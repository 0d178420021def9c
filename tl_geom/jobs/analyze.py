"""The main job: per-head geometry of a whole model over a corpus (``tl-geom analyze``).

Windows of the corpus run through the model one at a time; hooks reduce every layer to
per-head metrics inside the forward (``window.run_window``) and each window's results
are written atomically to ``out/windows/w000123.pt``. A killed run continues with
``resume=True``: finished windows are skipped, none is lost or done twice. The tables
are then aggregated over windows (means and standard deviations) into an
:class:`~tl_geom.jobs.results.Analysis`.

Encoders (BERT, e.g. ``minilm-l6``): there is no causal mask, so the "final query" is
simply the last position of the window and every row sees all keys; the sink measures
refer to position 0, the ``[CLS]`` token that opens every window.
"""

import hashlib
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from tl_geom.errors import TlGeomError
from tl_geom.geometry.fused import compiled
from tl_geom.geometry.taxonomy import TaxonomyConfig
from tl_geom.jobs.aggregate import aggregate
from tl_geom.jobs.config import AnalyzeConfig
from tl_geom.jobs.distributed import join
from tl_geom.jobs.head_rows import FinalRows, capture_head_rows, pick_heads, picture_n
from tl_geom.jobs.outdir import OutLock, check_out
from tl_geom.jobs.results import Analysis
from tl_geom.jobs.resume import WindowRun, run_windows
from tl_geom.jobs.run_facts import RunFacts, model_identity, open_model, open_run
from tl_geom.jobs.window import WindowSpec
from tl_geom.lens.capture import token_text
from tl_geom.lens.data import corpus_hash, load_corpus, token_windows
from tl_geom.lens.hooks import as_tokens

__all__ = ["analyze", "prompt_windows", "run_analysis"]


def analyze(
    model: Any = "smollm2-135m",
    corpus: str = "war_and_peace",
    *,
    text: str | None = None,
    tokens: Tensor | str | None = None,
    windows: int | None = None,
    ctx: int | None = None,
    n: Sequence[int] | None = None,
    queries: Literal["last", "all"] = "last",
    draws: int = 16,
    seed: int = 0,
    layers: Sequence[int] | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool | Literal["layers"] = True,
    backend: str = "hooks",
    device: str | None = None,
    dtype: str = "float32",
    taxonomy: TaxonomyConfig | None = None,
    compile: bool = False,
    baseline_scores: str = "auto",
) -> Analysis:
    """Per-head top-N separability, random baseline and diagnostics over corpus windows.

    For each window (``[BOS] + ctx - 1`` tokens) and head: P/R/F1, ``r_max``, ``r_min``
    and margin of the top-N keys of the final query (geometry.md, "Metrics"), the same
    for random N-subsets (``draws`` per row), sink mass, entropy, value-norm CV, sink
    compression, cosine decay and rho0 (geometry.md, "Empirical assumptions"). Then means
    and standard deviations over windows, a 4-segment fit of each head's mean attention
    profile, and the expected P/R/F under the fitted assumption model (the envelope).

    Args:
        model: a TransformerLens model, or a name for :func:`tl_geom.load_model`.
        corpus: shipped corpus name or UTF-8 file (ignored when ``text`` is given).
        text: raw text to analyse instead of a corpus.
        tokens: your own prompt instead of a corpus: ``[batch, pos]`` (or ``[pos]``)
            ids, or a string the model tokenizes. Without ``ctx`` each row is one
            window, the whole prompt; with ``ctx`` each row is cut into windows of
            ``ctx`` tokens (:func:`prompt_windows`).
        windows: number of windows (default 8 over a corpus; every window of ``tokens``).
        ctx: tokens per window (default 1024 over a corpus; the prompt's length).
        n: the N grid (default: powers of two up to ctx/2).
        queries: ``"last"`` or ``"all"``.
        draws: random subsets per row for the baseline (0: none, NaN columns).
        seed: seed of the baseline and of the envelope simulation.
        layers: layers to analyse (default all).
        out: directory for per-window results and tables (None: in memory only).
        resume: continue a run in ``out``, skipping finished windows.
        progress: show a tqdm bar over windows, and one over the layers of a window
            that runs longer than ``LAYER_BAR_DELAY`` seconds; ``"layers"``: the
            layer bar of every window at once; False: no bar.
        backend: ``"hooks"`` (default: TransformerLens hook points, composes with your
            hooks), ``"sdpa"`` (fused attention, only the needed rows; see ``lens/sdpa.py``)
            or ``"auto"`` (sdpa where the architecture allows it):
            :func:`~tl_geom.jobs.run_facts.open_model`.
        device: where to run a model loaded by name (default cpu).
        dtype: dtype of a model loaded by name (``float32``, ``bfloat16``, ``float16``,
            ``float64``).
        taxonomy: thresholds of the head-type rules (default :class:`TaxonomyConfig`);
            applied when the tables are aggregated, so not part of the resume check.
        compile: compile the random baseline's counting passes (``AnalyzeConfig.compile``).
        baseline_scores: dtype of the baseline's scores, ``"auto"`` (float32 on an
            accelerator, float64 on the CPU), ``"float64"`` or ``"float32"``; the counts
            are the same either way (``AnalyzeConfig.baseline_scores``).

    Returns:
        An :class:`~tl_geom.jobs.results.Analysis` (``metrics``, ``heads``, ``envelope``
        DataFrames, ``profiles``, ``view``, ``run``). With ``out`` it is also saved there.
    """
    given = None if isinstance(model, str) else model
    ids = None
    if tokens is not None:
        given = _open(model, backend, device, dtype)
        ids = prompt_windows(as_tokens(given, tokens), ctx, windows)
        windows, ctx = ids.shape[0], ids.shape[1]
    config = AnalyzeConfig(
        model=model if isinstance(model, str) else "<model object>",
        corpus="<tokens>" if ids is not None else corpus if text is None else "<text>",
        windows=AnalyzeConfig.windows if windows is None else windows,
        ctx=AnalyzeConfig.ctx if ctx is None else ctx,
        n=tuple(n) if n is not None else None,
        queries=queries,
        draws=draws,
        seed=seed,
        layers=tuple(layers) if layers is not None else None,
        dtype=dtype,
        backend=backend,
        device=device,
        taxonomy=taxonomy,
        compile=compile,
        baseline_scores=baseline_scores,
    )
    if ids is not None:
        return run_analysis(
            config, "", model=given, out=out, resume=resume, progress=progress, tokens=ids
        )
    body = load_corpus(corpus) if text is None else text
    return run_analysis(config, body, model=given, out=out, resume=resume, progress=progress)


def _open(model: Any, backend: str, device: str | None, dtype: str) -> Any:
    # a prompt given as text needs the tokenizer before the run; a name is loaded here
    return (
        open_model(model, backend, device=device, dtype=dtype) if isinstance(model, str) else model
    )


def prompt_windows(
    tokens: Int[Tensor, "batch pos"], ctx: int | None, windows: int | None
) -> Int[Tensor, "window ctx"]:
    """The windows of a user's prompt: each row whole, or cut into ``ctx``-token windows.

    Without ``ctx`` a ``[batch, pos]`` prompt is ``batch`` windows of ``pos`` tokens; with
    ``ctx``, row after row is cut into ``pos // ctx`` non-overlapping windows (the rest
    dropped), of which the first ``windows`` are kept (default all).

    >>> prompt_windows(torch.arange(10).view(1, 10), 4, None).tolist()
    [[0, 1, 2, 3], [4, 5, 6, 7]]

    Raises:
        TlGeomError: ``ctx`` longer than the prompt, ``windows`` more than it holds.
    """
    if ctx is not None:
        if ctx > tokens.shape[1]:
            raise TlGeomError(f"ctx={ctx} is longer than the prompt ({tokens.shape[1]} tokens)")
        per_row = tokens.shape[1] // ctx
        tokens = tokens[:, : per_row * ctx].reshape(-1, ctx)
    if windows is not None:
        if windows > tokens.shape[0]:
            raise TlGeomError(f"windows={windows} but the prompt holds {tokens.shape[0]}")
        tokens = tokens[:windows]
    return tokens


def run_analysis(
    config: AnalyzeConfig,
    body: str,
    *,
    model: Any = None,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool | Literal["layers"] = True,
    strict: bool = False,
    tokens: Int[Tensor, "window ctx"] | None = None,
) -> Analysis:
    """:func:`analyze` of a validated config over the text ``body`` (what the CLI calls).

    ``model``: a model object to use instead of loading ``config.model``; ``tokens``:
    the windows themselves (a user's prompt, :func:`prompt_windows`), ``body`` unused.
    ``strict``: refuse a bad window file in ``out`` instead of moving it aside and
    recomputing it. Nothing is written to ``out`` before the device, model, context and
    corpus passed their checks; ``out`` is locked for the run
    (:class:`~tl_geom.jobs.outdir.OutLock`).
    """
    t_start = time.perf_counter()
    if out is not None:
        check_out(Path(out), "analyze")  # fail fast, before the model loads; writes nothing
    model, facts = open_run(
        config.model if model is None else model,
        backend=config.backend,
        device=config.device,
        dtype=config.dtype,
        layers=config.layers,
        n_grid=config.n_grid,
        ctx=config.ctx,
        needs_tokenizer=tokens is None,
        baseline_scores=config.baseline_scores,
    )
    t_loaded = time.perf_counter()
    if tokens is None:
        tokens = token_windows(
            model.tokenizer, body, ctx=config.ctx, windows=config.windows, start=config.start
        )
        source = corpus_hash(body)
    else:
        source = hashlib.sha256(tokens.cpu().numpy().tobytes()).hexdigest()
    spec = WindowSpec(
        n=facts.n_grid,
        queries=config.queries,
        draws=config.draws,
        seed=config.seed,
        causal=facts.causal,
        layers=facts.layers,
        score_dtype=getattr(torch, facts.baseline_scores),
    )
    fingerprint = {**config.fingerprint(), "model": facts.model, "corpus_sha256": source}
    fingerprint["model_identity"] = model_identity(model, facts)
    out_path = Path(out) if out is not None else None
    ranks = join(torch.device(facts.device))
    lock = OutLock(out_path if ranks.rank == 0 else None)
    try:
        with compiled(config.compile):
            run = run_windows(
                model, tokens, spec, out_path, fingerprint, resume=resume, ranks=ranks,
                progress=bool(progress) and ranks.rank == 0, backend=facts.backend,
                strict=strict, lock=lock,
                layer_bar=_layer_bar(progress) if ranks.rank == 0 else None,
            )  # fmt: skip
        ranks.leave()
        times = (t_start, t_loaded)
        analysis = _tables(config, model, tokens, spec, facts, run, fingerprint, ranks, times)
        if ranks.rank == 0:  # the report's "heads to look at", from window 0's kept rows
            t_rows = time.perf_counter()
            analysis = _with_head_rows(analysis, model, tokens[:1], spec, run.final_rows)
            timings = analysis.run["timings_s"]
            timings["head_rows"] = time.perf_counter() - t_rows
            timings["total"] = time.perf_counter() - t_start
        run.final_rows.clear()
        if out_path is not None and ranks.rank == 0:
            analysis.save(out_path)
    finally:
        ranks.leave()
        lock.release()
    return analysis


def _tables(
    config: AnalyzeConfig,
    model: Any,
    tokens: torch.Tensor,
    spec: WindowSpec,
    facts: RunFacts,
    run: WindowRun,
    fingerprint: dict[str, Any],
    ranks: Any,
    times: tuple[float, float],
) -> Analysis:
    """Aggregate the windows into the tables and the ``run.json`` record."""
    t_windows = time.perf_counter()
    tables = aggregate(
        [run.results[w] for w in range(config.windows)],
        spec,
        d_head=facts.dims.d_head,
        samples=config.envelope_samples,
        view_tokens=list(token_text(model, tokens[0]) or map(str, tokens[0].tolist())),
        taxonomy=config.taxonomy,
    )
    t_start, t_loaded = times
    timings = {
        "load": t_loaded - t_start,
        "windows_run": len(run.todo),
        "windows_resumed": config.windows - len(run.todo),
        "per_window_mean": float(np.mean(run.times)) if run.times else None,
        "windows_total": t_windows - t_loaded,
        "aggregate": time.perf_counter() - t_windows,
        "total": time.perf_counter() - t_start,
    }
    backends = [run.backends.get(w, facts.backend) for w in range(config.windows)]
    record = _run_record(fingerprint, facts, timings, tables.summary, ranks.world, ranks.rank)
    ran = "+".join(sorted(set(backends)))  # what the windows ran with ("hooks+sdpa": mixed)
    record["backend"] = record["facts"]["backend"] = ran
    record["facts"]["window_backends"] = backends
    record["rejected_windows"] = run.rejected
    return Analysis(
        metrics=tables.metrics,
        heads=tables.heads,
        envelope=tables.envelope,
        profiles=tables.profiles,
        view=tables.view,
        run=record,
    )


LAYER_BAR_DELAY = 10.0
"""Seconds a window runs before its per-layer progress bar appears [ours]."""


def _layer_bar(progress: bool | str) -> float | None:
    """The per-layer bar's delay: at once when asked (``"layers"``), late by default."""
    return 0.0 if progress == "layers" else LAYER_BAR_DELAY if progress else None


def _with_head_rows(
    analysis: Analysis, model: Any, window: Tensor, spec: WindowSpec, kept: FinalRows
) -> Analysis:
    """``analysis`` with :class:`~tl_geom.jobs.results.HeadRows` of the heads to look at.

    From the rows window 0's run kept (``kept``); a second forward of window 0 only
    where it did not run in this process (resumed, or another rank's).
    """
    n = picture_n(spec.n)
    picks = pick_heads(analysis.metrics, analysis.heads, n)
    text = token_text(model, window[0]) or tuple(map(str, window[0].tolist()))
    return replace(analysis, head_rows=capture_head_rows(model, window, picks, text, n, kept=kept))


def _run_record(
    fingerprint: dict[str, Any],
    facts: RunFacts,
    timings: dict[str, Any],
    summary: dict[str, Any],
    world: int,
    rank: int,
) -> dict[str, Any]:
    """``run.json``: the arguments, the run's facts, versions, timings, table summaries."""
    run = {
        "config": {**fingerprint, "layers": list(facts.layers)},  # the layers that ran
        "model_dims": asdict(facts.dims),
        "causal": facts.causal,
        "backend": facts.backend,
        "device": facts.device,
        "facts": facts.to_dict(),
        "versions": _versions(),
        "timings_s": timings,
        **summary,
    }
    if world > 1:
        run["torchrun"] = {"world_size": world, "rank": rank}
    return run


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for pkg in ("tl-geom", "torch", "transformer-lens", "transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out
