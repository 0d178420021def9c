"""tl_geom: the geometry of attention, as a TransformerLens plugin.

Fixed public names (see README): ``separability``, ``capture_attention``,
``load_model``; interventions live in ``tl_geom.interventions``.
"""

from tl_geom.errors import TlGeomError
from tl_geom.geometry import Separability, separability

__all__ = ["Separability", "TlGeomError", "separability"]
__version__ = "0.1.0"
