"""tl_geom: the geometry of attention, as a TransformerLens plugin.

Fixed public names (DESIGN.md): ``separability``, ``capture_attention``, ``load_model``;
interventions will live in ``tl_geom.interventions``. Importing tl_geom does not import
TransformerLens; loading a model does.
"""

from tl_geom.capture import AttentionCapture, capture_attention
from tl_geom.errors import TlGeomError
from tl_geom.geometry import Separability, separability
from tl_geom.models import load_model, tiny_model

__all__ = [
    "AttentionCapture",
    "Separability",
    "TlGeomError",
    "capture_attention",
    "load_model",
    "separability",
    "tiny_model",
]
__version__ = "0.1.0"
