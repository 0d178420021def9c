"""Interventions on tiny models (MHA and GQA): exact edits, exact restore, composition, errors."""

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tl_geom import TlGeomError
from tl_geom.lens.hooks import count_hooks, hook_name
from tl_geom.lens.interventions import (
    ablate_heads,
    amplified,
    amplify_variance,
    mask_sink,
    move_sink,
    self_only_mask,
)
from tl_geom.sinks.measures import sink_profile
from tl_geom.sinks.shift import plot_sink_shift, shift_summary, sink_shift

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
        seen["control" if control else "amplify"] = z[:, 4]
    treat, ctl, o = seen["amplify"].double(), seen["control"].double(), before[z1][:, 4].double()
    var = o.var(-1, unbiased=False)
    # treatment: mean kept, variance x lam^2; control: variance kept, same norm as treatment
    assert torch.allclose(treat.mean(-1), o.mean(-1), atol=1e-6)
    assert torch.allclose(treat.var(-1, unbiased=False) / var, torch.full_like(var, 9.0), rtol=1e-4)
    assert torch.allclose(ctl.var(-1, unbiased=False) / var, torch.ones_like(var), rtol=1e-4)
    assert torch.allclose(ctl.norm(dim=-1), treat.norm(dim=-1), rtol=1e-5)
    shift = ctl - o  # a constant c per head: o' = o + c 1
    assert torch.allclose(shift, shift[..., :1].expand_as(shift), atol=1e-5)


def test_amplify_in_last_layer_changes_only_logits_at_k(model: Any) -> None:
    tokens = tokens_for()
    with torch.no_grad():
        base = model(tokens)
        with amplify_variance(model, position=7, lam=5.0, layers=[-1]):
            out = model(tokens)
    changed = (out != base).any(-1)  # [batch, pos]
    assert changed[:, 7].all() and not changed[:, [i for i in range(T) if i != 7]].any()


def test_control_edits_downstream_layers_only(model: Any) -> None:
    # Under the control the output at k is o + c 1: layer 0's imp(k) is unchanged (the
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


def _slow_amplified(o: list[float], lam: float, control: bool) -> list[float]:
    d = len(o)
    mu = sum(o) / d
    if not control:
        return [mu + lam * (x - mu) for x in o]
    target = sum((mu + lam * (x - mu)) ** 2 for x in o)  # the treatment's squared norm
    lo, hi = (0.0, 1e6) if mu >= 0 else (-1e6, 0.0)  # bisect the new mean on mu's side
    for _ in range(200):
        mid = (lo + hi) / 2
        norm2 = sum((x - mu + mid) ** 2 for x in o)
        lo, hi = ((mid, hi) if norm2 < target else (lo, mid)) if mu >= 0 else (
            (lo, mid) if norm2 < target else (mid, hi))  # fmt: skip
    return [x - mu + (lo + hi) / 2 for x in o]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-50, 50), min_size=2, max_size=8),
    st.floats(1.0, 20.0),
    st.booleans(),
)
def test_amplified_matches_slow_reference_and_properties(
    o: list[float], lam: float, control: bool
) -> None:
    x = torch.tensor(o, dtype=torch.float64)
    got = amplified(x, lam, control=control)
    want = torch.tensor(_slow_amplified(o, lam, control), dtype=torch.float64)
    assert torch.allclose(got, want, atol=1e-6 * (1 + float(x.abs().max()) * lam))
    var = x.var(unbiased=False)
    ratio = 1.0 if control else lam**2
    assert torch.allclose(got.var(unbiased=False), var * ratio, rtol=1e-9, atol=1e-9)
    treat = amplified(x, lam)
    assert torch.allclose(got.norm(), treat.norm(), rtol=1e-9, atol=1e-9)


def test_resid_site_edits_the_residual_stream(model: Any) -> None:
    tokens = tokens_for()
    r0 = hook_name(0, "resid_post")
    _, before = run_cache(model, tokens, [r0])
    seen: dict[str, torch.Tensor] = {}

    def grab(x: torch.Tensor, hook: Any) -> None:
        seen["x"] = x.detach().clone()

    for control in (False, True):
        iv = amplify_variance(model, position=4, lam=2.0, layers=0, control=control, site="resid")
        assert [n for n, _ in iv.fwd_hooks] == [r0]
        with iv, model.hooks(fwd_hooks=[(r0, grab)]), torch.no_grad():
            model(tokens)
        o, got = before[r0][:, 4].double(), seen["x"][:, 4].double()
        ratio = got.var(-1, unbiased=False) / o.var(-1, unbiased=False)
        assert torch.allclose(ratio, torch.full_like(ratio, 1.0 if control else 4.0), rtol=1e-4)
    with pytest.raises(TlGeomError, match="site"):
        unchecked(amplify_variance)(model, position=1, lam=2.0, site="mlp")
    with torch.no_grad():  # bit-identical afterwards, no hooks left
        assert torch.equal(model(tokens), model(tokens))
    assert count_hooks(model) == 0


def test_sink_shift_sweep_summary(model: Any) -> None:
    tokens = tokens_for()
    df = sink_shift(model, tokens, position=[4, 6], lams=[1.0, 8.0], layers=[0, 1], sweep=True)
    assert len(df) == 2 * 2 * 2 * 2 * 3  # arms x edits x k x lams x measured layers
    summ = shift_summary(df)
    assert len(summ) == 2 * 2 * 2 * 2 and set(summ["edited_layer"]) == {0, 1}
    assert (summ["n"] == 2).all() and (summ["delta_k_se"] >= 0).all()
    one = df[(df["arm"] == "amplify") & (df["k"] == 4) & (df["lam"] == 8.0)]
    one = one[(one["edited_layer"] == 1) & (one["layer"] == 2)]
    with amplify_variance(model, position=4, lam=8.0, layers=[1]):
        imp = sink_profile(model, tokens).imp.mean(2)[:, 2, 4]
    assert float(one["imp_k_after"].iloc[0]) == pytest.approx(float(imp.mean()), abs=1e-12)
    lam1 = summ[summ["lam"] == 1.0]
    assert lam1["delta_k"].abs().max() < 1e-6  # lam = 1 is the identity in both arms


def test_sink_shift_frame_and_plot(model: Any, tmp_path: Any) -> None:
    tokens = tokens_for()
    df = sink_shift(model, tokens, position=5, lams=[1.0, 4.0], layers=[0])
    assert set(df["arm"]) == {"amplify", "control"} and len(df) == 2 * 2 * 3
    base = sink_profile(model, tokens).imp.mean((0, 2))
    assert torch.allclose(torch.tensor(df["imp_k_before"].to_numpy()[:3]), base[:, 5], atol=1e-12)
    ctl1 = df[(df["arm"] == "control") & (df["lam"] == 1.0)]
    assert (ctl1["imp_k_after"] == ctl1["imp_k_before"]).all()  # c = 0 at lam = 1: exact
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
