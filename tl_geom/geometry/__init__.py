"""Value-space separability of attention (arXiv 2602.01893; spec ``geometry.md``; tutorial 01).

One module per concept of the paper: ``top_n`` (P, R, F of the top-N keys, the ``g``
form), ``baseline`` (random N-subsets), ``all_queries`` (every query row), ``bounds``
(exact criterion, certificate, envelope), ``simulation`` (expected P/R under the
assumption model), ``diagnostics`` (norm stability, sink similarity), ``decay``
(cosine decay to a plateau), ``profile`` (the 4-phase attention profile), ``taxonomy``
(Retriever / Mixer / Reset), ``clustering`` (its k-means check); ``claims`` and
``assumption_claims`` (the paper's claims and their verdict rules, for ``tl-geom reproduce``).
Nothing here imports TransformerLens or transformers.
"""

from tl_geom.geometry.all_queries import QuerySeparability, separability_all_queries
from tl_geom.geometry.baseline import RandomSeparability, random_separability
from tl_geom.geometry.decay import CosineDecay, cosine_decay
from tl_geom.geometry.diagnostics import (
    NormStability,
    attention_entropy,
    norm_stability,
    sink_mass,
    sink_similarity,
)
from tl_geom.geometry.top_n import Separability, separability

__all__ = [
    "CosineDecay",
    "NormStability",
    "QuerySeparability",
    "RandomSeparability",
    "Separability",
    "attention_entropy",
    "cosine_decay",
    "norm_stability",
    "random_separability",
    "separability",
    "separability_all_queries",
    "sink_mass",
    "sink_similarity",
]
