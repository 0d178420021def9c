"""Attention rows and values of each layer, from either backend (the one hooks/sdpa switch).

``hooks``: TransformerLens's ``hook_pattern`` and ``hook_v`` (the whole ``[head, L, L]``
pattern is formed, rows are sliced from it); ``sdpa``: a
:class:`~tl_geom.lens.sdpa.FusedModel` recomputes only the rows asked for from q and k.
Both hand ``on_layer(layer, rows, v)`` the same things, where ``rows(idx)`` is
``[batch, head, len(idx), key]`` and ``v`` is ``hook_v``, ``[batch, key, kv_head, d_head]``
(GQA groups not expanded).
"""

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal

import torch
from torch import Tensor

from tl_geom.lens.hooks import stream_layers
from tl_geom.lens.sdpa import FusedModel

__all__ = ["Backend", "Rows", "backend_of", "stream_rows"]

Backend = Literal["hooks", "sdpa"]
Rows = Callable[[Sequence[int]], Tensor]
"""``rows(idx)``: the attention rows ``idx`` of a layer, ``[batch, head, len(idx), key]``."""


def backend_of(model: Any) -> Backend:
    """``"sdpa"`` for a :class:`~tl_geom.lens.sdpa.FusedModel`, else ``"hooks"``."""
    return "sdpa" if isinstance(model, FusedModel) else "hooks"


def stream_rows(
    model: Any,
    layers: Sequence[int],
    on_layer: Callable[[int, Rows, Tensor], None],
    *,
    backend: Backend | None = None,
) -> AbstractContextManager[Any]:
    """A context manager under which each forward calls ``on_layer`` once per layer.

    ``backend``: None takes the model's (:func:`backend_of`); ``"hooks"`` on a
    :class:`~tl_geom.lens.sdpa.FusedModel` is an error (it has no hook points). The
    layer's tensors are handed over as soon as it has run and are not kept, so peak
    memory stays near a plain forward. Hooks are removed on exit, also on exceptions.
    """
    if (backend or backend_of(model)) == "sdpa":
        return model.stream(layers, lambda layer, lay: on_layer(layer, lay.rows, lay.v))

    def from_hooks(layer: int, acts: dict[str, Tensor]) -> None:
        pattern = acts["pattern"].detach()
        on_layer(layer, lambda idx: pattern[:, :, _index(idx)], acts["v"].detach())

    return stream_layers(model, ["v", "pattern"], layers, from_hooks)


def _index(idx: Sequence[int]) -> slice | Tensor:
    """A slice for a contiguous range (a view, no copy), else an index tensor."""
    if isinstance(idx, range) and idx.step == 1:
        return slice(idx.start, idx.stop)
    return torch.tensor(list(idx), dtype=torch.long)
