"""Model-level sink measures on tiny TransformerBridge models, against run_with_cache loops."""

import math
from collections.abc import Iterator
from typing import Any

import pytest
import scipy.stats
import torch

from tl_geom import TlGeomError
from tl_geom.lens.hooks import count_hooks
from tl_geom.lens.models import tiny_model
from tl_geom.sinks.claims import claim_first_position_variance
from tl_geom.sinks.measures import (
    dom_ratio_profile,
    effective_rank_profile,
    massive_activation_profile,
    qk_lock_in_profile,
    sink_profile,
)
from tl_geom.sinks.origins import gain_alignment, super_neurons, variance_discrepancy

CONFIGS = {
    "mha-rotary-rms": {},
    "gqa-learned-ln": {"n_kv_heads": 2, "positions": "standard", "norm": "LN", "n_layers": 3},
}


@pytest.fixture(params=list(CONFIGS), ids=list(CONFIGS))
def model(request: pytest.FixtureRequest) -> Iterator[Any]:
    m = tiny_model(**CONFIGS[request.param])
    yield m
    assert count_hooks(m) == 0, "a test left a hook behind"


def cache_of(model: Any, tokens: torch.Tensor) -> Any:
    with torch.no_grad():
        return model.run_with_cache(tokens)[1]


def test_sink_profile_matches_literal_loop(model: Any) -> None:
    tokens = torch.randint(0, 97, (2, 7))
    prof = sink_profile(model, tokens)
    cache = cache_of(model, tokens)
    assert prof.causal and prof.imp.shape == (2, model.cfg.n_layers, 4, 7)
    for layer in range(model.cfg.n_layers):
        a = cache[f"blocks.{layer}.attn.hook_pattern"].double()
        for b in range(2):
            for h in range(4):
                for k in range(7):
                    ref = sum(a[b, h, i, k].item() for i in range(k, 7)) / (7 - k)
                    assert prof.imp[b, layer, h, k].item() == pytest.approx(ref, rel=1e-12)
    imp0 = prof.imp[..., 0]
    rate = (
        sum(
            float(imp0[b, layer, h] > 0.3)
            for b in range(2)
            for layer in range(imp0.shape[1])
            for h in range(4)
        )
        / imp0.numel()
    )
    assert prof.rate() == pytest.approx(rate)
    assert prof.rate_by_layer().shape == (model.cfg.n_layers,)
    df = prof.to_frame()
    assert list(df.columns) == ["layer", "head", "key", "imp"] and len(df) == imp0[0].numel() * 7


def test_sink_profile_layers_subset_and_errors(model: Any) -> None:
    tokens = torch.randint(0, 97, (1, 5))
    prof = sink_profile(model, tokens, layers=[-1])
    full = sink_profile(model, tokens)
    assert prof.layers == (model.cfg.n_layers - 1,)
    assert torch.equal(prof.imp[:, 0], full.imp[:, -1])
    with pytest.raises(TlGeomError, match="out of range"):
        sink_profile(model, tokens, layers=[9])
    with pytest.raises(TlGeomError, match="integer"):
        sink_profile(model, torch.ones(1, 5))


def test_massive_and_dom_ratio_match_cache(model: Any) -> None:
    tokens = torch.randint(0, 97, (2, 6))
    cache = cache_of(model, tokens)
    mass = massive_activation_profile(model, tokens, abs_min=0.0, ratio_min=1.0)
    dom = dom_ratio_profile(model, tokens)
    for layer in range(model.cfg.n_layers):
        h = cache[f"blocks.{layer}.hook_resid_post"].double()
        for b in range(2):
            flat = h[b].abs().flatten()
            best = int(flat.argmax())
            assert mass.values[b, layer, 0].item() == flat.max().item()
            assert (mass.positions[b, layer, 0].item(), mass.dims[b, layer, 0].item()) == divmod(
                best, h.shape[-1]
            )
            for p in range(6):
                row = h[b, p].abs().tolist()
                ref = max(row) / (sum(row) / len(row))
                assert dom.ratio[b, layer, p].item() == pytest.approx(ref, rel=1e-12)
    assert dom.first_token.shape == (model.cfg.n_layers,)
    assert len(mass.to_frame()) == 2 * model.cfg.n_layers * 3
    assert set(dom.to_frame().columns) == {"layer", "position", "dom_ratio"}


