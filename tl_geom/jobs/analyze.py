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

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from tl_geom.errors import TlGeomError
from tl_geom.geometry.profile import attention_profile
from tl_geom.geometry.simulation import simulate_separability
from tl_geom.geometry.taxonomy import TaxonomyConfig, classify_heads, cluster_agreement
from tl_geom.jobs.distributed import Ranks, join
from tl_geom.jobs.results import Analysis, AttentionView, atomic_write_bytes, atomic_write_text
from tl_geom.jobs.window import (
    CURVE_KEYS,
    HEAD_KEYS,
    MASS_KEYS,
    RANDOM_KEYS,
    TOP_KEYS,
    WindowSpec,
    run_window,
)
from tl_geom.lens.data import corpus_hash, load_corpus, token_windows
from tl_geom.lens.hooks import model_dims, normalize_layers
from tl_geom.lens.sdpa import FusedModel, as_fused, fused_supported, load_fused_model

__all__ = ["AnalyzeConfig", "aggregate", "analyze", "default_n", "open_model"]

DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}
"""Model dtypes. ``float64`` brings the two backends closest, though not to float64
rounding: the TransformerBridge takes its attention softmax in float32 whatever the
model's dtype, so on SmolLM2 the rows still differ by ~1e-8 (values ~1e-7 relative from
layer 1), against ~1e-6 in float32. A count of P or R can flip where two distances tie
that closely (README, "Two backends")."""
BACKENDS = ("auto", "hooks", "sdpa")


