"""Folded value biases are refused on a model tl_geom did not load (lens/value_bias.py)."""

from typing import Any

import pytest
import torch

from tl_geom import TlGeomError, analyze, capture_attention, load_model, tiny_model
from tl_geom.lens.value_bias import value_biases_folded


def _default_bridge(name: str) -> Any:
    """A bridge loaded the way TransformerLens's docs do: compatibility mode, defaults."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from tl_geom.lens.models import resolve_model

    path = resolve_model(name)
    hf = AutoModelForMaskedLM.from_pretrained(path, attn_implementation="eager")
    tok = AutoTokenizer.from_pretrained(path)
    bridge = TransformerBridge.boot_transformers(str(path), hf_model=hf, tokenizer=tok)
    bridge.enable_compatibility_mode()  # folds b_V into b_O by default
    return bridge.eval()


@pytest.mark.slow
def test_default_minilm_bridge_is_refused_and_ours_is_not() -> None:
    folded = _default_bridge("minilm-l6")
    ours = load_model("minilm-l6")
    tokens = ours.to_tokens("The cat sat on the mat.")
    assert value_biases_folded(folded) and not value_biases_folded(ours)
    with pytest.raises(TlGeomError, match="fold_value_biases=False"):
        capture_attention(folded, tokens)
    with pytest.raises(TlGeomError, match=r"tl_geom\.load_model"):
        analyze(folded, text="The cat sat on the mat. " * 20, windows=1, ctx=16, progress=False)
    cap = capture_attention(ours, tokens)
    assert cap.values.abs().sum() > 0
    # the harm it prevents: the folded hook_v is ours shifted by -b_V
    name = "blocks.3.attn.hook_v"
    _, c_ours = ours.run_with_cache(tokens, names_filter=name)
    _, c_fold = folded.run_with_cache(tokens, names_filter=name)
    b_v = ours.blocks[3].attn.b_V.detach()
    assert (c_ours[name] - c_fold[name]).sub(b_v).abs().max() < 1e-4
    assert (c_ours[name] - c_fold[name]).abs().max() > 1e-2


def test_zero_biases_everywhere_are_not_folded() -> None:
    model = tiny_model()
    assert not value_biases_folded(model)
    capture_attention(model, torch.randint(0, 97, (1, 6)))


def test_zero_b_v_with_nonzero_b_o_is_folded() -> None:
    model = tiny_model()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.b_O.add_(0.5)
    assert value_biases_folded(model)
    with pytest.raises(TlGeomError, match="folded"):
        capture_attention(model, torch.randint(0, 97, (1, 6)))


def test_one_nonzero_b_v_is_not_folded() -> None:
    model = tiny_model()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.b_O.add_(0.5)
        model.blocks[1].attn.b_V.add_(0.1)
    assert not value_biases_folded(model)


def test_a_model_without_blocks_is_not_checked() -> None:
    assert not value_biases_folded(object())
