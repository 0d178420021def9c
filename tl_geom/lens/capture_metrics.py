"""The metrics of a capture, with its real layer / head / query ids kept.

``AttentionCapture.separability(n)``: geometry.md "Metrics" on every captured row.
A causal row ``q`` sees keys ``0..q``; its future keys (weight 0) are dropped rather
than counted as unselected points at ``y = 0`` [ours, as ``separability_all_queries``].
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from tl_geom.errors import TlGeomError
from tl_geom.geometry.top_n import Separability, separability

if TYPE_CHECKING:
    from tl_geom.lens.capture import AttentionCapture

__all__ = ["capture_separability", "visible_keys"]

DIMS = ("batch", "layer", "head", "query")


def visible_keys(capture: "AttentionCapture", q_index: int) -> int:
    """Number of keys query ``capture.queries[q_index]`` sees (``q + 1`` when causal)."""
    length = capture.pattern.shape[-1]
    return capture.queries[q_index] + 1 if capture.causal else length


def capture_separability(capture: "AttentionCapture", n: int | Sequence[int]) -> Separability:
    """:func:`~tl_geom.geometry.top_n.separability` of every row of ``capture``.

    Rows with the same number of visible keys are measured in one batched call (one
    call for the final query, the default); ``selected`` is padded with False and the
    result is labelled with ``capture.layers`` and ``capture.queries``.
    """
    pattern, values = capture.pattern, capture.values
    b, n_layers, n_heads, n_q, length = pattern.shape
    groups: dict[int, list[int]] = {}
    for i in range(n_q):
        groups.setdefault(visible_keys(capture, i), []).append(i)
    parts: dict[int, Separability] = {}
    for keys, rows in groups.items():
        alpha = pattern[:, :, :, rows, :keys]
        vals = values[:, :, :, None, :keys].expand(-1, -1, -1, len(rows), -1, -1)
        try:
            parts[keys] = separability(alpha, vals, n)
        except TlGeomError as exc:
            raise TlGeomError(f"queries at {keys} visible keys: {exc}") from None
    first = next(iter(parts.values()))
    scalar = first.scalar_n
    tail = () if scalar else (len(first.n),)
    out = {
        k: torch.empty((b, n_layers, n_heads, n_q, *tail), dtype=getattr(first, k).dtype)
        for k in ("precision", "recall", "f1", "r_max", "r_min", "margin")
    }
    selected = torch.zeros((b, n_layers, n_heads, n_q, *tail, length), dtype=torch.bool)
    s = torch.empty((b, n_layers, n_heads, n_q, *tail, values.shape[-1]), dtype=first.s.dtype)
    for keys, rows in groups.items():
        part = parts[keys]
        idx = torch.tensor(rows)
        for k, tensor in out.items():
            tensor[:, :, :, idx] = getattr(part, k)
        selected[:, :, :, idx, ..., :keys] = part.selected
        s[:, :, :, idx] = part.s
    return Separability(
        n=first.n,
        selected=selected,
        s=s,
        scalar_n=scalar,
        dims=DIMS,
        coords=(tuple(range(b)), capture.layers, tuple(range(n_heads)), capture.queries),
        **out,
    )
