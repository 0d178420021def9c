"""The attention-sink paper's experiments of ``tl-geom reproduce`` (arXiv 2605.06611).

Judged by :mod:`tl_geom.sinks.claims`.
"""

from dataclasses import replace
from typing import Any

import torch

from tl_geom.app.budget import Budget
from tl_geom.app.geometry_experiments import Findings
from tl_geom.lens.data import load_corpus, token_windows
from tl_geom.lens.interventions import self_only_mask
from tl_geom.sinks import claims as sc
from tl_geom.sinks.headnorm import StudyConfig, headnorm_study
from tl_geom.sinks.measures import massive_activation_profile, sink_profile
from tl_geom.sinks.origins import super_neurons, variance_discrepancy
from tl_geom.sinks.shift import sink_shift

__all__ = ["headnorm_experiment", "interventions_experiment", "sink_origins_experiment"]


def _sink_tokens(model: Any, corpus: str, b: Budget) -> torch.Tensor:
    return token_windows(
        model.tokenizer, load_corpus(corpus), ctx=b.sink_len, windows=b.sink_samples
    )


def sink_origins_experiment(model: Any, corpus: str, b: Budget) -> Findings:
    """Variance discrepancy (over samples and over dims), massive activations, super neurons."""
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


def interventions_experiment(model: Any, corpus: str, b: Budget) -> Findings:
    """imp(k) before and under the self-only mask at k; the variance-amplification sweep."""
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


def headnorm_experiment(cfg: StudyConfig, corpus: str) -> Findings:
    """The two-arm TinyLM study (baseline vs HeadNorm) on ``corpus``."""
    res = headnorm_study(replace(cfg, corpus=corpus))
    return [("headnorm", sc.claim_headnorm(res.summary, cfg.steps))]
