"""Checks of capture_attention against run_with_cache, shared by the TL 4 and TL 3 suites."""

from typing import Any

import torch

from tl_geom.lens.capture import capture_attention, normalize_queries
from tl_geom.lens.hooks import count_hooks

QUERY_OPTIONS: list[Any] = [-1, 0, [0, 3, -1], [5, 2], slice(2, None, 3), None]


def reference_rows(model: Any, tokens: torch.Tensor, queries: Any) -> tuple[torch.Tensor, ...]:
    """Literal reference: full cache, then index rows and repeat_interleave the KV heads."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    rows = list(normalize_queries(queries, tokens.shape[1]))
    patterns, values = [], []
    for layer in range(n_layers):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]  # [b, h, q, k]
        patterns.append(pattern[:, :, rows])
        v = cache[f"blocks.{layer}.attn.hook_v"]  # [b, k, kv, d]
        v = torch.repeat_interleave(v, n_heads // v.shape[2], dim=2)
        values.append(v.permute(0, 2, 1, 3))
    return torch.stack(patterns, 1), torch.stack(values, 1)


def check_against_cache(model: Any, tokens: torch.Tensor) -> None:
    """Every layer and query option equals the cached reference, and no hook is left."""
    before = count_hooks(model)
    for queries in QUERY_OPTIONS:
        ref_pattern, ref_values = reference_rows(model, tokens, queries)
        cap = capture_attention(model, tokens, queries=queries)
        assert cap.pattern.shape == ref_pattern.shape, queries
        assert torch.equal(cap.pattern, ref_pattern), queries
        assert torch.equal(cap.values, ref_values), queries
        assert cap.queries == normalize_queries(queries, tokens.shape[1])
        for layer in range(model.cfg.n_layers):
            one = capture_attention(model, tokens, layers=layer, queries=queries)
            assert one.layers == (layer,)
            assert torch.equal(one.pattern[:, 0], ref_pattern[:, layer])
            assert torch.equal(one.values[:, 0], ref_values[:, layer])
    assert count_hooks(model) == before
