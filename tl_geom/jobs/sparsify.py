"""Geometry-guided sparsification: remove heads by a rule, measure next-token loss.

Spec: geometry.md, "Sparsification". Heads are scored on ``windows`` scoring windows
(the same per-head reduction as ``tl-geom analyze``, final query) and ranked for
removal by each rule; a growing fraction of them is ablated at ``hook_z`` and the
next-token loss is measured on held-out windows that follow the scoring windows in
the corpus (disjoint tokens). Rules, highest score removed first **[ours]**:

- ``entropy``: attention entropy of the final query (diffuse heads first);
- ``sink_mass``: ``alpha_0`` (heads parked on the sink first);
- ``last_token``: ``alpha_q``, the final query's weight on itself (heads that re-read
  the current token, already in the residual stream, first);
- ``type``: by head type, Reset, then Retriever, unclear, Mixer (heads that mix context
  last); within a type in a seeded random order;
- ``type+sink_mass``: the same type order, within a type by sink mass (the hybrid the
  paper's open question suggests);
- ``random``: a seeded random order, one curve per seed.

Ablation **[ours]**: ``zero`` sets the head's ``hook_z`` (its output before ``W_O``) to
0; ``mean`` sets it to the head's mean ``hook_z`` over every position of the scoring
windows, through :func:`tl_geom.lens.interventions.ablate_heads`, which restores the model
exactly on exit (its hooks go through ``model.hooks``).
"""

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from tl_geom.errors import TlGeomError
from tl_geom.geometry.taxonomy import (
    MIXER,
    RESET,
    RETRIEVER,
    UNCLEAR,
    TaxonomyConfig,
    classify_heads,
)
from tl_geom.jobs.config import FRACTIONS, RULES, SparsifyConfig
from tl_geom.jobs.outdir import OutLock, check_out
from tl_geom.jobs.run_facts import RunFacts, open_run
from tl_geom.jobs.window import C_LAST, C_SINK, MASS_KEYS, WindowSpec, run_window
from tl_geom.lens.data import load_corpus, token_windows
from tl_geom.lens.hooks import hook_name, is_causal, model_device, model_dims
from tl_geom.lens.interventions import ablate_heads

__all__ = [
    "FRACTIONS",
    "RULES",
    "HeadScores",
    "Sparsification",
    "next_token_loss",
    "removal_order",
    "run_sparsify",
    "score_heads",
    "sparsify",
]

TYPE_ORDER = (RESET, RETRIEVER, UNCLEAR, MIXER)
"""Removal order of the head types in the type-guided rules [ours]."""


def next_token_loss(model: Any, tokens: Tensor, *, batch: int = 8) -> float:
    """Mean cross-entropy of predicting token t+1 from the prefix, over every position.

    loss = -(1 / (B (L - 1))) sum_{b, t < L-1} log softmax(logits[b, t])[tokens[b, t + 1]]
    """
    device = model_device(model)
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, tokens.shape[0], batch):
            chunk = tokens[start : start + batch].to(device)
            logits = model(chunk).double()
            logp = torch.log_softmax(logits[:, :-1], -1)
            nll = -logp.gather(-1, chunk[:, 1:, None]).squeeze(-1)
            total += float(nll.sum())
            count += nll.numel()
    return total / count


@dataclass(frozen=True)
class HeadScores:
    """Per-head scores from the scoring windows.

    Attributes:
        table: one row per head: ``layer, head, type, entropy, sink_mass, last_token``.
        z_mean: ``[n_layers, n_heads, d_head]`` mean ``hook_z`` over scoring positions.
    """

    table: pd.DataFrame
    z_mean: Tensor


def score_heads(
    model: Any,
    tokens: Tensor,
    *,
    n: Sequence[int],
    taxonomy: TaxonomyConfig | None = None,
) -> HeadScores:
    """Entropy, sink mass, ``alpha_q``, type and mean ``hook_z`` per head.

    Final query, means over the scoring windows; one forward per window. The random
    baseline is not needed here (``draws=0``: not computed).
    """
    dims = model_dims(model)
    layers = tuple(range(dims.n_layers))
    spec = WindowSpec(
        n=tuple(n), queries="last", draws=0, seed=0, causal=is_causal(model), layers=layers
    )
    z_sum = torch.zeros(dims.n_layers, dims.n_heads, dims.d_head, dtype=torch.float64)
    z_count = [0]

    def make(layer: int) -> Any:
        def hook(z: Tensor, hook: Any) -> None:
            z_sum[layer] += z.detach().double().sum((0, 1)).cpu()
            if layer == 0:
                z_count[0] += z.shape[0] * z.shape[1]

        return hook

    z_hooks = [(hook_name(lay, "z"), make(lay)) for lay in layers]
    per_window = []
    with model.hooks(fwd_hooks=z_hooks):
        for w in range(tokens.shape[0]):
            per_window.append(run_window(model, tokens[w : w + 1], spec, w))
    stack = {k: torch.stack([r[k] for r in per_window]).double().mean(0) for k in per_window[0]}
    mass = torch.stack([stack[k] for k in MASS_KEYS], -1)
    types = classify_heads(
        stack[C_LAST], stack[C_SINK], mass, taxonomy, n=tuple(n), length=int(tokens.shape[1])
    )
    table = pd.DataFrame(
        {
            "layer": np.repeat(np.arange(dims.n_layers), dims.n_heads),
            "head": np.tile(np.arange(dims.n_heads), dims.n_layers),
            "type": types.labels,
            **{k: stack[k].flatten().numpy() for k in ("entropy", "sink_mass", "last_token")},
        }
    )
    return HeadScores(table, (z_sum / max(z_count[0], 1)).float())


