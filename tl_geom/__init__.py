"""tl_geom: the geometry of attention, as a TransformerLens plugin.

Fixed public names (DESIGN.md): ``separability``, ``capture_attention``, ``load_model``;
the main job is ``analyze``. Importing tl_geom does not import TransformerLens; loading
a model does.
"""

from tl_geom.all_queries import QuerySeparability, separability_all_queries
from tl_geom.baseline import RandomSeparability, random_separability
from tl_geom.capture import AttentionCapture, capture_attention
from tl_geom.errors import TlGeomError
from tl_geom.geometry import Separability, separability
from tl_geom.models import load_model, tiny_model
from tl_geom.pipeline import analyze
from tl_geom.results import Analysis

__all__ = [
    "Analysis",
    "AttentionCapture",
    "QuerySeparability",
    "RandomSeparability",
    "Separability",
    "TlGeomError",
    "analyze",
    "capture_attention",
    "load_model",
    "random_separability",
    "separability",
    "separability_all_queries",
    "tiny_model",
]
__version__ = "0.1.0"
