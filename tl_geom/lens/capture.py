"""``capture_attention``: attention rows and value vectors out of any TransformerLens model.

The fixed public contract (DESIGN.md):

    cap = capture_attention(model, tokens, layers=None, queries=-1)
    cap.pattern   # [batch, layer, head, query, key]   rows of hook_pattern
    cap.values    # [batch, layer, head, key, d_head]   hook_v, GQA groups expanded

Each layer's pattern is cut down to the requested query rows inside its hook, so the
full ``[head, L, L]`` pattern of every layer is never held at once.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_geom.errors import TlGeomError
from tl_geom.geometry.top_n import Separability
from tl_geom.lens.capture_metrics import capture_separability
from tl_geom.lens.hooks import (
    as_tokens,
    expand_kv,
    is_causal,
    model_device,
    model_dims,
    normalize_layers,
)
from tl_geom.lens.rows import Rows, stream_rows
from tl_geom.lens.sdpa import as_fused
from tl_geom.lens.value_bias import check_value_biases

__all__ = [
    "AttentionCapture",
    "QuerySpec",
    "capture_attention",
    "normalize_queries",
    "token_text",
]

QuerySpec = int | Sequence[int] | slice | None


@dataclass(frozen=True)
class AttentionCapture:
    """Attention rows and values captured from one forward pass.

    Attributes:
        pattern: ``[batch, layer, head, query, key]`` attention weights of the chosen rows.
        values: ``[batch, layer, head, key, d_head]`` value vectors, one per query head.
        layers: the model layers in the ``layer`` dim, in order.
        queries: the query positions in the ``query`` dim (non-negative), in order.
        tokens: the ``[batch, pos]`` token ids that were run (None when unknown, e.g.
            :func:`~tl_geom.lens.cache.from_cache` without ``tokens``).
        causal: whether query ``q`` saw only keys ``0..q`` (decoders).
        text: the tokens of batch row 0 as strings, when the model has a tokenizer.
    """

    pattern: Float[Tensor, "batch layer head query key"]
    values: Float[Tensor, "batch layer head key d_head"]
    layers: tuple[int, ...]
    queries: tuple[int, ...]
    tokens: Int[Tensor, "batch pos"] | None
    causal: bool = True
    text: tuple[str, ...] | None = None

    def __repr__(self) -> str:
        return (
            f"AttentionCapture(pattern={tuple(self.pattern.shape)}, "
            f"values={tuple(self.values.shape)}, layers={_short(self.layers)}, "
            f"queries={_short(self.queries)})"
        )

    def _repr_html_(self) -> str:
        import html

        b, _, n_heads, _, length = self.pattern.shape
        words = "" if self.text is None else " ".join(self.text[:24])
        more = "" if self.text is None or len(self.text) <= 24 else " ..."
        return (
            f"<p><b>AttentionCapture</b>: batch {b}, layers {_short(self.layers)}, "
            f"{n_heads} heads, queries {_short(self.queries)} over {length} keys, "
            f"{'causal' if self.causal else 'bidirectional'}</p>"
            f"<p><code>{html.escape(words + more)}</code></p>"
        )

    def separability(self, n: int | Sequence[int]) -> Separability:
        """Top-N separability of every captured row: :func:`tl_geom.separability` on it.

        Row ``(b, l, h, q)`` is ``pattern[b, l, h, q]`` with ``values[b, l, h]``;
        causal rows keep only their visible keys ``0..q``, so future keys are in
        neither set (as in ``separability_all_queries``). Spec: geometry.md, "Metrics".
        The result's ``to_frame()`` carries the real layer and query ids.
        """
        return capture_separability(self, n)


def _short(xs: tuple[int, ...]) -> str:
    return str(list(xs)) if len(xs) <= 6 else f"[{xs[0]}, {xs[1]}, ..., {xs[-1]}] ({len(xs)})"


def normalize_queries(queries: QuerySpec, length: int) -> tuple[int, ...]:
    """Query positions as non-negative ints; an int, a list, a slice, or None for all.

    >>> normalize_queries(-1, 5), normalize_queries(slice(1, None, 2), 5)
    ((4,), (1, 3))
    >>> normalize_queries(None, 3)
    (0, 1, 2)
    """
    if queries is None:
        return tuple(range(length))
    if isinstance(queries, slice):
        out = tuple(range(length)[queries])
        if not out:
            raise TlGeomError(f"queries={queries} selects no position of {length}")
        return out
    if isinstance(queries, int):
        raw: list[object] = [queries]
    elif isinstance(queries, Sequence):
        raw = list(queries)
    else:
        raise TlGeomError(f"queries must be ints, a slice or None, got {queries!r}")
    if not raw:
        raise TlGeomError("queries is empty; pass None for every position")
    out_list: list[int] = []
    for q in raw:
        if isinstance(q, bool) or not isinstance(q, int):
            raise TlGeomError(f"queries must be ints, a slice or None, got {q!r}")
        if not -length <= q < length:
            raise TlGeomError(f"query position {q} out of range for {length} tokens")
        out_list.append(q % length)
    return tuple(out_list)


def capture_attention(
    model: Any,
    tokens: Tensor | str,
    layers: int | Sequence[int] | None = None,
    queries: QuerySpec = -1,
    *,
    backend: str = "hooks",
) -> AttentionCapture:
    """Run ``model`` on ``tokens`` and keep the chosen attention rows and the values.

    pattern[b, l, h, q, k] = hook_pattern of layer ``layers[l]`` at row ``queries[q]``;
    values[b, l, h, k] = hook_v of that layer, KV head ``h // (n_heads / n_kv_heads)``.
    Runs under ``torch.no_grad()``; hooks are removed afterwards, also on exceptions.

    Args:
        model: a TransformerBridge (compatibility mode) or HookedTransformer.
        tokens: ``[batch, pos]`` (or ``[pos]``) token ids, or a string to tokenize.
        layers: a layer, a list of layers, or None for all.
        queries: a position (default -1, the final query), a list or slice of
            positions, or None for every position.
        backend: ``"hooks"`` (TransformerLens ``hook_pattern``/``hook_v``; composes with
            your hooks and tl_geom.lens.interventions) or ``"sdpa"`` (a model from
            :func:`tl_geom.lens.sdpa.load_fused_model` or a transformers model: fused
            attention, only the asked rows recomputed from q and k; see ``fused.py``).

    Returns:
        An :class:`AttentionCapture`.

    Raises:
        TlGeomError: tokens of the wrong dtype or rank, layers or queries out of
            range, a model without attention hooks, a backend the model cannot serve,
            a model whose value biases were folded into ``b_O`` (``lens/value_bias.py``).
    """
    if backend not in ("hooks", "sdpa"):
        raise TlGeomError(f"backend must be 'hooks' or 'sdpa', got {backend!r}")
    check_value_biases(model)
    if backend == "sdpa":
        model = as_fused(model)
    dims = model_dims(model)
    toks = as_tokens(model, tokens)
    layer_ids = normalize_layers(layers, dims.n_layers)
    query_ids = normalize_queries(queries, toks.shape[1])
    # only the sorted distinct rows are taken (sdpa recomputes just those), then ordered
    streamed: Sequence[int] = sorted(set(query_ids))
    if list(streamed) == list(range(streamed[0], streamed[-1] + 1)):
        streamed = range(streamed[0], streamed[-1] + 1)  # the hooks backend slices a view
    at = {q: i for i, q in enumerate(streamed)}
    order = torch.tensor([at[q] for q in query_ids])
    patterns: dict[int, Tensor] = {}
    values: dict[int, Tensor] = {}

    def keep(layer: int, rows: Rows, v_kv: Tensor) -> None:
        pattern = rows(streamed)
        patterns[layer] = pattern[:, :, order.to(pattern.device)].detach().clone()
        v = expand_kv(v_kv, dims.n_heads).detach()
        values[layer] = einops.rearrange(v, "b k h d -> b h k d").clone()

    streamer = stream_rows(model, layer_ids, keep, backend=backend)
    device = model_device(model)
    with torch.no_grad(), streamer:
        model(toks.to(device))
    missing = [layer for layer in layer_ids if layer not in patterns]
    if missing:
        raise TlGeomError(
            f"hook_pattern/hook_v did not fire for layers {missing}; the model's attention "
            "does not run through TransformerLens hook points (load it with eager attention)"
        )
    return AttentionCapture(
        pattern=torch.stack([patterns[layer] for layer in layer_ids], dim=1),
        values=torch.stack([values[layer] for layer in layer_ids], dim=1),
        layers=layer_ids,
        queries=query_ids,
        tokens=toks,
        causal=is_causal(model),
        text=token_text(model, toks[0]),
    )


def token_text(model: Any, tokens: Tensor) -> tuple[str, ...] | None:
    """Each token id of ``tokens`` ``[pos]`` as text, or None without a tokenizer."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        return None
    return tuple(str(tokenizer.decode([int(t)])) for t in tokens.tolist())
