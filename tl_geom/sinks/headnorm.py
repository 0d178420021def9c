"""The HeadNorm pretraining study at CPU scale (spec: sinks.md, "Pretraining study").

Two :class:`tl_geom.lens.tiny_lm.TinyLM` arms, identical but for HeadNorm (same seed, same
initial weights, same batches), are trained on the bytes of a shipped corpus for a fixed
number of steps, then measured on held-out windows:

    val_loss        mean next-byte cross-entropy (nats) on the last 10% of the text
    effective_rank  entropy effective rank of the final hook_resid_post, all val tokens
    dom_ratio       DomRatio of the first (BOS) token, mean over layers [ours]
    sink_rate       share of (layer, head) with imp(0) > 0.3, and per layer
    sink_step       first logged training step with sink_rate > 0.3 (``log_every``)

Paper (152M params, 20B tokens), baseline -> HeadNorm: val loss 2.7812 -> 2.7421,
effective rank 343.71 -> 445.96, dimension disparity 82.67 -> 33.74, a sink from layer
5 -> none. ``tl-geom headnorm`` runs this from the command line.
"""

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from tl_geom._checks import check_count
from tl_geom.errors import TlGeomError
from tl_geom.lens.data import load_corpus
from tl_geom.lens.tiny_lm import BOS, TinyLM, TinyLMConfig, encode_bytes
from tl_geom.sinks.measures import dom_ratio_profile, effective_rank_profile, sink_profile

__all__ = ["HeadNormStudy", "StudyConfig", "headnorm_study", "train_tiny_lm"]


@dataclass(frozen=True)
class StudyConfig:
    """Settings of :func:`headnorm_study` (defaults: under a minute per arm on one CPU core).

    ``threads``: torch intra-op threads while training, restored afterwards; 1 by
    default [ours]: a model this small gains nothing from more, and on a shared CPU
    two threads made each step 5-10x slower. None leaves torch's setting alone.
    ``weight_decay``: AdamW's (0.1, the usual pretraining value; with 0 and a few hundred
    steps the baseline formed no sink). ``log_every``: steps between sink-rate checks on
    the validation windows during training (0: none); the first logged step with a rate
    above ``eps`` is the summary's ``sink_step``.
    """

    corpus: str = "war_and_peace"
    steps: int = 300
    batch: int = 32
    lr: float = 3e-3
    seed: int = 0
    n_layers: int = 4
    n_heads: int = 4
    d_head: int = 16
    d_mlp: int = 256
    n_ctx: int = 64
    val_windows: int = 32
    eps: float = 0.3
    threads: int | None = 1
    weight_decay: float = 0.1
    log_every: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "n_layers", "n_heads", "d_head", "d_mlp", "val_windows"):
            check_count(name, getattr(self, name))
        if self.n_ctx < 2:
            raise TlGeomError(f"n_ctx={self.n_ctx}; expected >= 2")
        if not self.lr > 0:
            raise TlGeomError(f"lr={self.lr}; expected > 0")
        if not 0 < self.eps < 1:
            raise TlGeomError(f"eps={self.eps}; expected in (0, 1)")
        if not self.weight_decay >= 0 or self.log_every < 0:
            raise TlGeomError(
                f"weight_decay={self.weight_decay}, log_every={self.log_every}; expected >= 0"
            )
        if self.threads is not None and self.threads < 1:
            raise TlGeomError(f"threads={self.threads}; expected >= 1 or None")

    def model_config(self, head_norm: bool) -> TinyLMConfig:
        """The TinyLM shape of one arm."""
        return TinyLMConfig(
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            d_head=self.d_head,
            d_mlp=self.d_mlp,
            n_ctx=self.n_ctx,
            head_norm=head_norm,
        )


def _windows(ids: Tensor, offsets: Tensor, n_ctx: int) -> tuple[Tensor, Tensor]:
    """Inputs ``[BOS, b_o .. b_{o+n_ctx-2}]`` and targets ``b_o .. b_{o+n_ctx-1}``."""
    idx = offsets.view(-1, 1) + torch.arange(n_ctx)
    body = ids[idx]
    bos = torch.full((len(offsets), 1), BOS, dtype=torch.long)
    return torch.cat([bos, body[:, :-1]], 1), body


def _split(text: str, n_ctx: int, val_windows: int) -> tuple[Tensor, Tensor, Tensor]:
    ids = encode_bytes(text)
    cut = int(len(ids) * 0.9)
    if cut < n_ctx + 1 or len(ids) - cut < n_ctx + 1:
        raise TlGeomError(f"the corpus ({len(ids)} bytes) is too short for n_ctx={n_ctx}")
    val = ids[cut:]
    val_offsets = torch.linspace(0, len(val) - n_ctx - 1, val_windows).long()
    return ids[:cut], val, val_offsets


