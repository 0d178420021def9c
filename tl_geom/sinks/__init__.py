"""The structural origin of attention sinks (arXiv 2605.06611; spec ``sinks.md``; tutorial 03).

``sink_math`` (the measures as batched tensor math, no model), ``measures`` (the same on a
model: sink profile, massive activations, DomRatio, QK lock-in, effective rank),
``origins`` (variance discrepancy, gain alignment, super neurons), ``shift`` (the
sink-shift experiment), ``headnorm`` (the two-arm pretraining study), ``claims`` (the
paper's claims and their verdict rules, for ``tl-geom reproduce``). The interventions
that move the sink edit a model, so they live in :mod:`tl_geom.lens.interventions`.
Nothing here imports the separability paper's code (``tl_geom.geometry``).
"""

from tl_geom.sinks.measures import (
    dom_ratio_profile,
    effective_rank_profile,
    massive_activation_profile,
    qk_lock_in_profile,
    sink_profile,
)
from tl_geom.sinks.origins import gain_alignment, super_neurons, variance_discrepancy
from tl_geom.sinks.sink_math import sink_importance, sink_rate

__all__ = [
    "dom_ratio_profile",
    "effective_rank_profile",
    "gain_alignment",
    "massive_activation_profile",
    "qk_lock_in_profile",
    "sink_importance",
    "sink_profile",
    "sink_rate",
    "super_neurons",
    "variance_discrepancy",
]
