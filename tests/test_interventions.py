"""Interventions on tiny models (MHA and GQA): exact edits, exact restore, composition, errors."""

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from tl_geom import TlGeomError
from tl_geom.lens.hooks import count_hooks, hook_name
from tl_geom.lens.interventions import (
    ablate_heads,
    amplify_variance,
    mask_sink,
    move_sink,
    self_only_mask,
)
from tl_geom.sinks.measures import sink_profile
from tl_geom.sinks.shift import plot_sink_shift, sink_shift

CONFIGS = {
    "mha-rotary-rms": {"n_layers": 3},
    "gqa-learned-ln": {"n_kv_heads": 2, "positions": "standard", "norm": "LN", "n_layers": 3},
}
T = 12


@pytest.fixture(params=list(CONFIGS), ids=list(CONFIGS))
def model(request: pytest.FixtureRequest) -> Iterator[Any]:
    m = tiny_model_for(request.param)
    yield m
    assert count_hooks(m) == 0, "a test left a hook behind"


def tiny_model_for(name: str) -> Any:
    from tl_geom.lens.models import tiny_model

    return tiny_model(**CONFIGS[name])


def run_cache(model: Any, tokens: torch.Tensor, names: list[str]) -> tuple[torch.Tensor, Any]:
    with torch.no_grad():
        return model.run_with_cache(tokens, names_filter=lambda n: n in names)


def tokens_for() -> torch.Tensor:
    return torch.randint(0, 97, (2, T), generator=torch.Generator().manual_seed(3))


def test_self_only_row_is_exactly_one_hot_and_only_that_row_changes(model: Any) -> None:
    tokens = tokens_for()
    names = [hook_name(layer, "pattern") for layer in range(3)]
    _, before = run_cache(model, tokens, names)
    with self_only_mask(model, position=5, layers=[1]):
        _, after = run_cache(model, tokens, names)
    one_hot = torch.zeros(T)
    one_hot[5] = 1
    edited = after[names[1]]
    assert torch.equal(edited[:, :, 5], one_hot.expand_as(edited[:, :, 5]))
    # layer 0 runs before the edit: identical; in layer 1 every other row is unchanged
    assert torch.equal(after[names[0]], before[names[0]])
    keep = [i for i in range(T) if i != 5]
    assert torch.equal(edited[:, :, keep], before[names[1]][:, :, keep])


def test_amplify_changes_exactly_the_targeted_position(model: Any) -> None:
    tokens = tokens_for()
    z1 = hook_name(1, "z")
    _, before = run_cache(model, tokens, [z1])
    seen: dict[str, torch.Tensor] = {}

    def grab(z: torch.Tensor, hook: Any) -> None:  # runs after the edit (entered later)
        seen["z"] = z.detach().clone()

    for control in (False, True):
        with amplify_variance(model, position=4, lam=3.0, layers=1, control=control):
            with model.hooks(fwd_hooks=[(z1, grab)]), torch.no_grad():
                model(tokens)
        z, o = seen["z"], before[z1][:, 4]
        keep = [i for i in range(T) if i != 4]
        assert torch.equal(z[:, keep], before[z1][:, keep])
        mu = o.mean(-1, keepdim=True)
        expect = 3.0 * o if control else mu + 3.0 * (o - mu)
        assert torch.allclose(z[:, 4], expect, atol=1e-6)
        if not control:  # the mean over d_head is kept, the variance scales by lam^2
            assert torch.allclose(z[:, 4].mean(-1), o.mean(-1), atol=1e-6)
            ratio = z[:, 4].var(-1, unbiased=False) / o.var(-1, unbiased=False)
            assert torch.allclose(ratio, torch.full_like(ratio, 9.0), rtol=1e-4)


def test_amplify_in_last_layer_changes_only_logits_at_k(model: Any) -> None:
    tokens = tokens_for()
    with torch.no_grad():
        base = model(tokens)
        with amplify_variance(model, position=7, lam=5.0, layers=[-1]):
            out = model(tokens)
    changed = (out != base).any(-1)  # [batch, pos]
    assert changed[:, 7].all() and not changed[:, [i for i in range(T) if i != 7]].any()


