"""``residual_inputs``: the residual stream each layer's attention reads, from either backend.

The softmax-limits paper aggregates token vectors ``x_i``; the library uses the value
vectors by default and offers the residual-stream inputs as the spec's option
(normalization.md, "Quantities"). Here ``x_i`` is ``blocks.{l}.hook_resid_pre`` at key
``i``: the stream entering layer ``l``, before the layer's own LayerNorm/RMSNorm [ours:
the unnormalised stream, the vectors the residual connection carries; the norm rescales
each token separately and would hide the massive activation of the first token].
"""

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from tl_geom.lens.hooks import as_tokens, model_device, model_dims, normalize_layers
from tl_geom.lens.per_layer import per_layer
from tl_geom.lens.sdpa import FusedModel

__all__ = ["residual_inputs"]


def residual_inputs(
    model: Any, tokens: Tensor | str, layers: int | Sequence[int] | None = None
) -> Float[Tensor, "batch layer pos d_model"]:
    """``hook_resid_pre`` of each chosen layer, stacked on dim 1 (one forward, no grad).

    A TransformerBridge or HookedTransformer: its ``blocks.{l}.hook_resid_pre``. A
    :class:`~tl_geom.lens.sdpa.FusedModel`: transformers' ``hidden_states[l]`` (the
    embeddings for ``l = 0``, else the output of block ``l - 1``), the same tensor.
    Hooks are removed afterwards, also on exceptions.

    Raises:
        TlGeomError: layers out of range, or hooks that did not fire.
    """
    if isinstance(model, FusedModel):
        ids = normalize_layers(layers, model_dims(model).n_layers)
        toks = as_tokens(model, tokens).to(model_device(model))
        with torch.no_grad():
            out = model.hf(input_ids=toks, use_cache=False, output_hidden_states=True)
        return torch.stack([out.hidden_states[layer] for layer in ids], dim=1)
    _, resid = per_layer(
        model, tokens, ["resid_pre"], layers, lambda _, acts: acts["resid_pre"].clone()
    )
    return resid
