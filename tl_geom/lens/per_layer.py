"""``per_layer``: one forward, each layer reduced inside its hook, the results stacked.

The collector behind the sink measures and :func:`~tl_geom.lens.residual.residual_inputs`:
it runs the model once under :func:`~tl_geom.lens.hooks.stream_layers`, so a layer's
activations are reduced (to a per-layer number, a row, a copy) before the next layer
runs, and the hooks are removed afterwards, also on exceptions.
"""

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from tl_geom.errors import TlGeomError
from tl_geom.lens.hooks import as_tokens, model_device, model_dims, normalize_layers, stream_layers

__all__ = ["Layers", "Reduce", "per_layer"]

Layers = int | Sequence[int] | None
Reduce = Callable[[int, dict[str, Tensor]], Tensor]


def per_layer(
    model: Any,
    tokens: Tensor | str,
    kinds: Sequence[str],
    layers: Layers,
    reduce: Reduce,
    dim: int = 1,
) -> tuple[tuple[int, ...], Tensor]:
    """Run ``model`` once; ``reduce(layer, acts)`` per layer inside its hook; stack on ``dim``.

    ``acts`` maps each of ``kinds`` (``"pattern"``, ``"z"``, ``"resid_pre"``, ...) to that
    layer's activation, detached; it is the live tensor, so ``reduce`` clones what it
    keeps whole. Returns the layer ids (``layers=None``: all) and the stacked results.

    Raises:
        TlGeomError: layers out of range, or hooks that did not fire.
    """
    ids = normalize_layers(layers, model_dims(model).n_layers)
    toks = as_tokens(model, tokens)
    out: dict[int, Tensor] = {}

    def keep(layer: int, acts: dict[str, Tensor]) -> None:
        out[layer] = reduce(layer, {k: v.detach() for k, v in acts.items()})

    with torch.no_grad(), stream_layers(model, kinds, ids, keep):
        model(toks.to(model_device(model)))
    missing = [layer for layer in ids if layer not in out]
    if missing:
        raise TlGeomError(f"the hooks {list(kinds)} did not fire for layers {missing}")
    return ids, torch.stack([out[layer] for layer in ids], dim=dim)