def train_tiny_lm(
    cfg: TinyLMConfig,
    train_ids: Tensor,
    *,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    weight_decay: float = 0.0,
    log: Callable[[int, TinyLM], None] | None = None,
    log_every: int = 0,
    progress: str | None = None,
) -> tuple[TinyLM, list[float]]:
    """Train a TinyLM with AdamW at constant ``lr`` on random windows of ``train_ids``.

    Seeded: the same seed gives the same init and batches. ``log(step, model)`` is
    called (in eval mode, no grad) every ``log_every`` steps and after the last. Returns
    the model in eval mode and the training loss per step. ``progress``: the label of a
    progress bar over the steps (stderr; None: no bar).
    """
    model = TinyLM(cfg, seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    model.train()
    with tqdm(total=steps, desc=progress, unit="step", disable=progress is None) as bar:
        for _ in range(steps):
            offsets = torch.randint(0, len(train_ids) - cfg.n_ctx - 1, (batch,), generator=gen)
            x, y = _windows(train_ids, offsets, cfg.n_ctx)
            loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            bar.update()
            done = len(losses)
            if log is not None and ((log_every and done % log_every == 0) or done == steps):
                model.eval()
                with torch.no_grad():
                    log(done, model)
                model.train()
    model.eval()
    return model, losses


@dataclass(frozen=True)
class HeadNormStudy:
    """Both arms' figures. ``summary``: one row per arm; ``by_layer``: per arm and layer."""

    summary: pd.DataFrame
    by_layer: pd.DataFrame
    config: StudyConfig
    models: dict[str, Any]
    train_loss: dict[str, list[float]]
    sink_log: pd.DataFrame | None = None
    """``arm, step, sink_rate`` logged during training (``log_every`` > 0)."""

    def to_frame(self) -> pd.DataFrame:
        """The summary table: ``arm, val_loss, effective_rank, dom_ratio, sink_rate``."""
        return self.summary


def _measure(model: TinyLM, val: Tensor, offsets: Tensor, eps: float) -> tuple[dict, dict]:
    x, y = _windows(val, offsets, model.cfg.n_ctx)
    with torch.no_grad():
        val_loss = float(torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten()))
    sinks = sink_profile(model, x)
    erank = effective_rank_profile(model, x)
    dom = dom_ratio_profile(model, x)
    summary = {
        "val_loss": val_loss,
        "effective_rank": float(erank.rank[-1]),
        "dom_ratio": float(dom.first_token.mean()),
        "sink_rate": sinks.rate(eps),
    }
    layers = {
        "layer": list(sinks.layers),
        "sink_rate": sinks.rate_by_layer(eps).tolist(),
        "imp0": sinks.imp[..., 0].mean((0, 2)).tolist(),
        "effective_rank": erank.rank.tolist(),
        "dom_ratio_first": dom.first_token.tolist(),
    }
    return summary, layers


def headnorm_study(
    config: StudyConfig | None = None, *, progress: bool = False, **overrides: Any
) -> HeadNormStudy:
    """Train a baseline and a HeadNorm TinyLM with the same seed and steps; measure both.

    Args:
        config: a :class:`StudyConfig` (default settings if None).
        progress: a progress bar over each arm's training steps (stderr).
        **overrides: fields of StudyConfig to change, e.g. ``steps=50``.

    Raises:
        TlGeomError: an unknown or invalid setting, a missing corpus.
    """
    known = {f.name for f in fields(StudyConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TlGeomError(f"unknown StudyConfig fields {unknown}; known: {sorted(known)}")
    base = config or StudyConfig()
    cfg = StudyConfig(**{**{f: getattr(base, f) for f in known}, **overrides})
    train, val, offsets = _split(load_corpus(cfg.corpus), cfg.n_ctx, cfg.val_windows)
    threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        return _run_arms(cfg, train, val, offsets, progress)
    finally:
        torch.set_num_threads(threads)


def _run_arms(
    cfg: StudyConfig, train: Tensor, val: Tensor, offsets: Tensor, progress: bool
) -> HeadNormStudy:
    rows, layer_rows = [], []
    models: dict[str, Any] = {}
    losses: dict[str, list[float]] = {}
    logged: list[dict[str, Any]] = []
    probe, _ = _windows(val, offsets, cfg.n_ctx)
    for arm, head_norm in (("baseline", False), ("headnorm", True)):

        def log(step: int, model: TinyLM, arm: str = arm) -> None:
            logged.append(
                {"arm": arm, "step": step, "sink_rate": sink_profile(model, probe).rate(cfg.eps)}
            )

        model, loss = train_tiny_lm(
            cfg.model_config(head_norm),
            train,
            steps=cfg.steps,
            batch=cfg.batch,
            lr=cfg.lr,
            seed=cfg.seed,
            weight_decay=cfg.weight_decay,
            log=log if cfg.log_every else None,
            log_every=cfg.log_every,
            progress=arm if progress else None,
        )
        summary, layers = _measure(model, val, offsets, cfg.eps)
        hits = [r["step"] for r in logged if r["arm"] == arm and r["sink_rate"] > cfg.eps]
        summary["sink_step"] = float(hits[0]) if hits else float("nan")
        rows.append({"arm": arm, **summary})
        layer_rows.append(pd.DataFrame({"arm": arm, **layers}))
        models[arm], losses[arm] = model, loss
    log_frame = pd.DataFrame(logged, columns=["arm", "step", "sink_rate"])
    return HeadNormStudy(
        pd.DataFrame(rows), pd.concat(layer_rows, ignore_index=True), cfg, models, losses, log_frame
    )
