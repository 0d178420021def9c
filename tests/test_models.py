"""The shipped offline models and the model resolver (slow: loads SmolLM2 and MiniLM)."""

from typing import Any

import pytest
import torch

from tl_geom import TlGeomError, capture_attention, load_model
from tl_geom.lens.data import load_corpus, token_windows
from tl_geom.lens.hooks import count_hooks


@pytest.fixture(scope="module")
def smollm2() -> Any:
    return load_model("smollm2-135m")


@pytest.mark.slow
def test_smollm2_final_query_has_a_sink(smollm2: Any) -> None:
    tokens = token_windows(smollm2.tokenizer, load_corpus(), ctx=300, windows=2)
    cap = capture_attention(smollm2, tokens)
    assert cap.pattern.shape == (2, 30, 9, 1, 300)
    assert cap.values.shape == (2, 30, 9, 300, 64)
    torch.testing.assert_close(cap.pattern.sum(-1), torch.ones(2, 30, 9, 1), atol=1e-5, rtol=0)
    # GQA: 9 query heads share 3 KV heads in groups of 3.
    assert torch.equal(cap.values[:, :, 1], cap.values[:, :, 0])
    assert not torch.equal(cap.values[:, :, 3], cap.values[:, :, 0])
    # The sink: the final query puts far more than the uniform 1/L on position 0.
    sink = cap.pattern[..., 0, 0]
    uniform = 1 / 300
    assert float(sink.mean()) > 50 * uniform
    assert float((sink > 10 * uniform).float().mean()) > 0.5
    assert count_hooks(smollm2) == 0


@pytest.mark.slow
def test_smollm2_all_queries_are_causal(smollm2: Any) -> None:
    tokens = token_windows(smollm2.tokenizer, load_corpus("poe"), ctx=40, windows=1)
    cap = capture_attention(smollm2, tokens, layers=[0, 15, 29], queries=None)
    assert cap.pattern.shape == (1, 3, 9, 40, 40)
    future = torch.triu(torch.ones(40, 40, dtype=torch.bool), diagonal=1)
    assert float(cap.pattern[..., future].abs().max()) == 0.0
    torch.testing.assert_close(cap.pattern.sum(-1), torch.ones(1, 3, 9, 40), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_smollm2_matches_the_plain_hf_model(smollm2: Any) -> None:
    from transformers import AutoModelForCausalLM

    from tl_geom.lens.models import smollm2_dir

    hf = AutoModelForCausalLM.from_pretrained(
        smollm2_dir(), dtype=torch.float32, attn_implementation="eager"
    )
    tokens = token_windows(smollm2.tokenizer, load_corpus(), ctx=64, windows=1)
    with torch.no_grad():
        ours = smollm2(tokens)
        ref = hf(tokens).logits
    # Compatibility mode centres the unembedding: logits move by a constant per
    # position, so compare log-probabilities.
    torch.testing.assert_close(ours.log_softmax(-1), ref.log_softmax(-1), atol=1e-3, rtol=1e-4)


@pytest.mark.slow
def test_minilm_encoder_sees_both_directions() -> None:
    model = load_model("minilm-l6")
    tokens = token_windows(model.tokenizer, load_corpus(), ctx=32, windows=1)
    assert int(tokens[0, 0]) == model.tokenizer.cls_token_id
    cap = capture_attention(model, tokens, queries=None)
    assert cap.pattern.shape == (1, 6, 12, 32, 32)
    torch.testing.assert_close(cap.pattern.sum(-1), torch.ones(1, 6, 12, 32), atol=1e-5, rtol=0)
    future = torch.triu(torch.ones(32, 32, dtype=torch.bool), diagonal=1)
    assert float(cap.pattern[..., future].min()) > 0  # no causal mask


def test_unknown_model_is_a_clear_offline_error() -> None:
    with pytest.raises(TlGeomError, match="not available offline"):
        load_model("nobody-here/not-a-model-xyz")
    with pytest.raises(TlGeomError, match="does not exist"):
        load_model("./no/such/dir")


def test_local_dir_without_config(tmp_path: Any) -> None:
    with pytest.raises(TlGeomError, match=r"without config\.json"):
        load_model(str(tmp_path))