def test_variance_discrepancy_matches_loop(model: Any) -> None:
    res = variance_discrepancy(model, length=6, samples=3, seed=1)
    tokens = torch.randint(0, 97, (3, 6), generator=torch.Generator().manual_seed(1))
    cache = cache_of(model, tokens)
    res_s = variance_discrepancy(model, tokens, over="samples")
    for layer in range(model.cfg.n_layers):
        z = cache[f"blocks.{layer}.attn.hook_z"].double()  # [b, p, h, d]
        for p in range(6):
            vals = [z[b, p, h].var(unbiased=False).item() for b in range(3) for h in range(4)]
            assert res.variance[layer, p].item() == pytest.approx(sum(vals) / len(vals))
            per_dim = [z[:, p, h, j].var(unbiased=False).item() for h in range(4) for j in range(8)]
            assert res_s.variance[layer, p].item() == pytest.approx(sum(per_dim) / len(per_dim))
            for b in range(3):  # each sample's share: its mean over samples is the variance
                own = [z[b, p, h].var(unbiased=False).item() for h in range(4)]
                assert res.per_sample[b, layer, p].item() == pytest.approx(sum(own) / 4)
                dev = (z[b, p] - z[:, p].mean(0)).square().mean().item()
                assert res_s.per_sample[b, layer, p].item() == pytest.approx(dev)
    assert res.first_over_rest.shape == (model.cfg.n_layers,)
    unchecked = variance_discrepancy.__wrapped__  # pyright: ignore[reportFunctionMemberAccess]
    with pytest.raises(TlGeomError, match="over"):
        unchecked(model, over="heads")


def test_variance_discrepancy_first_position_highest_in_layer0_uniform_attention() -> None:
    # Zero query weights give uniform causal attention: position 0 averages one value,
    # position i averages i + 1, so the across-sample variance falls like 1 / (i + 1).
    m = tiny_model(n_layers=1, positions="standard", norm="LN")
    with torch.no_grad():
        for name, p in m.named_parameters():
            if ".q." in name:
                p.zero_()
    res = variance_discrepancy(m, length=16, samples=256, over="samples")
    v = res.variance[0]
    assert int(v.argmax()) == 0 and res.first_over_rest[0] > 2
    # the calibrated claim recovers it: position 0 surely largest in the one layer
    f = claim_first_position_variance(res.per_sample.numpy(), res.variance.numpy())
    assert f.verdict == "reproduced" and f.n == 256 and f.interval == (1.0, 1.0)


def test_gain_alignment_matches_scipy(model: Any) -> None:
    tokens = torch.randint(0, 97, (2, 9))
    res = gain_alignment(model, tokens)
    cache = cache_of(model, tokens)
    layer, head = model.cfg.n_layers - 1, 2
    z = cache[f"blocks.{layer}.attn.hook_z"].double()[:, :, head].reshape(-1, 8)
    std = z.std(0, unbiased=False)
    gain = model.W_O[layer, head].detach().double().norm(dim=-1)
    assert torch.allclose(res.input_std[layer, head], std)
    assert torch.allclose(res.gain[layer, head], gain)
    ref = scipy.stats.kendalltau(gain.numpy(), std.numpy())[0]
    assert res.tau[layer, head].item() == pytest.approx(ref, abs=1e-12)
    assert math.isfinite(res.mean_tau) and len(res.to_frame()) == model.cfg.n_layers * 4


