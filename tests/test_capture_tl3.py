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


def test_analyze_on_hooked_transformer() -> None:
    """The whole job, not only capture_attention, runs on a HookedTransformer."""
    import numpy as np

    from tl_geom import analyze, separability

    model = hooked(**CONFIGS["gqa-rotary-rms"])
    tokens = torch.randint(0, 97, (2, 12))
    res = analyze(model, tokens=tokens, n=[2, 4], draws=2, progress=False)
    cap = capture_attention(model, tokens)
    direct = separability(cap.pattern[:, :, :, 0].double(), cap.values, [2, 4]).f1.mean(0)
    got = res.metrics.sort_values(["layer", "head", "n"])["f1"].to_numpy()
    np.testing.assert_allclose(got, direct.flatten().numpy(), rtol=0, atol=1e-12)
    assert count_hooks(model) == 0


def test_folded_value_biases_are_refused_on_hooked_transformer() -> None:
    """from_pretrained folds b_V into b_O by default: b_V = 0 and b_O != 0 is refused."""
    from tl_geom import TlGeomError

    model = hooked(**CONFIGS["mha-learned-ln"])
    with torch.no_grad():
        for block in model.blocks:
            block.attn.b_O.add_(0.25)
    with pytest.raises(TlGeomError, match="fold_value_biases=False"):
        capture_attention(model, torch.randint(0, 97, (1, 6)))
    with torch.no_grad():
        model.blocks[0].attn.b_V.add_(0.1)  # unfolded: b_V != 0
    capture_attention(model, torch.randint(0, 97, (1, 6)))


def test_hook_names_equal_get_act_name_on_tl3() -> None:
    """hook_name gives TransformerLens 3.9's own get_act_name strings for every kind."""
    from transformer_lens.utils import get_act_name

    from tl_geom.lens.hooks import ATTN_KINDS, BLOCK_KINDS, MLP_KINDS, hook_name

    for kind in (*ATTN_KINDS, *BLOCK_KINDS, *MLP_KINDS):
        assert hook_name(3, kind) == get_act_name(kind, 3), kind