def test_control_scales_the_whole_output_so_mean_over_dims_scales(model: Any) -> None:
    # Under the control the output at k is lam * o: layer 0's imp(k) is unchanged (the
    # pattern of the edited layer is computed before hook_z), as the math says.
    tokens = tokens_for()
    before = sink_profile(model, tokens)
    with amplify_variance(model, position=3, lam=4.0, layers=[0], control=True):
        after = sink_profile(model, tokens)
    assert torch.equal(after.imp[:, 0], before.imp[:, 0])
    assert not torch.equal(after.imp[:, 1:], before.imp[:, 1:])


def test_lam_one_control_is_the_identity(model: Any) -> None:
    tokens = tokens_for()
    with torch.no_grad():
        base = model(tokens)
        with amplify_variance(model, position=2, lam=1.0, control=True):
            assert torch.equal(model(tokens), base)


def test_logits_identical_after_exit_and_after_exceptions(model: Any) -> None:
    tokens = tokens_for()
    with torch.no_grad():
        base = model(tokens)
    n0 = count_hooks(model)
    ivs = [
        self_only_mask(model, position=5),
        amplify_variance(model, position=5, lam=4.0),
        amplify_variance(model, position=5, lam=4.0, control=True),
        mask_sink(model),
        move_sink(model, to=5),
        ablate_heads(model, [(0, 1), (2, 3)]),
        ablate_heads(model, [(1, 0)], mode="mean"),
    ]
    for iv in ivs:
        with torch.no_grad(), iv:
            assert count_hooks(model) == n0 + len(iv.fwd_hooks)
            assert not torch.equal(model(tokens), base), repr(iv)
        assert count_hooks(model) == n0
        with pytest.raises(RuntimeError, match="boom"), iv:
            raise RuntimeError("boom")
        assert count_hooks(model) == n0
    # an error raised by the hook itself, inside the forward
    with pytest.raises(TlGeomError, match="out of range for a sequence"):
        with self_only_mask(model, position=20):
            model(tokens)
    assert count_hooks(model) == n0
    with torch.no_grad():
        assert torch.equal(model(tokens), base)


def test_interventions_compose_in_entry_order(model: Any) -> None:
    tokens = tokens_for()
    a = self_only_mask(model, position=6)
    b = amplify_variance(model, position=6, lam=4.0)
    with torch.no_grad():
        with a, b:
            both = model(tokens)
            assert count_hooks(model) == 6
        with torch.no_grad():
            ref = model.run_with_hooks(tokens, fwd_hooks=a.fwd_hooks + b.fwd_hooks)
    assert torch.equal(both, ref)
    assert count_hooks(model) == 0


def test_user_hooks_survive(model: Any) -> None:
    calls: list[int] = []
    model.add_hook(hook_name(0, "pattern"), lambda act, hook: calls.append(1))
    try:
        with self_only_mask(model, position=1), torch.no_grad():
            model(tokens_for())
        assert count_hooks(model) == 1 and calls == [1]
    finally:
        model.reset_hooks()


def test_mask_and_move_sink_rows(model: Any) -> None:
    tokens = tokens_for()
    name = hook_name(2, "pattern")
    _, before = run_cache(model, tokens, [name])
    a = before[name]
    with mask_sink(model, layers=2):
        _, got = run_cache(model, tokens, [name])
    m = got[name]
    assert torch.equal(m[:, :, 0], a[:, :, 0])  # row 0 sees only the sink: unchanged
    assert (m[:, :, 1:, 0] == 0).all()
    assert torch.allclose(m.sum(-1), torch.ones_like(m.sum(-1)), atol=1e-6)
    ref = a[:, :, 1:, 1:] / a[:, :, 1:, 1:].sum(-1, keepdim=True)
    assert torch.allclose(m[:, :, 1:, 1:], ref, atol=1e-6)
    with move_sink(model, to=4, layers=2):
        _, got = run_cache(model, tokens, [name])
    mv = got[name]
    assert torch.equal(mv[:, :, :4], a[:, :, :4])
    assert (mv[:, :, 4:, 0] == 0).all()
    assert torch.allclose(mv[:, :, 4:, 4], a[:, :, 4:, 4] + a[:, :, 4:, 0])
    assert torch.allclose(mv.sum(-1), a.sum(-1), atol=1e-6)


