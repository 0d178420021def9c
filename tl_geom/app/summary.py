"""A quick per-layer summary of the final query: sink mass, entropy and top-N separability.

The small end-to-end job behind ``tl-geom summary``: capture the final query row and the
values of every layer, then reduce them with the math layer (``tl-geom analyze`` is the
full job).
"""

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from tl_geom.geometry.diagnostics import attention_entropy
from tl_geom.geometry.top_n import separability
from tl_geom.lens.capture import capture_attention

__all__ = ["final_query_summary"]


def final_query_summary(
    model: Any, tokens: torch.Tensor, n: Sequence[int] = (1, 4, 16)
) -> pd.DataFrame:
    """Per layer, averaged over windows and heads, for the final query row.

    sink = alpha_0 (weight on position 0), entropy = -sum alpha log alpha (nats), and
    precision / recall / F1 of the top-N keys for each N (geometry.md, "Metrics").

    Args:
        model: a TransformerLens model.
        tokens: ``[window, ctx]`` token ids.
        n: the N values.

    Returns:
        One row per layer: ``layer, sink, entropy, P@N, R@N, F1@N ...``.
    """
    cap = capture_attention(model, tokens, queries=-1)
    alpha = cap.pattern[:, :, :, 0].double()  # [window, layer, head, key]
    res = separability(alpha, cap.values, list(n))
    entropy = attention_entropy(alpha)
    table: dict[str, Any] = {
        "layer": list(cap.layers),
        "sink": alpha[..., 0].mean((0, 2)).numpy(),
        "entropy": entropy.mean((0, 2)).numpy(),
    }
    for i, k in enumerate(res.n):
        table[f"P@{k}"] = res.precision[..., i].mean((0, 2)).numpy()
        table[f"R@{k}"] = res.recall[..., i].mean((0, 2)).numpy()
        table[f"F1@{k}"] = res.f1[..., i].mean((0, 2)).numpy()
    return pd.DataFrame(table)
