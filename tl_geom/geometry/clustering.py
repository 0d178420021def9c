"""The unsupervised check of the head taxonomy: k-means against the rule labels.

Spec: geometry.md, "Head taxonomy". The features of a head are both curves and the three
mass shares (:func:`taxonomy_features`); k-means (k = 3, fixed seed, k-means++ seeding,
best of several restarts) clusters them, and :func:`cluster_agreement` reports how well
the clusters agree with the rule labels of :func:`tl_geom.geometry.taxonomy.classify_heads`
(best-permutation accuracy and adjusted Rand index over the labelled heads).
Pure math (torch, numpy): no TransformerLens import.
"""

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import einops
import numpy as np
import torch
from jaxtyping import Float
from scipy.optimize import linear_sum_assignment  # pyright: ignore[reportMissingTypeStubs]
from torch import Tensor

from tl_geom.errors import TlGeomError

if TYPE_CHECKING:
    from tl_geom.geometry.taxonomy import TaxonomyConfig

__all__ = [
    "KMEANS_RESTARTS",
    "KMEANS_SEED",
    "ClusterAgreement",
    "adjusted_rand",
    "best_permutation_accuracy",
    "cluster_agreement",
    "kmeans",
    "mass_shares",
    "taxonomy_features",
]

KMEANS_SEED = 0
"""Default k-means seed of the check [ours] (``TaxonomyConfig.seed``)."""
KMEANS_RESTARTS = 10
"""Default k-means restarts [ours] (``TaxonomyConfig.restarts``): the lowest inertia wins."""


def mass_shares(mass: Float[Tensor, "*lead 3"]) -> Float[Tensor, "*lead 3"]:
    """The mass split (sink, last, rest) as shares of its sum, float64; 0 where the sum is 0.

    share_j = m_j / sum_k m_k. Spec: geometry.md, "Head taxonomy".
    """
    total = mass.double().sum(-1, keepdim=True)
    return torch.where(total > 0, mass.double() / total.clamp_min(1e-300), 0.0)


def taxonomy_features(
    c_last: Float[Tensor, "*lead nn"],
    c_sink: Float[Tensor, "*lead nn"],
    mass: Float[Tensor, "*lead 3"],
) -> Float[Tensor, "heads feature"]:
    """k-means features per head: ``[c_last (K), c_sink (K), mass shares (3)]``, flattened.

    Cosines and shares are on comparable scales (``[-1, 1]``, ``[0, 1]``); no
    standardisation [ours].
    """
    feats = torch.cat([c_last.double(), c_sink.double(), mass_shares(mass)], -1)
    return einops.rearrange(feats, "... f -> (...) f")