def test_ablation_zero_and_mean(model: Any) -> None:
    tokens = tokens_for()
    seen: dict[str, torch.Tensor] = {}

    def grab(z: torch.Tensor, hook: Any) -> None:
        seen["z"] = z.detach().clone()

    z1 = hook_name(1, "z")
    _, before = run_cache(model, tokens, [z1])
    for mode in ("zero", "mean"):
        with ablate_heads(model, [(1, 2)], mode=mode), model.hooks(fwd_hooks=[(z1, grab)]):
            with torch.no_grad():
                model(tokens)
        z = seen["z"]
        keep = [0, 1, 3]
        assert torch.equal(z[:, :, keep], before[z1][:, :, keep])
        expect = (
            torch.zeros_like(z[:, :, 2])
            if mode == "zero"
            else before[z1][:, :, 2].mean((0, 1)).expand_as(z[:, :, 2])
        )
        assert torch.allclose(z[:, :, 2], expect, atol=1e-6)


def test_repr_and_fwd_hooks(model: Any) -> None:
    assert repr(self_only_mask(model, position=10)) == "SelfOnlyMask(position=10, layers=all)"
    assert (
        repr(amplify_variance(model, position=10, lam=4.0, layers=[0, 2], control=True))
        == "AmplifyVariance(position=10, lam=4, control=True, layers=[0, 2])"
    )
    assert repr(ablate_heads(model, [(1, 0)])) == "HeadAblation(heads=[(1, 0)], mode='zero')"
    iv = self_only_mask(model, position=3, layers=1)
    assert [n for n, _ in iv.fwd_hooks] == ["blocks.1.attn.hook_pattern"]


def unchecked(fn: Any) -> Any:
    """The function without the test suite's beartype wrapper (users call it bare)."""
    return getattr(fn, "__wrapped__", fn)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda m: self_only_mask(m, position=-1), "non-negative"),
        (lambda m: self_only_mask(m, position=64), "out of range"),
        (lambda m: self_only_mask(m, position=True), "non-negative"),
        (lambda m: self_only_mask(m, position=1, layers=[3]), "out of range"),
        (lambda m: amplify_variance(m, position=1, lam=0.0), "lam"),
        (lambda m: amplify_variance(m, position=1, lam=-2.0), "lam"),
        (lambda m: amplify_variance(m, position=1, lam=float("nan")), "lam"),
        (lambda m: amplify_variance(m, position=1, lam=2.0, layers=[-4]), "out of range"),
        (lambda m: move_sink(m, to=0), "no-op"),
        (lambda m: ablate_heads(m, [(0, 4)]), "head 4"),
        (lambda m: ablate_heads(m, []), "empty"),
        (lambda m: unchecked(ablate_heads)(m, [(0, 1)], mode="random"), "mode"),
        (lambda m: unchecked(amplify_variance)(m, position=1, lam="2"), "lam"),
    ],
)
def test_bad_input_is_a_clear_error(model: Any, make: Any, match: str) -> None:
    with pytest.raises(TlGeomError, match=match):
        make(model)
    assert count_hooks(model) == 0


def test_sink_shift_frame_and_plot(model: Any, tmp_path: Any) -> None:
    tokens = tokens_for()
    df = sink_shift(model, tokens, position=5, lams=[1.0, 4.0], layers=[0])
    assert set(df["arm"]) == {"amplify", "control"} and len(df) == 2 * 2 * 3
    base = sink_profile(model, tokens).imp.mean((0, 2))
    assert torch.allclose(torch.tensor(df["imp_k_before"].to_numpy()[:3]), base[:, 5], atol=1e-12)
    ctl1 = df[(df["arm"] == "control") & (df["lam"] == 1.0)]
    assert (ctl1["imp_k_after"] == ctl1["imp_k_before"]).all()  # lam o with lam = 1 is exact
    assert list(df[df["lam"] == 4.0]["edited"])[:3] == [True, False, False]
    with pytest.raises(TlGeomError, match="position=12"):
        sink_shift(model, tokens, position=12, lams=[2.0])
    with pytest.raises(TlGeomError, match="lams"):
        sink_shift(model, tokens, position=5, lams=[])
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    fig = plot_sink_shift(df)
    fig.savefig(tmp_path / "shift.png")
    assert (tmp_path / "shift.png").stat().st_size > 1000
