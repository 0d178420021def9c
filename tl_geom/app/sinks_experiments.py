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
from tl_geom.sinks import intervention_claims as sic
from tl_geom.sinks.headnorm import StudyConfig, headnorm_study
from tl_geom.sinks.measures import massive_activation_profile, sink_profile
from tl_geom.sinks.origins import super_neurons, variance_discrepancy
from tl_geom.sinks.shift import shift_summary, sink_shift

__all__ = [
    "formation_layer",
    "headnorm_experiment",
    "interventions_experiment",
    "sink_origins_experiment",
]


def _sink_tokens(model: Any, corpus: str, b: Budget) -> torch.Tensor:
    return token_windows(
        model.tokenizer, load_corpus(corpus), ctx=b.sink_len, windows=b.sink_samples
    )


def formation_layer(model: Any, tokens: torch.Tensor, eps: float = 0.3) -> int | None:
    """The first layer whose sink rate (share of heads with ``imp(0) > eps``) exceeds ``eps``.

    None if no layer does. Spec: sinks.md, "Measures" (sink rate, eps = 0.3) [ours: the
    same 0.3 as the threshold on the rate].
    """
    rate = sink_profile(model, tokens).rate_by_layer(eps)
    hits = (rate > eps).nonzero()
    return int(hits[0, 0]) if hits.numel() else None


def sink_origins_experiment(model: Any, corpus: str, b: Budget) -> Findings:
    """Variance discrepancy (up to the sink's formation), massive activations, super neurons."""
    tokens = _sink_tokens(model, corpus, b)
    n = max(b.sink_samples, 2)
    var_s = variance_discrepancy(model, length=b.sink_len, samples=n, seed=b.seed, over="samples")
    var_d = variance_discrepancy(model, length=b.sink_len, samples=n, seed=b.seed, over="dims")
    mass = massive_activation_profile(model, tokens)
    top = mass.values[..., 0]  # [sample, layer], the largest |h|
    ratio = mass.ratio[..., 0]
    pos, dim = mass.positions[0, :, 0], mass.dims[0, :, 0]
    sn = super_neurons(model, tokens)
    upto = formation_layer(model, tokens)
    return [
        (
            "first_position_variance",
            sc.claim_first_position_variance(
                var_s.per_sample.cpu().numpy(), var_d.variance.cpu().numpy(), upto=upto
            ),
        ),
        (
            "massive_activations",
            sc.claim_massive_activations(top.numpy(), ratio.numpy(), pos.numpy(), dim.numpy()),
        ),
        (
            "super_neurons",
            sc.claim_super_neurons(
                sn.to_frame(),
                sn.dim,
                sn.sample_contributions.cpu().numpy(),
                sn.sample_write.cpu().numpy(),
            ),
        ),
    ]


def _chain(model: Any, tokens: torch.Tensor, k: int) -> dict[str, Any]:
    """Does the super neuron write the massive dimension at k under the self-only mask at k?

    The top neuron of :func:`super_neurons` at position 0; its write ``act * W_out`` into
    the massive dim at 0, at k, and at k under ``self_only_mask(k)`` [ours].
    """
    sn = super_neurons(model, tokens)
    frame = sn.to_frame()
    top = frame.loc[frame["abs_contribution"].idxmax()]
    layer, neuron = int(top["layer"]), int(top["neuron"])
    at_k = super_neurons(model, tokens, layers=[layer], dim=sn.dim, position=k)
    with self_only_mask(model, position=k):
        masked = super_neurons(model, tokens, layers=[layer], dim=sn.dim, position=k)
    return {
        "layer": layer,
        "neuron": neuron,
        "dim": sn.dim,
        "write_at_0": float(top["contribution"]),
        "write_at_k": float(at_k.contributions[0, neuron]),
        "write_at_k_masked": float(masked.contributions[0, neuron]),
    }


def interventions_experiment(model: Any, corpus: str, b: Budget) -> Findings:
    """imp(k) under the self-only mask (and the super neuron's write there); the sweep.

    The sweep (:func:`~tl_geom.sinks.shift.sink_shift`, ``sweep=True``): ``shift_samples``
    windows, k in ``positions``, the lam grid, single layers 0..(super-neuron layer + 2),
    both arms, head outputs (``site="z"``).
    """
    tokens = _sink_tokens(model, corpus, b)
    k = b.position
    before = sink_profile(model, tokens).imp[..., k].mean(-1)  # [sample, layer]
    with self_only_mask(model, position=k):
        after = sink_profile(model, tokens).imp[..., k].mean(-1)
    chain = _chain(model, tokens, k)
    n_layers = before.shape[1]
    last = min(int(chain["layer"]) + 2, n_layers - 2)  # the last layer has nothing downstream
    sweep_tokens = token_windows(
        model.tokenizer, load_corpus(corpus), ctx=b.sink_len, windows=b.shift_samples
    )
    shift = sink_shift(
        model, sweep_tokens, position=list(b.positions), lams=list(b.lams),
        layers=list(range(last + 1)), sweep=True,
    )  # fmt: skip
    return [
        (
            "self_only_mask",
            sic.claim_self_only(before.cpu().numpy(), after.cpu().numpy(), k, chain=chain),
        ),
        ("variance_amplification", sic.claim_variance_amplification(shift_summary(shift))),
    ]


def headnorm_experiment(cfg: StudyConfig, corpus: str) -> Findings:
    """The two-arm TinyLM study (baseline vs HeadNorm) on ``corpus``."""
    res = headnorm_study(replace(cfg, corpus=corpus))
    return [("headnorm", sic.claim_headnorm(res.summary, cfg.steps))]
