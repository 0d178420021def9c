"""Refuse a model whose value biases were folded into ``b_O`` (values shifted by ``-b_V``).

TransformerLens folds value biases by default (``enable_compatibility_mode()`` on a
``TransformerBridge``, ``HookedTransformer.from_pretrained`` in 3.x):
``b_O' = b_O + sum_h b_V^h W_O^h`` and ``b_V' = 0``. The head output is unchanged,
but every ``hook_v`` becomes ``v_i - b_V``, and with it ``y_i = alpha_i v_i``: the
geometry of geometry.md ("Metrics") is that of the model's own values, so a folded
model gives different (wrong) P/R/F (measured on MiniLM layer 3: values off by up to
0.09, F1 changed in 5 of 12 heads). :func:`tl_geom.load_model` loads with
``fold_value_biases=False``; a model the user brings is checked here.
"""

from typing import Any

import torch

from tl_geom.errors import TlGeomError

__all__ = ["check_value_biases", "value_biases_folded"]

_BIAS_FLAGS = ("attention_bias", "qkv_bias", "use_bias", "bias")


def _param(attn: Any, name: str) -> torch.Tensor | None:
    try:
        value = getattr(attn, name, None)
    except (AttributeError, RuntimeError, TypeError):
        return None
    return value if isinstance(value, torch.Tensor) else None


def _hf_says_no_bias(model: Any) -> bool:
    hf = getattr(model, "original_model", None) or getattr(model, "hf", None)
    config = getattr(hf, "config", None)
    return any(getattr(config, flag, None) is False for flag in _BIAS_FLAGS)


def value_biases_folded(model: Any) -> bool:
    """Whether ``model``'s value biases look folded into ``b_O``.

    Folded when every layer's ``b_V`` is exactly zero while some ``b_O`` is not [ours]:
    a model without value biases (Llama: ``b_V`` is None, or its transformers config
    says ``attention_bias=False``) and a random model with zero biases everywhere are
    not folded. Models without ``blocks`` (the fused sdpa model: transformers'
    own weights, never folded) are not checked.
    """
    blocks = getattr(model, "blocks", None)
    if blocks is None or _hf_says_no_bias(model):
        return False
    b_o_nonzero = False
    with torch.no_grad():
        for block in blocks:
            attn = getattr(block, "attn", None)
            b_v = _param(attn, "b_V")
            if b_v is None or b_v.numel() == 0:
                return False  # no value biases at all: nothing to fold
            if bool(b_v.detach().ne(0).any()):
                return False
            b_o = _param(attn, "b_O")
            b_o_nonzero |= b_o is not None and bool(b_o.detach().ne(0).any())
    return b_o_nonzero


def check_value_biases(model: Any) -> None:
    """Raise a TlGeomError if ``model``'s value biases were folded (:func:`value_biases_folded`).

    Raises:
        TlGeomError: saying how to load the model with its value biases in ``hook_v``.
    """
    if value_biases_folded(model):
        raise TlGeomError(
            f"{type(model).__name__} has its value biases folded into b_O (every b_V is 0, "
            "b_O is not), so hook_v is v - b_V and the value-space geometry would be wrong. "
            "Load it with tl_geom.load_model(name_or_path), or call "
            "bridge.enable_compatibility_mode(fold_value_biases=False) on a fresh "
            "TransformerBridge (TransformerLens 3.x: HookedTransformer.from_pretrained(..., "
            "fold_value_biases=False))"
        )
