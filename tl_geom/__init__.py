"""tl_geom: the geometry of attention, as a TransformerLens plugin.

Fixed public names (DESIGN.md): ``separability``, ``capture_attention``, ``load_model``;
the main job is ``analyze``. Every paper's measures are here too, so a notebook never
needs a deep import; the code lives in one folder per paper (``geometry``,
``normalization``, ``sinks``), ``lens`` (TransformerLens and transformers), ``jobs`` and
``app`` (docs/architecture.md). Importing tl_geom does not import TransformerLens;
loading a model does.
"""

from typing import TYPE_CHECKING, Any

from tl_geom.errors import TlGeomError
from tl_geom.geometry import (
    CosineDecay,
    NormStability,
    QuerySeparability,
    RandomSeparability,
    Separability,
    attention_entropy,
    cosine_decay,
    norm_stability,
    random_separability,
    separability,
    separability_all_queries,
    sink_mass,
    sink_similarity,
)
from tl_geom.interventions import (
    ablate_heads,
    amplify_variance,
    mask_sink,
    move_sink,
    self_only_mask,
)
from tl_geom.jobs.analyze import analyze
from tl_geom.jobs.results import Analysis
from tl_geom.lens.cache import from_cache
from tl_geom.lens.capture import AttentionCapture, capture_attention
from tl_geom.lens.models import load_model, tiny_model
from tl_geom.lens.residual import residual_inputs
from tl_geom.normalization import (
    critical_n,
    cumulative_distance,
    distinguishability,
    gradient_sensitivity,
    ks_two_sample,
    random_cumulative_distance,
    softmax_jacobian,
    softmax_weight_bounds,
)
from tl_geom.sinks import (
    dom_ratio_profile,
    effective_rank_profile,
    gain_alignment,
    massive_activation_profile,
    qk_lock_in_profile,
    sink_importance,
    sink_profile,
    sink_rate,
    super_neurons,
    variance_discrepancy,
)

__all__ = [
    "Analysis",
    "AttentionCapture",
    "CosineDecay",
    "NormStability",
    "QuerySeparability",
    "RandomSeparability",
    "Separability",
    "TlGeomError",
    "ablate_heads",
    "amplify_variance",
    "analyze",
    "attention_entropy",
    "capture_attention",
    "cosine_decay",
    "critical_n",
    "cumulative_distance",
    "distinguishability",
    "dom_ratio_profile",
    "effective_rank_profile",
    "from_cache",
    "gain_alignment",
    "gradient_sensitivity",
    "inspect_head",
    "ks_two_sample",
    "load_model",
    "mask_sink",
    "massive_activation_profile",
    "move_sink",
    "norm_stability",
    "qk_lock_in_profile",
    "random_cumulative_distance",
    "random_separability",
    "residual_inputs",
    "self_only_mask",
    "separability",
    "separability_all_queries",
    "sink_importance",
    "sink_mass",
    "sink_profile",
    "sink_rate",
    "sink_similarity",
    "softmax_jacobian",
    "softmax_weight_bounds",
    "super_neurons",
    "tiny_model",
    "variance_discrepancy",
]

if TYPE_CHECKING:  # imported on first use (matplotlib), see __getattr__
    from tl_geom.app.inspect_head import inspect_head


def __getattr__(name: str) -> Any:
    """``inspect_head`` on first use: it needs matplotlib (the viz extra), tl_geom does not."""
    if name == "inspect_head":
        from tl_geom.app.inspect_head import inspect_head

        return inspect_head
    raise AttributeError(f"module 'tl_geom' has no attribute {name!r}")


def _version() -> str:
    """The installed distribution's version: the one version string is pyproject's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tl-geom")
    except PackageNotFoundError:  # a source tree on sys.path, not installed
        return "0+unknown"


__version__ = _version()
