"""from_cache equals capture_attention; capture.separability keeps the real ids."""

from typing import Any

import pytest
import torch

from tests._capture_checks import QUERY_OPTIONS
from tl_geom import TlGeomError, capture_attention, from_cache, load_model, separability, tiny_model


@pytest.fixture(scope="module", params=[None, 2], ids=["mha", "gqa"])
def model(request: pytest.FixtureRequest) -> Any:
    return tiny_model(n_layers=3, n_kv_heads=request.param)


def _same(a: Any, b: Any) -> None:
    assert torch.equal(a.pattern, b.pattern)
    assert torch.equal(a.values, b.values)
    assert a.layers == b.layers and a.queries == b.queries and a.causal == b.causal


@pytest.mark.parametrize("queries", QUERY_OPTIONS)
@pytest.mark.parametrize("layers", [None, 1, [2, 0]])
def test_from_cache_equals_capture(model: Any, queries: Any, layers: Any) -> None:
    tokens = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    got = from_cache(cache, layers=layers, queries=queries, tokens=tokens)
    _same(got, capture_attention(model, tokens, layers=layers, queries=queries))
    assert torch.equal(got.tokens, tokens)


def test_from_a_filtered_cache_takes_the_layers_it_holds(model: Any) -> None:
    tokens = torch.randint(0, 97, (1, 7))
    names = ["blocks.1.attn.hook_pattern", "blocks.1.attn.hook_v"]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    got = from_cache(cache)
    assert got.layers == (1,)
    _same(got, capture_attention(model, tokens, layers=1))
    with pytest.raises(TlGeomError, match=r"lacks .* layers \[0\]"):
        from_cache(cache, layers=[0, 1])


def test_an_empty_cache_is_a_clear_error() -> None:
    with pytest.raises(TlGeomError, match="no blocks"):
        from_cache({})


def test_capture_separability_keeps_real_ids_and_equals_the_function(model: Any) -> None:
    tokens = torch.randint(0, 97, (2, 10))
    cap = capture_attention(model, tokens, layers=[2], queries=[-1, 6])
    res = cap.separability([2, 3])
    frame = res.to_frame()
    assert set(frame["layer"]) == {2} and set(frame["query"]) == {9, 6}
    assert list(frame.columns[:5]) == ["batch", "layer", "head", "query", "n"]
    # the final query: the plain function on the plain tensors
    ref = separability(cap.pattern[:, :, :, 0], cap.values, [2, 3])
    assert torch.equal(res.f1[:, :, :, 0], ref.f1)
    assert torch.equal(res.r_min[:, :, :, 0], ref.r_min)
    # query 6 of a causal model: its 7 visible keys only
    ref6 = separability(cap.pattern[:, :, :, 1, :7], cap.values[..., :7, :], [2, 3])
    assert torch.equal(res.precision[:, :, :, 1], ref6.precision)
    assert not res.selected[:, :, :, 1, :, 7:].any()
    f = frame
    row = f[(f["batch"] == 1) & (f["head"] == 3) & (f["query"] == 6) & (f["n"] == 3)]
    assert float(row.f1.iloc[0]) == float(ref6.f1[1, 0, 3, 1])


def test_reprs_are_short(model: Any) -> None:
    cap = capture_attention(model, torch.randint(0, 97, (1, 8)))
    res = cap.separability([2, 4])
    assert len(repr(cap)) < 200 and len(repr(res)) < 200
    assert "layer" in repr(res) and "<table" in res._repr_html_()
    assert "AttentionCapture" in cap._repr_html_()


@pytest.mark.slow
def test_from_cache_equals_capture_on_smollm2() -> None:
    smollm2 = load_model("smollm2-135m")
    tokens = smollm2.to_tokens("The quick brown fox jumps over the lazy dog.")
    names = [f"blocks.{layer}.attn.hook_{k}" for layer in (0, 14) for k in ("pattern", "v")]
    with torch.no_grad():
        _, cache = smollm2.run_with_cache(tokens, names_filter=lambda n: n in names)
    got = from_cache(cache, tokens=tokens)
    assert got.layers == (0, 14) and got.values.shape[2] == 9  # 3 KV heads expanded
    _same(got, capture_attention(smollm2, tokens, layers=[0, 14]))
    assert got.text is not None and len(got.text) == tokens.shape[1]
    assert set(got.separability(2).to_frame()["layer"]) == {0, 14}