def default_n(ctx: int) -> tuple[int, ...]:
    """Powers of two up to ``ctx / 2`` (the paper's grid: 1, 2, 4, ..., 512 at L = 1024).

    >>> default_n(1024)[-1], default_n(20)
    (512, (1, 2, 4, 8))
    """
    return tuple(2**k for k in range(int(math.log2(ctx // 2)) + 1))


@dataclass(frozen=True)
class AnalyzeConfig:
    """Arguments of an analysis run (the CLI parses into this).

    Attributes:
        model: shipped name, local directory or cached hub id (recorded in run.json).
        corpus: shipped corpus name or a UTF-8 file.
        windows: number of non-overlapping windows.
        ctx: tokens per window L (the first is BOS/[CLS]).
        n: the N grid; default powers of two up to L/2.
        queries: ``"last"`` (final query row) or ``"all"`` (every row, averaged).
        draws: random subsets per row for the baseline (0: none, NaN columns).
        seed: seed of the random baseline and of the envelope simulation.
        layers: layers to analyse (None: all).
        start: first body token of window 0 in the corpus.
        envelope_samples: samples of the envelope simulation.
        dtype: the model's dtype (``float32``, ``bfloat16`` or ``float16``); the metrics
            are accumulated in float64 whatever it is.
    """

    model: str = "smollm2-135m"
    corpus: str = "war_and_peace"
    windows: int = 8
    ctx: int = 1024
    n: tuple[int, ...] | None = None
    queries: Literal["last", "all"] = "last"
    draws: int = 16
    seed: int = 0
    layers: tuple[int, ...] | None = None
    start: int = 0
    envelope_samples: int = 64
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.windows < 1:
            raise TlGeomError(f"windows={self.windows}; ask for at least one window")
        if self.ctx < 4:
            raise TlGeomError(f"ctx={self.ctx} too short; use at least 4 tokens per window")
        if self.queries not in ("last", "all"):
            raise TlGeomError(f"queries must be 'last' or 'all', got {self.queries!r}")
        if isinstance(self.draws, bool) or not isinstance(self.draws, int) or self.draws < 0:
            raise TlGeomError(
                f"draws={self.draws!r}; give random subsets per row >= 1, or 0 for no baseline"
            )
        if self.dtype not in DTYPES:
            raise TlGeomError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        for k in self.n_grid:
            if not 1 <= k < self.ctx:
                raise TlGeomError(f"n={k} out of range 1..{self.ctx - 1} for ctx={self.ctx}")

    @property
    def n_grid(self) -> tuple[int, ...]:
        """The N values, sorted and de-duplicated."""
        return tuple(sorted(set(self.n))) if self.n else default_n(self.ctx)

    def fingerprint(self) -> dict[str, Any]:
        """What a window's results depend on; a resumed run must match it exactly."""
        d = asdict(self)
        d["n"] = list(self.n_grid)
        d["layers"] = list(self.layers) if self.layers is not None else None
        return d


def open_model(
    model: Any, backend: str = "hooks", *, device: str | None = None, dtype: str = "float32"
) -> Any:
    """The model to run for ``backend``: loaded by name, or the given object checked.

    ``hooks``: a TransformerLens model (``load_model``); ``sdpa``: a
    :class:`~tl_geom.lens.sdpa.FusedModel` (``load_fused_model``; fused attention, only the
    needed rows recomputed); ``auto``: ``sdpa`` where the architecture routes attention
    through transformers' AttentionInterface, else ``hooks``. A model object is used as
    given under ``auto``.

    Raises:
        TlGeomError: an unknown backend or dtype, ``device="cuda"`` without a GPU,
            ``sdpa`` for a model it cannot serve (the message names ``--backend hooks``).
    """
    if backend not in BACKENDS:
        raise TlGeomError(f"backend must be 'auto', 'hooks' or 'sdpa', got {backend!r}")
    if dtype not in DTYPES:
        raise TlGeomError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if device is not None and torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise TlGeomError(f"device={device!r} asked for, but torch sees no CUDA GPU here")
    if not isinstance(model, str):
        return as_fused(model) if backend == "sdpa" else model
    from tl_geom.lens.models import load_model, resolve_model

    path = resolve_model(model)[0]
    if backend == "sdpa" or (backend == "auto" and fused_supported(path)):
        return load_fused_model(model, device=device, dtype=DTYPES[dtype])
    return load_model(model, device=device, dtype=DTYPES[dtype])


def _prepare_out(out: Path, fingerprint: dict[str, Any], resume: bool) -> Path:
    wdir = out / "windows"
    cfg_path = wdir / "config.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        if old != fingerprint:
            diff = sorted(k for k in fingerprint if old.get(k) != fingerprint[k])
            raise TlGeomError(
                f"{out} holds a run with other arguments ({', '.join(diff)}); "
                "use another --out or delete it"
            )
        if not resume and any(wdir.glob("w*.pt")):
            raise TlGeomError(
                f"{out} already holds results of this run; pass --resume to continue it "
                "or use another --out"
            )
    wdir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cfg_path, json.dumps(fingerprint, indent=2))
    return wdir


def _save_window(path: Path, result: dict[str, torch.Tensor]) -> None:
    import io

    buf = io.BytesIO()
    torch.save(result, buf)
    atomic_write_bytes(path, buf.getvalue())


def analyze(
    model: Any = "smollm2-135m",
    corpus: str = "war_and_peace",
    *,
    text: str | None = None,
    windows: int = 8,
    ctx: int = 1024,
    n: Sequence[int] | None = None,
    queries: Literal["last", "all"] = "last",
    draws: int = 16,
    seed: int = 0,
    layers: Sequence[int] | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    backend: str = "hooks",
    device: str | None = None,
    dtype: str = "float32",
    taxonomy: TaxonomyConfig | None = None,
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
        windows: number of windows.
        ctx: tokens per window.
        n: the N grid (default: powers of two up to ctx/2).
        queries: ``"last"`` or ``"all"``.
        draws: random subsets per row for the baseline (0: none, NaN columns).
        seed: seed of the baseline and of the envelope simulation.
        layers: layers to analyse (default all).
        out: directory for per-window results and tables (None: in memory only).
        resume: continue a run in ``out``, skipping finished windows.
        progress: show a tqdm bar over windows.
        backend: ``"hooks"`` (default: TransformerLens hook points, composes with your
            hooks), ``"sdpa"`` (fused attention, only the needed rows; see ``fused.py``)
            or ``"auto"`` (sdpa where the architecture allows it): :func:`open_model`.
        device: where to run a model loaded by name (default cpu).
        dtype: dtype of a model loaded by name (``float32``, ``bfloat16``, ``float16``).
        taxonomy: thresholds of the head-type rules (default :class:`TaxonomyConfig`);
            applied when the tables are aggregated, so not part of the resume check.

    Returns:
        An :class:`~tl_geom.jobs.results.Analysis` (``metrics``, ``heads``, ``envelope``
        DataFrames, ``profiles``, ``view``, ``run``). With ``out`` it is also saved there.
    """
    t_start = time.perf_counter()
    model_name = model if isinstance(model, str) else type(model).__name__
    cfg = AnalyzeConfig(
        model=model_name,
        corpus=corpus if text is None else "<text>",
        windows=windows,
        ctx=ctx,
        n=tuple(n) if n is not None else None,
        queries=queries,
        draws=draws,
        seed=seed,
        layers=tuple(layers) if layers is not None else None,
        dtype=dtype,
    )
    body = load_corpus(corpus) if text is None else text
    if device is not None and device == "cuda" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"  # one GPU per torchrun process
    model = open_model(model, backend, device=device, dtype=dtype)
    t_loaded = time.perf_counter()
    dims = model_dims(model)
    if dims.n_ctx and cfg.ctx > dims.n_ctx:
        raise TlGeomError(f"ctx={cfg.ctx} exceeds the model's context n_ctx={dims.n_ctx}")
    if getattr(model, "tokenizer", None) is None:
        raise TlGeomError("the model has no tokenizer; analyze needs one to cut windows")
    tokens = token_windows(model.tokenizer, body, ctx=cfg.ctx, windows=cfg.windows, start=cfg.start)
    spec = WindowSpec(
        n=cfg.n_grid,
        queries=cfg.queries,
        draws=cfg.draws,
        seed=cfg.seed,
        causal=getattr(model.cfg, "attention_dir", "causal") != "bidirectional",
        layers=normalize_layers(list(cfg.layers) if cfg.layers else None, dims.n_layers),
    )
    out_path = Path(out) if out is not None else None
    fingerprint = {**cfg.fingerprint(), "corpus_sha256": corpus_hash(body)}
    ranks = join(next(iter(model.parameters())).device)
    try:
        results, window_times, todo = _run_windows(
            model, tokens, spec, out_path, fingerprint, resume, ranks, progress and ranks.rank == 0
        )
    finally:
        ranks.leave()
    t_windows = time.perf_counter()

    analysis = aggregate(
        [results[w] for w in range(cfg.windows)],
        spec,
        d_head=dims.d_head,
        samples=cfg.envelope_samples,
        view_tokens=_token_strings(model.tokenizer, tokens[0]),
        taxonomy=taxonomy,
    )
    run = {
        "config": fingerprint,
        "model_dims": asdict(dims),
        "causal": spec.causal,
        "backend": "sdpa" if isinstance(model, FusedModel) else "hooks",
        "device": str(next(iter(model.parameters())).device),
        "versions": _versions(),
        "timings_s": {
            "load": t_loaded - t_start,
            "windows_run": len(todo),
            "windows_resumed": cfg.windows - len(todo),
            "per_window_mean": float(np.mean(window_times)) if window_times else None,
            "windows_total": t_windows - t_loaded,
            "aggregate": time.perf_counter() - t_windows,
            "total": time.perf_counter() - t_start,
        },
        **analysis.run,
    }
    analysis = Analysis(
        metrics=analysis.metrics,
        heads=analysis.heads,
        envelope=analysis.envelope,
        profiles=analysis.profiles,
        view=analysis.view,
        run=run,
    )
    if ranks.world > 1:
        run["torchrun"] = {"world_size": ranks.world, "rank": ranks.rank}
    if out_path is not None and ranks.rank == 0:
        analysis.save(out_path)
    return analysis


def _run_windows(
    model: Any,
    tokens: torch.Tensor,
    spec: WindowSpec,
    out_path: Path | None,
    fingerprint: dict[str, Any],
    resume: bool,
    ranks: Ranks,
    progress: bool,
) -> tuple[dict[int, dict[str, torch.Tensor]], list[float], list[int]]:
    """Run this rank's unfinished windows; return every window's results (all ranks').

    Alone, finished windows in ``out`` are loaded and the rest run. Under torchrun the
    ranks first check they share the arguments, rank 0 prepares ``out``, each rank runs
    the windows ``w % world == rank`` that have no file yet, and after a barrier every
    rank reads all windows back from ``out``.
    """
    ranks.agree("the arguments", fingerprint)
    if ranks.world > 1 and out_path is None:
        raise TlGeomError("under torchrun, pass --out: a directory every rank can read")
    wdir = None
    if out_path is not None:
        error = None
        if ranks.rank == 0:
            try:
                _prepare_out(out_path, fingerprint, resume)
            except TlGeomError as exc:
                error = str(exc)
        error = ranks.from_rank0(error)
        if error is not None:
            raise TlGeomError(error)
        wdir = out_path / "windows"
    n_windows = tokens.shape[0]
    paths = [wdir / f"w{w:06d}.pt" if wdir is not None else None for w in range(n_windows)]
    todo = [w for w, path in enumerate(paths) if path is None or not path.exists()]
    ranks.barrier()  # every rank has listed the finished windows before any writes more
    results: dict[int, dict[str, torch.Tensor]] = {}
    window_times = []
    for w in tqdm(ranks.mine(todo), desc="windows", disable=not progress, unit="window"):
        t0 = time.perf_counter()
        res = run_window(model, tokens[w : w + 1], spec, w)
        window_times.append(time.perf_counter() - t0)
        if wdir is not None:
            _save_window(wdir / f"w{w:06d}.pt", res)
        results[w] = res
    ranks.barrier()
    for w, path in enumerate(paths):
        if w not in results and path is not None:
            results[w] = torch.load(path, weights_only=True)
    return results, window_times, todo


def aggregate(
    per_window: list[dict[str, torch.Tensor]],
    spec: WindowSpec,
    *,
    d_head: int,
    samples: int = 64,
    view_tokens: list[str] | None = None,
    taxonomy: TaxonomyConfig | None = None,
) -> Analysis:
    """Means and spreads over windows, profile fits, head types and the envelope (no model).

    Head types: the window means of ``c_last``, ``c_sink`` and the mass split go through
    :func:`tl_geom.geometry.taxonomy.classify_heads`; the k-means check and its agreement with the
    rules land in ``run["taxonomy"]``.
    """
    stack = {k: torch.stack([r[k] for r in per_window]) for k in per_window[0] if k != "view"}
    n_layers, n_heads = stack["precision"].shape[1:3]
    layer_ids = np.repeat(np.array(spec.layers), n_heads * len(spec.n))
    head_ids = np.tile(np.repeat(np.arange(n_heads), len(spec.n)), n_layers)
    metrics: dict[str, Any] = {
        "layer": layer_ids,
        "head": head_ids,
        "n": np.tile(np.array(spec.n), n_layers * n_heads),
    }
    for key in (*TOP_KEYS[:3], *RANDOM_KEYS, *TOP_KEYS[3:]):
        metrics[key] = stack[key].double().nanmean(0).flatten().numpy()
    for key in TOP_KEYS[:3]:
        metrics[f"{key}_std"] = _nanstd(stack[key].double()).flatten().numpy()
    metrics["windows"] = len(per_window)
    has_curves = all(k in stack for k in (*CURVE_KEYS, *MASS_KEYS))
    if has_curves:  # window files written before the taxonomy have no curves
        for key in CURVE_KEYS:
            metrics[key] = stack[key].double().nanmean(0).flatten().numpy()

    profiles = stack["profile"].double().mean(0)  # [layer, head, L]
    fit = attention_profile(profiles)
    heads: dict[str, Any] = {
        "layer": np.repeat(np.array(spec.layers), n_heads),
        "head": np.tile(np.arange(n_heads), n_layers),
        "type": "unclassified",
    }
    for key in HEAD_KEYS:
        if key in stack:
            heads[key] = stack[key].double().nanmean(0).flatten().numpy()
    heads["profile_r2"] = fit.r2.flatten().numpy()
    heads["profile_holds"] = fit.holds.flatten().numpy()
    run: dict[str, Any] = {}
    if has_curves:
        heads, run["taxonomy"] = _head_types(stack, heads, taxonomy or TaxonomyConfig())

    envelope = _envelope(stack, profiles, spec, d_head=d_head, samples=samples)
    view = None
    if "view" in per_window[0] and view_tokens is not None:
        sink_by_layer = stack["sink_mass"].mean((0, 2))
        pick = int(sink_by_layer.argmax())
        pattern = per_window[0]["view"][pick].numpy()
        view = AttentionView(
            layer=int(spec.layers[pick]), tokens=view_tokens[: pattern.shape[-1]], pattern=pattern
        )
    return Analysis(
        metrics=pd.DataFrame(metrics),
        heads=pd.DataFrame(heads),
        envelope=envelope,
        profiles=profiles.float().numpy(),
        view=view,
        run=run,
    )


def _head_types(
    stack: dict[str, torch.Tensor], heads: dict[str, Any], cfg: TaxonomyConfig
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Rule labels and features into the heads table; the k-means check as a summary."""
    c_last, c_sink = (stack[k].double().nanmean(0) for k in CURVE_KEYS)  # [layer, head, N]
    mass = torch.stack([stack[k].double().nanmean(0) for k in MASS_KEYS], -1)
    types = classify_heads(c_last, c_sink, mass, cfg)
    agree = cluster_agreement(c_last, c_sink, mass, types.code, cfg)
    frame = types.to_frame()
    heads = {**heads, "type": frame["type"].to_numpy()}
    for key in MASS_KEYS:
        heads[key] = stack[key].double().nanmean(0).flatten().numpy()
    for col in frame.columns[1:]:
        heads[col] = frame[col].to_numpy()
    heads["cluster"] = agree.clusters
    counts = {t: int((frame["type"] == t).sum()) for t in dict.fromkeys(frame["type"])}
    summary = {
        "config": asdict(cfg),
        "counts": counts,
        "kmeans": {
            "k": 3,
            "labelled_heads": agree.labelled,
            "accuracy": agree.accuracy,
            "adjusted_rand": agree.ari,
            "inertia": agree.inertia,
        },
        "query": "final",
    }
    return heads, summary


def _nanstd(x: torch.Tensor) -> torch.Tensor:
    """Population std over windows (dim 0), ignoring NaN; 0 for a single window."""
    mean = x.nanmean(0, keepdim=True)
    return ((x - mean) ** 2).nanmean(0).sqrt()


def _envelope(
    stack: dict[str, torch.Tensor],
    profiles: torch.Tensor,
    spec: WindowSpec,
    *,
    d_head: int,
    samples: int,
) -> pd.DataFrame:
    """Expected P/R/F under the assumption model fitted to the whole model [ours].

    One curve for the model: the median over heads of the value-norm CV, the sink
    compression and the cosine decay beta (infinite when no head's fit is positive),
    and the mean final-query profile over all heads and windows as the weights.
    """
    cv = float(stack["norm_cv"].double().nanmedian())
    lam = float(stack["sink_lambda"].double().nanmedian())
    betas = stack["beta"].double()
    betas = betas[torch.isfinite(betas) & (betas > 0)]
    beta = float(betas.median()) if betas.numel() else math.inf
    alpha = profiles.mean((0, 1))
    alpha = alpha / alpha.sum()
    sim = simulate_separability(
        alpha, list(spec.n), d=d_head, cv=cv, lam=lam, beta=beta, samples=samples, seed=spec.seed
    )
    return pd.DataFrame(
        {
            "n": list(spec.n),
            "precision": sim.precision.numpy(),
            "recall": sim.recall.numpy(),
            "f1": sim.f1.numpy(),
            "precision_std": sim.precision_std.numpy(),
            "recall_std": sim.recall_std.numpy(),
            "f1_std": sim.f1_std.numpy(),
            "cv": cv,
            "lam": lam,
            "beta": beta,
        }
    )


def _token_strings(tokenizer: Any, ids: torch.Tensor) -> list[str]:
    return [str(tokenizer.decode([int(i)])) for i in ids.tolist()]


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for pkg in ("tl-geom", "torch", "transformer-lens", "transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out