def test_super_neurons_sum_to_the_mlp_write(model: Any) -> None:
    tokens = torch.randint(0, 97, (2, 5))
    res = super_neurons(model, tokens, dim=3)
    cache = cache_of(model, tokens)
    for layer in range(model.cfg.n_layers):
        out = cache[f"blocks.{layer}.hook_mlp_out"][:, 0, 3].double().mean()
        assert res.mlp_write[layer].item() == pytest.approx(out.item(), abs=1e-5)
        post = cache[f"blocks.{layer}.mlp.hook_post"][:, 0].double()
        w = model.W_out[layer, :, 3].detach().double()
        n = 7
        ref = sum(post[b, n].item() * w[n].item() for b in range(2)) / 2
        assert res.contributions[layer, n].item() == pytest.approx(ref, rel=1e-10)
        own = post[1, n].item() * w[n].item()  # the second sample's own write
        assert res.sample_contributions[1, layer, n].item() == pytest.approx(own, rel=1e-10)
        assert res.sample_write[:, layer].mean().item() == pytest.approx(out.item(), abs=1e-5)
    top = res.top(3)
    assert len(top) == 3 and top["abs_contribution"].is_monotonic_decreasing
    auto = super_neurons(model, tokens)
    h0 = torch.stack(
        [
            cache[f"blocks.{layer}.hook_resid_post"][:, 0].abs().mean(0)
            for layer in range(model.cfg.n_layers)
        ]
    )
    assert auto.dim == int(h0.amax(0).argmax())
    with pytest.raises(TlGeomError, match="dim="):
        super_neurons(model, tokens, dim=10_000)
    with pytest.raises(TlGeomError, match="position="):
        super_neurons(model, tokens, position=5)


def test_qk_lock_in_on_absolute_positions_matches_scores() -> None:
    m = tiny_model(n_kv_heads=2, positions="standard", norm="LN")
    tokens = torch.randint(0, 97, (2, 6))
    res = qk_lock_in_profile(m, tokens, min_share=0.5)
    cache = cache_of(m, tokens)
    for layer in range(2):
        q = cache[f"blocks.{layer}.attn.hook_q"].double()
        k = torch.repeat_interleave(cache[f"blocks.{layer}.attn.hook_k"].double(), 2, dim=2)
        # these q, k reproduce the pattern: the score sign is the one softmax saw
        s = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(8)
        s = s.masked_fill(torch.triu(torch.ones(6, 6, dtype=torch.bool), 1), -math.inf)
        pat = cache[f"blocks.{layer}.attn.hook_pattern"].double()
        assert torch.allclose(s.softmax(-1), pat, atol=1e-6)
        for h in range(4):
            ref = sum(float(s[b, h, i, 0] > 0) for b in range(2) for i in range(1, 6)) / 10
            assert res.positive_share[layer, h].item() == pytest.approx(ref)
            assert bool(res.locked[layer, h]) == (ref >= 0.5)
    assert 0 <= res.share <= 1 and len(res.to_frame()) == 8
    assert count_hooks(m) == 0


def test_qk_lock_in_native_rotary_is_a_clear_error() -> None:
    m = tiny_model()
    with pytest.raises(TlGeomError, match="post-rotary"):
        qk_lock_in_profile(m, torch.randint(0, 97, (1, 5)))
    assert count_hooks(m) == 0


def test_effective_rank_matches_svd(model: Any) -> None:
    tokens = torch.randint(0, 97, (2, 6))
    res = effective_rank_profile(model, tokens)
    cache = cache_of(model, tokens)
    h = cache["blocks.0.hook_resid_post"].double().reshape(12, -1)
    s = torch.linalg.svdvals(h).tolist()
    p = [v / sum(s) for v in s]
    ref = math.exp(-sum(x * math.log(x) for x in p if x > 0))
    assert res.rank[0].item() == pytest.approx(ref, rel=1e-9)
    assert list(res.to_frame()["layer"]) == list(range(model.cfg.n_layers))
