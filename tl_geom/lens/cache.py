"""``from_cache``: the capture object out of an ``ActivationCache`` the user already has.

    logits, cache = model.run_with_cache(tokens)
    cap = tl_geom.from_cache(cache, layers=None, queries=-1, tokens=tokens)

gives the same :class:`~tl_geom.lens.capture.AttentionCapture` as
``capture_attention(model, tokens, layers, queries)``: rows of ``hook_pattern``, values
of ``hook_v`` with GQA groups expanded per query head, the real layer ids kept.
"""

import re
from collections.abc import Sequence
from typing import Any

import einops
import torch
from torch import Tensor

from tl_geom.errors import TlGeomError
from tl_geom.lens.capture import AttentionCapture, QuerySpec, normalize_queries, token_text
from tl_geom.lens.hooks import expand_kv, hook_name, is_causal, normalize_layers
from tl_geom.lens.value_bias import check_value_biases

__all__ = ["from_cache"]

_KEY = re.compile(r"blocks\.(\d+)\.attn\.hook_(pattern|v)")


def _cached_layers(cache: Any) -> list[int]:
    """Layers whose ``hook_pattern`` and ``hook_v`` are both in the cache, sorted."""
    found: dict[int, set[str]] = {}
    for key in cache.keys():
        match = _KEY.fullmatch(str(key))
        if match:
            found.setdefault(int(match.group(1)), set()).add(match.group(2))
    return sorted(layer for layer, kinds in found.items() if len(kinds) == 2)


def _n_layers(cache: Any, cached: list[int]) -> int:
    model = getattr(cache, "model", None)
    n_layers = getattr(getattr(model, "cfg", None), "n_layers", None)
    return int(n_layers) if n_layers else (max(cached) + 1 if cached else 0)


def from_cache(
    cache: Any,
    layers: int | Sequence[int] | None = None,
    queries: QuerySpec = -1,
    *,
    tokens: Tensor | None = None,
) -> AttentionCapture:
    """An :class:`AttentionCapture` from a cache of ``run_with_cache`` (no new forward).

    ``pattern[b, l, h, q, k] = cache[hook_pattern of layers[l]][b, h, queries[q], k]``;
    ``values[b, l, h, k] = cache[hook_v of layers[l]][b, k, h // (n_heads / n_kv_heads)]``.

    Args:
        cache: a TransformerLens ``ActivationCache`` (or any mapping from hook names to
            tensors) holding ``blocks.{l}.attn.hook_pattern`` and ``hook_v``.
        layers: a layer, a list of layers, or None for every layer in the cache.
        queries: as in :func:`~tl_geom.lens.capture.capture_attention` (default -1).
        tokens: the ``[batch, pos]`` ids that were run, kept with their text when the
            cache's model has a tokenizer (optional).

    Raises:
        TlGeomError: a cache without the layers asked for, queries out of range, a
            model whose value biases were folded into ``b_O`` (``value_bias.py``).
    """
    model = getattr(cache, "model", None)
    if model is not None:
        check_value_biases(model)
    cached = _cached_layers(cache)
    if not cached:
        raise TlGeomError(
            "the cache holds no blocks.{l}.attn.hook_pattern with hook_v; run "
            "model.run_with_cache(tokens) without a names_filter, or keep those two"
        )
    layer_ids = normalize_layers(cached if layers is None else layers, _n_layers(cache, cached))
    missing = [layer for layer in layer_ids if layer not in cached]
    if missing:
        raise TlGeomError(f"the cache lacks hook_pattern/hook_v of layers {missing}")
    first = cache[hook_name(layer_ids[0], "pattern")]
    n_heads, length = int(first.shape[1]), int(first.shape[-1])
    query_ids = normalize_queries(queries, length)
    rows = torch.tensor(query_ids, device=first.device)
    patterns, values = [], []
    for layer in layer_ids:
        patterns.append(cache[hook_name(layer, "pattern")].index_select(2, rows))
        v = expand_kv(cache[hook_name(layer, "v")], n_heads)
        values.append(einops.rearrange(v, "b k h d -> b h k d"))
    toks = tokens.unsqueeze(0) if tokens is not None and tokens.ndim == 1 else tokens
    return AttentionCapture(
        pattern=torch.stack(patterns, dim=1).detach().clone(),
        values=torch.stack(values, dim=1).detach().clone(),
        layers=layer_ids,
        queries=query_ids,
        tokens=toks,
        causal=is_causal(model),
        text=token_text(model, toks[0]) if toks is not None and model is not None else None,
    )