def removal_order(scores: pd.DataFrame, rule: str, seed: int = 0) -> list[tuple[int, int]]:
    """Every head as ``(layer, head)``, in the order ``rule`` removes them (module docstring).

    Ties keep the table's (layer, head) order; random orders use ``seed``.
    """
    df = scores.reset_index(drop=True)
    idx = np.arange(len(df))
    rng = np.random.default_rng(seed)
    if rule in ("entropy", "sink_mass", "last_token"):
        order = np.argsort(-df[rule].to_numpy(dtype=np.float64), kind="stable")
    elif rule == "random":
        order = rng.permutation(idx)
    elif rule in ("type", "type+sink_mass"):
        rank = {t: i for i, t in enumerate(TYPE_ORDER)}
        group = np.array([rank.get(str(t), len(rank)) for t in df["type"]])
        within = (
            rng.permutation(idx)
            if rule == "type"
            else np.argsort(np.argsort(-df["sink_mass"].to_numpy(np.float64), kind="stable"))
        )
        order = np.lexsort((within, group))
    else:
        raise TlGeomError(f"unknown rule {rule!r}; rules: {', '.join(RULES)}")
    layer, head = df["layer"].to_numpy(np.int64), df["head"].to_numpy(np.int64)
    return [(int(layer[i]), int(head[i])) for i in order]


@dataclass(frozen=True)
class Sparsification:
    """Loss vs fraction of heads removed, per rule and ablation.

    Attributes:
        table: ``rule, fraction, seed, loss, delta_loss, ablation, heads`` (``seed`` is
            NA for rules without randomness).
        scores: the per-head scores used (:class:`HeadScores` ``table``).
        run: provenance (model, corpus, windows, timings).
    """

    table: pd.DataFrame
    scores: pd.DataFrame
    run: dict[str, Any]

    def summary(self) -> pd.DataFrame:
        """Mean ``delta_loss`` over fractions > 0 per rule and ablation, ascending.

        Random: also over seeds. The first row of each ablation hurts least.
        """
        t = pd.DataFrame(self.table[self.table["fraction"] > 0])
        out = pd.DataFrame(t.groupby(["ablation", "rule"], as_index=False)["delta_loss"].mean())
        return out.sort_values(["ablation", "delta_loss"]).reset_index(drop=True)

    def save(self, out: Path) -> None:
        """Write ``sparsify.csv``, ``sparsify_heads.csv`` and ``sparsify.json`` into ``out``."""
        import json

        from tl_geom.jobs.results import atomic_write_text, make_dir

        make_dir(out)
        atomic_write_text(out / "sparsify.csv", self.table.to_csv(index=False))
        atomic_write_text(out / "sparsify_heads.csv", self.scores.to_csv(index=False))
        atomic_write_text(out / "sparsify.json", json.dumps(self.run, indent=2, default=str))


def sparsify(
    model: Any = "smollm2-135m",
    corpus: str = "war_and_peace",
    *,
    text: str | None = None,
    windows: int = 4,
    ctx: int = 256,
    heldout: int = 4,
    fractions: Sequence[float] = FRACTIONS,
    rules: Sequence[str] = RULES,
    ablations: Sequence[str] = ("zero", "mean"),
    seeds: int = 3,
    n: Sequence[int] | None = None,
    taxonomy: TaxonomyConfig | None = None,
    out: str | Path | None = None,
    progress: bool = True,
) -> Sparsification:
    """Remove a growing fraction of heads by each rule; next-token loss on held-out text.

    Scoring: ``windows`` windows of ``ctx`` tokens (:func:`score_heads`). Held out: the
    next ``heldout`` windows of the corpus (disjoint tokens). For each ablation, rule,
    seed and fraction f, the first ``round(f * heads)`` heads of :func:`removal_order`
    are ablated and ``delta_loss = loss - loss(no ablation)``.

    Args:
        model: a TransformerLens model, or a name for :func:`tl_geom.load_model`.
        corpus: shipped corpus name or UTF-8 file (ignored when ``text`` is given).
        text: raw text instead of a corpus.
        windows: scoring windows.
        ctx: tokens per window (scoring and held out).
        heldout: held-out windows for the loss.
        fractions: fractions of all heads to remove, each in ``[0, 1]``.
        rules: a subset of :data:`RULES`.
        ablations: ``"zero"`` and/or ``"mean"``.
        seeds: seeds of the ``random`` rule (the ``type`` rule uses seed 0).
        n: the N grid of the taxonomy curves (default powers of two up to ctx/2).
        taxonomy: thresholds of the type rules.
        out: directory for ``sparsify.csv`` and friends (None: in memory only).
        progress: show a tqdm bar.

    Raises:
        TlGeomError: unknown rule or ablation, a fraction outside [0, 1], too little text.
    """
    config = SparsifyConfig(
        model=model if isinstance(model, str) else "<model object>",
        corpus=corpus if text is None else "<text>",
        windows=windows,
        ctx=ctx,
        heldout=heldout,
        fractions=tuple(fractions),
        rules=tuple(rules),
        ablations=tuple(ablations),
        seeds=seeds,
        n=tuple(n) if n else None,
        taxonomy=taxonomy,
    )
    body = load_corpus(corpus) if text is None else text
    given = None if isinstance(model, str) else model
    return run_sparsify(config, body, model=given, out=out, progress=progress)


