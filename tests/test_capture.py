"""capture_attention and the hook utilities on tiny TransformerBridge models (TL 4)."""

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from jaxtyping import TypeCheckError

import tl_geom.lens.capture as capture_mod
from tests._capture_checks import check_against_cache
from tl_geom import TlGeomError, capture_attention
from tl_geom.lens.capture import normalize_queries
from tl_geom.lens.hooks import as_tokens, count_hooks, expand_kv, hook_name, stream_layers
from tl_geom.lens.models import tiny_model

CONFIGS = {
    "mha-rotary-rms": {},
    "gqa-rotary-rms": {"n_kv_heads": 2},
    "mha-learned-ln": {"positions": "standard", "norm": "LN"},
    "gqa-learned-ln": {"n_kv_heads": 1, "positions": "standard", "norm": "LN", "n_layers": 3},
}


@pytest.fixture(params=list(CONFIGS), ids=list(CONFIGS))
def model(request: pytest.FixtureRequest) -> Iterator[Any]:
    m = tiny_model(**CONFIGS[request.param])
    yield m
    assert count_hooks(m) == 0, "a test left a hook behind"


def test_capture_equals_run_with_cache(model: Any) -> None:
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 11))
    check_against_cache(model, tokens)


def test_gqa_values_expand_per_query_head() -> None:
    m = tiny_model(n_heads=6, n_kv_heads=2)
    cap = capture_attention(m, torch.randint(0, 97, (1, 7)))
    # query heads 0-2 share KV head 0, heads 3-5 KV head 1
    for h in range(6):
        assert torch.equal(cap.values[:, :, h], cap.values[:, :, 3 * (h // 3)])
    assert not torch.equal(cap.values[:, :, 0], cap.values[:, :, 3])


def test_expand_kv_matches_repeat_interleave() -> None:
    v = torch.randn(2, 5, 3, 4)
    assert torch.equal(expand_kv(v, 9), torch.repeat_interleave(v, 3, dim=2))
    assert expand_kv(v, 3) is v
    with pytest.raises(TlGeomError, match="evenly"):
        expand_kv(v, 4)


def test_hooks_removed_after_exception_inside_hook(model: Any, monkeypatch: Any) -> None:
    before = count_hooks(model)

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("forced failure inside the hook")

    monkeypatch.setattr(capture_mod, "expand_kv", boom)
    with pytest.raises(RuntimeError, match="forced failure"):
        capture_attention(model, torch.randint(0, model.cfg.d_vocab, (1, 6)))
    assert count_hooks(model) == before

    def fail(layer: int, acts: dict[str, torch.Tensor]) -> None:
        raise RuntimeError("stream failure")

    with pytest.raises(RuntimeError, match="stream failure"):
        with stream_layers(model, ["pattern"], [0], fail):
            model(torch.randint(0, model.cfg.d_vocab, (1, 6)))
    assert count_hooks(model) == before


def test_user_hooks_survive_capture(model: Any) -> None:
    seen: list[int] = []
    model.add_hook(hook_name(0, "pattern"), lambda act, hook: seen.append(1))
    try:
        assert count_hooks(model) == 1
        capture_attention(model, torch.randint(0, model.cfg.d_vocab, (1, 6)))
        assert count_hooks(model) == 1
        assert seen == [1]
    finally:
        model.reset_hooks()


def test_stream_layers_sees_each_layer_once_in_order(model: Any) -> None:
    calls: list[tuple[int, tuple[str, ...]]] = []
    with stream_layers(
        model,
        ["v", "pattern"],
        range(model.cfg.n_layers),
        lambda layer, acts: calls.append((layer, tuple(sorted(acts)))),
    ):
        model(torch.randint(0, model.cfg.d_vocab, (1, 5)))
    assert calls == [(layer, ("pattern", "v")) for layer in range(model.cfg.n_layers)]


def test_string_input_needs_a_tokenizer(model: Any) -> None:
    with pytest.raises(TlGeomError, match="no tokenizer"):
        capture_attention(model, "hello")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tokens": torch.rand(1, 5)}, "integer ids"),
        ({"tokens": torch.zeros(1, 2, 5, dtype=torch.long)}, r"\[batch, pos\]"),
        ({"tokens": torch.zeros(1, 0, dtype=torch.long)}, r"\[batch, pos\]"),
        ({"tokens": torch.full((1, 5), 97)}, "token ids must lie in 0..96"),
        ({"tokens": torch.zeros(1, 65, dtype=torch.long)}, "n_ctx=64"),
        ({"layers": 2}, "layer 2 out of range 0..1"),
        ({"layers": [0, -3]}, "layer -3 out of range"),
        ({"layers": []}, "layers is empty"),
        ({"queries": 5}, "query position 5 out of range for 5 tokens"),
        ({"queries": [0, -6]}, "query position -6"),
        ({"queries": slice(7, None)}, "selects no position"),
    ],
)
def test_bad_input(kwargs: dict[str, Any], message: str) -> None:
    m = tiny_model()
    args = {"tokens": torch.zeros(1, 5, dtype=torch.long), **kwargs}
    with pytest.raises(TlGeomError, match=message):
        capture_attention(m, args.pop("tokens"), **args)
    assert count_hooks(m) == 0


def test_wrong_types_are_rejected() -> None:
    # Under the test suite's jaxtyping + beartype instrumentation the annotation rejects
    # these at the call; without it (users' code) our own checks name the problem.
    m = tiny_model()
    calls = [
        lambda: capture_attention(m, [1, 2, 3]),  # type: ignore[arg-type]
        lambda: capture_attention(m, torch.zeros(1, 5, dtype=torch.long), queries=1.5),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises((TlGeomError, TypeCheckError)):
            call()
    assert "torch.Tensor or str" in _message(lambda: as_tokens(m, [1, 2, 3]))
    assert "queries must be ints" in _message(lambda: _unwrapped(normalize_queries)(1.5, 5))
    assert count_hooks(m) == 0


def _unwrapped(fn: Any) -> Any:
    return getattr(fn, "__wrapped__", fn)


def _message(call: Any) -> str:
    with pytest.raises(TlGeomError) as info:
        call()
    return str(info.value)


def test_model_without_attention_hooks() -> None:
    with pytest.raises(TlGeomError, match="not a TransformerLens model"):
        capture_attention(torch.nn.Linear(3, 3), torch.zeros(1, 3, dtype=torch.long))

    class NoHooks(torch.nn.Module):
        cfg = tiny_model().cfg
        hook_dict: dict[str, Any] = {}  # noqa: RUF012

        def hooks(self, fwd_hooks: Any) -> Any:
            raise AssertionError("must not be reached")

    with pytest.raises(TlGeomError, match=r"lacks the hook point 'blocks\.0\.attn\.hook_v'"):
        capture_attention(NoHooks(), torch.zeros(1, 3, dtype=torch.long))
