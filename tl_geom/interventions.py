"""The interventions under their public name, ``tl_geom.interventions`` (DESIGN.md).

They live in :mod:`tl_geom.lens.interventions`; this module re-exports them so that
``from tl_geom.interventions import self_only_mask, amplify_variance`` keeps working.
Patch the functions where they live (``tl_geom.lens.interventions``), not here.
"""

from tl_geom.lens.interventions import (
    AmplifyVariance,
    HeadAblation,
    MaskSink,
    MoveSink,
    SelfOnlyMask,
    ablate_heads,
    amplify_variance,
    mask_sink,
    move_sink,
    self_only_mask,
)

__all__ = [
    "AmplifyVariance",
    "HeadAblation",
    "MaskSink",
    "MoveSink",
    "SelfOnlyMask",
    "ablate_heads",
    "amplify_variance",
    "mask_sink",
    "move_sink",
    "self_only_mask",
]
