"""Synthetic heads built to be each taxonomy type (final query), for the taxonomy tests."""

import math

import numpy as np
import torch

from tl_geom.geometry.taxonomy import TYPES

SINK_RETRIEVER = "Retriever@sink"
"""A Retriever whose top key is the sink: the last token is only the second largest weight."""
KINDS = (*TYPES, SINK_RETRIEVER)


def synthetic_head(
    kind: str,
    rng: np.random.Generator,
    length: int = 64,
    d: int = 32,
    *,
    params: dict[str, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha [L] and values [L, d] of a head built to be ``kind`` for the final query.

    ``params`` overrides the weights: ``last`` (alpha_q), ``sink`` (alpha_0), ``block``
    (weight of the Mixer's block of keys carrying v_q), ``size`` (its size), ``noise``
    (the block's spread around v_q), ``scale`` (the norm of v_0 in a Mixer).
    """
    p = {"last": 60.0, "sink": 5.0, "block": 5.0, "size": 16, "noise": 0.3, "scale": 0.5}
    if kind == SINK_RETRIEVER:
        p.update(last=50.0, sink=60.0)
    elif kind == "Reset":
        p.update(sink=200.0)
    elif kind == "Mixer":
        p.update(sink=30.0)
    p.update(params or {})
    v = rng.normal(size=(length, d)) / math.sqrt(d)
    q = length - 1
    v[q] = rng.normal(size=d)
    v[q] *= 2 / np.linalg.norm(v[q])
    sink_dir = rng.normal(size=d)
    sink_dir -= sink_dir @ v[q] / (v[q] @ v[q]) * v[q]  # orthogonal to v_q
    v[0] = sink_dir / np.linalg.norm(sink_dir)
    alpha = np.full(length, 1.0)
    if kind in ("Retriever", SINK_RETRIEVER):  # most weight on the query itself (or the sink)
        alpha[q], alpha[0] = p["last"], p["sink"]
    elif kind == "Reset":  # parked on the sink; the rest is noise
        alpha[0] = p["sink"]
    elif kind == "Mixer":  # sink first, then a block of keys carrying v_q
        size = int(p["size"])
        alpha[0] = p["sink"]
        block = rng.choice(np.arange(1, q), size=size, replace=False)
        alpha[block] = p["block"]
        v[block] = v[q] + p["noise"] * rng.normal(size=(size, d)) / math.sqrt(d)
        v[0] *= p["scale"]
    else:
        raise ValueError(kind)
    alpha /= alpha.sum()
    return torch.tensor(alpha), torch.tensor(v)


def synthetic_batch(
    per_type: int = 6, seed: int = 0, kinds: tuple[str, ...] = TYPES, length: int = 64
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """``per_type`` heads of each kind: (kinds, alpha [H, L], values [H, L, d])."""
    rng = np.random.default_rng(seed)
    names = [k for k in kinds for _ in range(per_type)]
    heads = [synthetic_head(k, rng, length) for k in names]
    return names, torch.stack([h[0] for h in heads]), torch.stack([h[1] for h in heads])


def random_heads(count: int, seed: int, length: int = 256, d: int = 32):
    """``count`` heads of random kinds with random weights, some near the rules' boundaries."""
    rng = np.random.default_rng(seed)
    kinds, heads = [], []
    for _ in range(count):
        kind = str(rng.choice(KINDS))
        params = {
            "last": float(rng.uniform(5, 120)),
            "sink": float(rng.uniform(1, 400)) if kind != "Mixer" else float(rng.uniform(5, 80)),
            "block": float(rng.uniform(1, 10)),
            "size": int(rng.integers(2, length // 8)),
            "noise": float(rng.uniform(0.1, 2.0)),
            "scale": float(rng.uniform(0.2, 1.0)),
        }
        kinds.append(kind)
        heads.append(synthetic_head(kind, rng, length, d, params=params))
    return kinds, torch.stack([h[0] for h in heads]), torch.stack([h[1] for h in heads])
