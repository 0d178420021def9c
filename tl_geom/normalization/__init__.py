"""Limits of softmax normalization (arXiv 2508.17821; spec ``normalization.md``; tutorial 02).

``distinguishability`` (cumulative distance d~, N_s/N, critical N by the KS test),
``ks`` (the exact two-sample test), ``softmax_bounds`` (temperature bounds, the Jacobian,
gradient sensitivity), ``tables`` (the paper's experiment tables from given tensors),
``claims`` (the paper's claims and their verdict rules, for ``tl-geom reproduce``).
Nothing here imports TransformerLens or transformers.
"""

from tl_geom.normalization.distinguishability import (
    CriticalN,
    critical_n,
    cumulative_distance,
    distinguishability,
    random_cumulative_distance,
)
from tl_geom.normalization.ks import KSTest, ks_two_sample
from tl_geom.normalization.softmax_bounds import (
    gradient_sensitivity,
    softmax_jacobian,
    softmax_weight_bounds,
)

__all__ = [
    "CriticalN",
    "KSTest",
    "critical_n",
    "cumulative_distance",
    "distinguishability",
    "gradient_sensitivity",
    "ks_two_sample",
    "random_cumulative_distance",
    "softmax_jacobian",
    "softmax_weight_bounds",
]
