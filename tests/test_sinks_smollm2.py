"""Sink measures and the sink-shift interventions on SmolLM2-135M (slow: loads the model).

The mechanics are asserted (exact edits, exact restore); the effect sizes are printed
(run with ``-s``) and reported in docs/sinks.md, whatever they are.
"""

from typing import Any

import pytest
import torch

from tl_geom import load_model
from tl_geom.lens.data import load_corpus, token_windows
from tl_geom.lens.hooks import count_hooks
from tl_geom.lens.interventions import amplify_variance, self_only_mask
from tl_geom.sinks.measures import massive_activation_profile, qk_lock_in_profile, sink_profile
from tl_geom.sinks.origins import super_neurons
from tl_geom.sinks.shift import sink_shift

K = 10


@pytest.fixture(scope="module")
def smollm2() -> Any:
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def tokens(smollm2: Any) -> torch.Tensor:
    return token_windows(smollm2.tokenizer, load_corpus("war_and_peace"), ctx=64, windows=2)


def fmt(xs: Any) -> str:
    return " ".join(f"{x:.3f}" for x in xs)


@pytest.mark.slow
def test_sink_shift_on_smollm2(smollm2: Any, tokens: torch.Tensor) -> None:
    with torch.no_grad():
        base_logits = smollm2(tokens)
    base = sink_profile(smollm2, tokens)
    imp = base.imp.mean((0, 2))
    print(f"\nSmolLM2 sink rate (eps 0.3): {base.rate():.3f}")
    print(f"imp(0) by layer: {fmt(imp[:, 0])}")
    print(f"imp({K}) by layer: {fmt(imp[:, K])}")
    # the real model has a sink at 0 and none at K
    assert imp[:, 0].mean() > 10 * imp[:, K].mean()

    with self_only_mask(smollm2, position=K):
        so = sink_profile(smollm2, tokens).imp.mean((0, 2))
    print(f"self-only mask at {K}, imp({K}): {fmt(so[:, K])}")
    print(f"  mean over layers {imp[:, K].mean():.4f} -> {so[:, K].mean():.4f}")
    assert so[:, K].mean() > imp[:, K].mean()

    df = sink_shift(smollm2, tokens, position=K, lams=[1.0, 64.0])
    table = df.groupby(["arm", "lam"])[["imp_k_after", "imp_0_after"]].mean()
    print(f"sink_shift (all layers edited), mean over layers:\n{table}")
    ctl1 = df[(df["arm"] == "control") & (df["lam"] == 1.0)]
    assert (ctl1["imp_k_after"] == ctl1["imp_k_before"]).all()  # lam o with lam = 1: exact
    amp1 = df[(df["arm"] == "amplify") & (df["lam"] == 1.0)]
    assert (amp1["imp_k_after"] - amp1["imp_k_before"]).abs().max() < 1e-5  # up to rounding

    assert count_hooks(smollm2) == 0
    with torch.no_grad():
        assert torch.equal(smollm2(tokens), base_logits)
        with amplify_variance(smollm2, position=K, lam=4.0):
            assert not torch.equal(smollm2(tokens), base_logits)
        assert torch.equal(smollm2(tokens), base_logits)


@pytest.mark.slow
def test_sink_origins_on_smollm2(smollm2: Any, tokens: torch.Tensor) -> None:
    mass = massive_activation_profile(smollm2, tokens)
    top = mass.values[:, :, 0].mean(0)
    where = {
        (int(p), int(d))
        for p, d in zip(
            mass.positions[:, -5:, 0].flatten(), mass.dims[:, -5:, 0].flatten(), strict=True
        )
    }
    print(f"\nmassive |h| top-1 by layer: {' '.join(f'{x:.0f}' for x in top)} at {where}")
    sn = super_neurons(smollm2, tokens)
    print(f"super neurons for dim {sn.dim}:\n{sn.top(3)}")
    # attribution is exact: the contributions add up to the MLP's write
    assert torch.allclose(sn.contributions.sum(-1), sn.mlp_write)
    lock = qk_lock_in_profile(smollm2, tokens)
    print(f"QK lock-in share: {lock.share:.3f}")
    assert 0 <= lock.share <= 1