def run_sparsify(
    config: SparsifyConfig,
    body: str,
    *,
    model: Any = None,
    out: str | Path | None = None,
    progress: bool = True,
) -> Sparsification:
    """:func:`sparsify` of a validated config over the text ``body`` (what the CLI calls).

    ``out`` is checked (:func:`~tl_geom.jobs.outdir.check_out`: absent, empty or a
    sparsify run) once the model and windows passed their checks, and locked while the
    sweep runs and its files are written.
    """
    t0 = time.perf_counter()
    model, facts = open_run(
        config.model if model is None else model,
        backend="hooks",  # the ablations are hooks on hook_z
        device=None,
        dtype="float32",
        layers=None,
        n_grid=config.n_grid,
        ctx=config.ctx,
    )
    tokens = token_windows(
        model.tokenizer, body, ctx=config.ctx, windows=config.windows + config.heldout
    )
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        check_out(out_path, "sparsify")  # before any work: never the user's own files
    with OutLock(out_path):
        result = _sweep(model, tokens, facts, config, (t0, progress))
        if out_path is not None:
            result.save(out_path)
    return result


def _sweep(
    model: Any,
    tokens: Tensor,
    facts: RunFacts,
    config: SparsifyConfig,
    started: tuple[float, bool],
) -> "Sparsification":
    """Score the heads on the scoring windows, then the ablation sweep on the held-out ones.

    ``started``: the run's start time and whether to show progress bars.
    """
    t0, progress = started
    held = tokens[config.windows :]
    scores = score_heads(model, tokens[: config.windows], n=facts.n_grid, taxonomy=config.taxonomy)
    t_scored = time.perf_counter()
    base = next_token_loss(model, held)
    table = _ablation_table(model, held, scores, config, base, progress)
    run = {
        "model": facts.model,
        "corpus": config.corpus,
        "windows": config.windows,
        "heldout": config.heldout,
        "ctx": config.ctx,
        "n": list(facts.n_grid),
        "seeds": config.seeds,
        "heads_total": len(scores.table),
        "base_loss": base,
        "type_counts": scores.table["type"].value_counts().to_dict(),
        "taxonomy": asdict(config.taxonomy or TaxonomyConfig()),
        "timings_s": {
            "scoring": t_scored - t0,
            "ablations": time.perf_counter() - t_scored,
        },
    }
    return Sparsification(table, scores.table, run)


def _ablation_table(
    model: Any,
    held: Tensor,
    scores: HeadScores,
    config: SparsifyConfig,
    base: float,
    progress: bool,
) -> pd.DataFrame:
    """Held-out loss for every ablation, rule, seed and fraction of heads removed."""
    total = len(scores.table)
    fracs = sorted(set(float(f) for f in config.fractions))
    jobs = [
        (abl, rule, seed)
        for abl in config.ablations
        for rule in config.rules
        for seed in (range(config.seeds) if rule == "random" else [None])
    ]
    rows = []
    bar = tqdm(total=len(jobs) * len(fracs), desc="ablations", disable=not progress)
    for abl, rule, seed in jobs:
        order = removal_order(scores.table, rule, seed or 0)
        for f in fracs:
            k = round(f * total)
            if k == 0:
                loss = base
            else:
                means = scores.z_mean if abl == "mean" else None
                with ablate_heads(model, order[:k], mode=abl, means=means):  # type: ignore[arg-type]
                    loss = next_token_loss(model, held)
            rows.append(
                {
                    "rule": rule,
                    "fraction": f,
                    "seed": seed,
                    "loss": loss,
                    "delta_loss": loss - base,
                    "ablation": abl,
                    "heads": k,
                }
            )
            bar.update()
    bar.close()
    table = pd.DataFrame(rows)
    table["seed"] = table["seed"].astype("Int64")
    return table
