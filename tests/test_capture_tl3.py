"""capture_attention on HookedTransformer (TransformerLens 3.x); run with `make test-tl3`.

Skipped under TransformerLens 4, which removed HookedTransformer.
"""

from typing import Any

import pytest
import torch

from tests._capture_checks import check_against_cache
from tl_geom import capture_attention
from tl_geom.lens.hooks import count_hooks

try:
    import transformer_lens as tl
    from transformer_lens import HookedTransformer  # noqa: F401  (removed in 4.0)
except ImportError:
    pytest.skip(
        "HookedTransformer needs TransformerLens 3.x (make test-tl3)", allow_module_level=True
    )

pytestmark = pytest.mark.tl3

CONFIGS = {
    "mha-rotary-rms": {"positional_embedding_type": "rotary", "normalization_type": "RMS"},
    "gqa-rotary-rms": {
        "positional_embedding_type": "rotary",
        "normalization_type": "RMS",
        "n_key_value_heads": 2,
    },
    "mha-learned-ln": {"positional_embedding_type": "standard", "normalization_type": "LN"},
    "gqa-learned-ln": {
        "positional_embedding_type": "standard",
        "normalization_type": "LN",
        "n_key_value_heads": 1,
    },
}


def hooked(**overrides: Any) -> Any:
    cfg = tl.HookedTransformerConfig(
        n_layers=2,
        d_model=32,
        d_head=8,
        n_heads=4,
        n_ctx=64,
        d_vocab=97,
        d_mlp=64,
        act_fn="gelu",
        seed=0,
        **overrides,
    )
    return tl.HookedTransformer(cfg).eval()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_capture_equals_run_with_cache(name: str) -> None:
    model = hooked(**CONFIGS[name])
    check_against_cache(model, torch.randint(0, 97, (2, 11)))
    assert count_hooks(model) == 0


def test_hooks_removed_after_exception() -> None:
    model = hooked(**CONFIGS["gqa-rotary-rms"])

    def boom(act: torch.Tensor, hook: Any) -> None:
        raise RuntimeError("forced")

    model.add_hook("blocks.1.attn.hook_pattern", boom)
    with pytest.raises(RuntimeError, match="forced"):
        capture_attention(model, torch.randint(0, 97, (1, 6)))
    assert count_hooks(model) == 1  # only the user's own hook is left
    model.reset_hooks()
    assert count_hooks(model) == 0
