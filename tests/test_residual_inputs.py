"""``residual_inputs``: hook_resid_pre from either backend, and N_s/N on it."""

from pathlib import Path

import einops
import pytest
import torch
from jaxtyping import TypeCheckError

from tl_geom.errors import TlGeomError
from tl_geom.lens.models import load_model
from tl_geom.lens.residual import residual_inputs
from tl_geom.lens.sdpa import load_fused_model
from tl_geom.normalization.distinguishability import distinguishability
from tl_geom.normalization.tables import distinguishability_vs_n


def test_backends_give_the_stream_entering_each_layer(tiny_dir: Path) -> None:
    """Both backends equal the bridge's own run_with_cache resid_pre, layer by layer."""
    bridge, fused = load_model(str(tiny_dir)), load_fused_model(str(tiny_dir))
    tokens = torch.randint(1000, 2000, (2, 12), generator=torch.Generator().manual_seed(0))
    _, cache = bridge.run_with_cache(tokens)
    want = torch.stack([cache[f"blocks.{i}.hook_resid_pre"] for i in range(2)], dim=1)
    hooks = residual_inputs(bridge, tokens)
    sdpa = residual_inputs(fused, tokens, layers=[0, 1])
    assert hooks.shape == (2, 2, 12, 32)
    torch.testing.assert_close(hooks, want, atol=0, rtol=0)
    torch.testing.assert_close(sdpa, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(residual_inputs(bridge, tokens, layers=1), want[:, 1:])
    with pytest.raises(TlGeomError, match="layer"):
        residual_inputs(bridge, tokens, layers=[5])


def test_shared_stream_equals_the_expanded_one() -> None:
    """A stream shared by the heads ([layer, b, 1, L, d]) gives the expanded tensor's table."""
    gen = torch.Generator().manual_seed(3)
    alpha = torch.softmax(torch.randn(3, 2, 4, 40, generator=gen, dtype=torch.float64), -1)
    alpha[..., 5] = alpha[..., 6]  # a tie in weights
    alpha = alpha / alpha.sum(-1, keepdim=True)
    stream = torch.randn(3, 2, 1, 40, 8, generator=gen, dtype=torch.float64)
    ns = [1, 2, 4, 8]
    shared = distinguishability_vs_n(alpha, stream, ns)
    full = distinguishability_vs_n(alpha, stream.expand(3, 2, 4, 40, 8).contiguous(), ns)
    assert shared.equals(full)
    ref = torch.stack([
        distinguishability(alpha[i, b, h], stream[i, b, 0], ns)
        for i in range(3) for b in range(2) for h in range(4)
    ])  # fmt: skip
    assert torch.allclose(torch.as_tensor(shared["ns_over_n"].to_numpy()), ref.mean(0))
    # jaxtyping (on in the suite) or our own check refuses a head axis that is neither 1 nor H
    with pytest.raises((TlGeomError, TypeCheckError)):
        distinguishability_vs_n(alpha, einops.repeat(stream, "l b 1 k d -> l b 3 k d"), ns)