def kmeans(
    x: np.ndarray,
    k: int = 3,
    *,
    seed: int = KMEANS_SEED,
    restarts: int = KMEANS_RESTARTS,
    iters: int = 100,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Lloyd's k-means with k-means++ seeding; the best of ``restarts`` runs.

    min_{labels, centres} sum_i ||x_i - c_{label_i}||^2. Deterministic for a seed.
    An empty cluster is re-seeded at the point farthest from its centre [ours].

    Args:
        x: ``[points, features]``.
        k: clusters (at most the number of points).
        seed: seed of the k-means++ draws.
        restarts: independent runs; the lowest inertia is kept.
        iters: Lloyd iterations per run at most.

    Returns:
        ``(labels [points], centres [k, features], inertia)``.

    >>> x = np.array([[0.0], [0.1], [5.0], [5.1], [9.0], [9.2]])
    >>> kmeans(x, 3)[0].tolist()
    [0, 0, 1, 1, 2, 2]
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or not 1 <= k <= x.shape[0]:
        raise TlGeomError(f"kmeans needs x [points, features] with k <= points, got {x.shape}, {k}")
    if not np.isfinite(x).all():
        raise TlGeomError("kmeans input holds NaN/inf entries")
    rng = np.random.default_rng(seed)
    best: tuple[np.ndarray, np.ndarray, float] | None = None
    for _ in range(restarts):
        centres = x[[int(rng.integers(len(x)))]]
        while len(centres) < k:  # k-means++: draw proportional to squared distance
            d2 = ((x[:, None, :] - centres[None]) ** 2).sum(-1).min(1)
            p = d2 / d2.sum() if d2.sum() > 0 else np.full(len(x), 1 / len(x))
            centres = np.vstack([centres, x[rng.choice(len(x), p=p)]])
        labels = np.zeros(len(x), dtype=np.int64)
        for _ in range(iters):
            d2 = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
            labels = d2.argmin(1)
            new = centres.copy()
            for c in range(k):
                members = labels == c
                if members.any():
                    new[c] = x[members].mean(0)
                else:
                    new[c] = x[d2[np.arange(len(x)), labels].argmax()]
            if np.array_equal(new, centres):
                break
            centres = new
        d2 = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
        labels = d2.argmin(1)
        inertia = float(d2.min(1).sum())
        if best is None or inertia < best[2] - 1e-12:
            best = (labels, centres, inertia)
    assert best is not None
    # canonical cluster ids: in order of first appearance
    order = list(dict.fromkeys(best[0].tolist()))
    order += [c for c in range(k) if c not in order]
    remap = np.empty(k, dtype=np.int64)
    remap[order] = np.arange(k)
    return remap[best[0]], best[1][order], best[2]


def best_permutation_accuracy(truth: np.ndarray, clusters: np.ndarray) -> float:
    """Max over one-to-one maps from clusters to labels of the share of points matched.

    max_pi (1/n) #{i : pi(cluster_i) = truth_i}; clusters left unmapped count as wrong.
    The assignment is ``scipy.optimize.linear_sum_assignment`` on the [cluster, label]
    count table (the brute force over permutations is the test's reference).

    >>> best_permutation_accuracy(np.array([0, 0, 1, 2]), np.array([2, 2, 0, 1]))
    1.0
    """
    truth, clusters = np.asarray(truth), np.asarray(clusters)
    if truth.shape != clusters.shape or truth.ndim != 1 or len(truth) == 0:
        raise TlGeomError(f"need two equal 1-d label arrays, got {truth.shape}, {clusters.shape}")
    labs, cl = np.unique(truth), np.unique(clusters)
    table = (clusters[:, None] == cl[None]).T.astype(np.int64) @ (
        truth[:, None] == labs[None]
    ).astype(np.int64)  # [cluster, label] counts
    rows, cols = linear_sum_assignment(table, maximize=True)
    return int(table[rows, cols].sum()) / len(truth)


def adjusted_rand(truth: np.ndarray, clusters: np.ndarray) -> float:
    """Adjusted Rand index (Hubert and Arabie): pair agreement corrected for chance.

    ARI = (sum_ij C(n_ij, 2) - E) / ((sum_i C(a_i, 2) + sum_j C(b_j, 2)) / 2 - E),
    E = sum_i C(a_i, 2) sum_j C(b_j, 2) / C(n, 2). 1 for identical partitions; 1 when
    both are a single cluster (or every point alone) [ours: the 0/0 case].

    >>> adjusted_rand(np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0]))
    1.0
    """
    truth, clusters = np.asarray(truth), np.asarray(clusters)
    if truth.shape != clusters.shape or truth.ndim != 1 or len(truth) < 2:
        raise TlGeomError(f"need two equal 1-d label arrays of >= 2, got {truth.shape}")
    _, ti = np.unique(truth, return_inverse=True)
    _, ci = np.unique(clusters, return_inverse=True)
    table = np.zeros((ti.max() + 1, ci.max() + 1), dtype=np.float64)
    np.add.at(table, (ti, ci), 1.0)

    def pairs(m: np.ndarray) -> float:
        return float((m * (m - 1) / 2).sum())

    index = pairs(table)
    a, b = pairs(table.sum(1)), pairs(table.sum(0))
    n = len(truth)
    expected = a * b / (n * (n - 1) / 2)
    top = (a + b) / 2 - expected
    return 1.0 if top == 0 else (index - expected) / top


@dataclass(frozen=True)
class ClusterAgreement:
    """The unsupervised check: k-means clusters vs the rule labels.

    Attributes:
        clusters: k-means cluster of every head (flattened), ``[heads]``.
        labelled: how many heads have a rule label (not unclear).
        accuracy: best-permutation accuracy over the labelled heads (nan if none).
        ari: adjusted Rand index over the labelled heads (nan if fewer than 2).
        inertia: the k-means objective.
    """

    clusters: np.ndarray
    labelled: int
    accuracy: float
    ari: float
    inertia: float


def cluster_agreement(
    c_last: Float[Tensor, "*lead nn"],
    c_sink: Float[Tensor, "*lead nn"],
    mass: Float[Tensor, "*lead 3"],
    code: Tensor,
    config: "TaxonomyConfig | None" = None,
    *,
    k: int = 3,
) -> ClusterAgreement:
    """k-means (k = 3) on :func:`taxonomy_features` and its agreement with rule ``code``.

    Agreement is measured on the heads with a rule label only (``code >= 0``); the
    k-means seed and restarts come from ``config`` (default ``KMEANS_SEED``,
    ``KMEANS_RESTARTS``).
    With fewer than ``k`` heads the clusters are all 0 and the scores nan.
    """
    seed, restarts = (config.seed, config.restarts) if config else (KMEANS_SEED, KMEANS_RESTARTS)
    x = taxonomy_features(c_last, c_sink, mass).numpy()
    codes = code.flatten().numpy()
    if len(codes) != len(x):
        raise TlGeomError(f"code has {len(codes)} heads, the curves {len(x)}")
    if len(x) < k:
        return ClusterAgreement(np.zeros(len(x), dtype=np.int64), 0, math.nan, math.nan, math.nan)
    clusters, _, inertia = kmeans(x, k, seed=seed, restarts=restarts)
    keep = codes >= 0
    n_lab = int(keep.sum())
    acc = best_permutation_accuracy(codes[keep], clusters[keep]) if n_lab else math.nan
    ari = adjusted_rand(codes[keep], clusters[keep]) if n_lab >= 2 else math.nan
    return ClusterAgreement(clusters, n_lab, acc, ari, inertia)
