"""sink_math against slow literal references (loops, float64) and hypothesis properties."""

import math

import pytest
import scipy.stats
import torch
from hypothesis import given
from hypothesis import strategies as st
from jaxtyping import TypeCheckError

from tl_geom import TlGeomError
from tl_geom.sinks.sink_math import (
    dom_ratio,
    effective_rank,
    kendall_tau,
    massive_activations,
    neuron_contributions,
    qk_lock_in,
    sink_importance,
    sink_rate,
    variance_over_dims,
)

# --- literal references -------------------------------------------------------------


def ref_importance(a: list[list[float]], causal: bool) -> list[float]:
    t = len(a)
    out = []
    for k in range(len(a[0])):
        total = 0.0
        seen = 0
        for i in range(t):
            if causal and i < k:
                continue
            total += a[i][k]
            seen += 1
        out.append(total / seen)
    return out


def ref_massive(x: list[list[float]], top: int) -> tuple[list[float], list[tuple[int, int]], float]:
    entries = [(abs(v), p, d) for p, row in enumerate(x) for d, v in enumerate(row)]
    entries.sort(key=lambda e: (-e[0], e[1], e[2]))
    mags = sorted(e[0] for e in entries)
    median = mags[(len(mags) - 1) // 2]  # torch.median: the lower middle value
    return [e[0] for e in entries[:top]], [(e[1], e[2]) for e in entries[:top]], median


def ref_tau(x: list[float], y: list[float]) -> float:
    conc = disc = tx = ty = 0
    n = len(x)
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0:
                tx += 1
            if dy == 0:
                ty += 1
            if dx * dy > 0:
                conc += 1
            elif dx * dy < 0:
                disc += 1
    n0 = n * (n - 1) // 2
    den = math.sqrt((n0 - tx) * (n0 - ty))
    return (conc - disc) / den if den else math.nan


def causal_pattern(b: int, t: int, gen: torch.Generator) -> torch.Tensor:
    scores = torch.randn(b, t, t, generator=gen, dtype=torch.float64)
    mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
    return scores.masked_fill(mask, -math.inf).softmax(-1)


# --- sink importance and rate ------------------------------------------------------------


@given(st.integers(1, 7), st.integers(0, 10_000), st.booleans())
def test_sink_importance_matches_reference(t: int, seed: int, causal: bool) -> None:
    gen = torch.Generator().manual_seed(seed)
    a = causal_pattern(3, t, gen) if causal else torch.rand(3, t, t, generator=gen).softmax(-1)
    got = sink_importance(a, causal=causal)
    for b in range(3):
        ref = ref_importance(a[b].tolist(), causal)
        assert got[b].tolist() == pytest.approx(ref, rel=1e-12, abs=1e-15)


def test_sink_importance_batched_equals_single_and_full_sink() -> None:
    gen = torch.Generator().manual_seed(1)
    a = causal_pattern(6, 5, gen).view(2, 3, 5, 5)
    got = sink_importance(a)
    assert torch.equal(got[1, 2], sink_importance(a[1, 2]))
    one_hot = torch.zeros(4, 4)
    one_hot[:, 0] = 1
    assert sink_importance(one_hot).tolist() == [1.0, 0.0, 0.0, 0.0]


def test_sink_importance_rejects_non_square_causal() -> None:
    with pytest.raises(TlGeomError, match="square"):
        sink_importance(torch.full((2, 3), 1 / 3))
    assert sink_importance(torch.full((2, 3), 1 / 3), causal=False).shape == (3,)


@given(st.lists(st.sampled_from([0.0, 0.1, 0.3, 0.31, 0.9, 1.0]), min_size=6, max_size=6))
def test_sink_rate_counts_strictly_above_eps(vals: list[float]) -> None:
    imp0 = torch.tensor(vals, dtype=torch.float64).view(2, 3)
    ref = sum(v > 0.3 for v in vals) / 6
    assert sink_rate(imp0).item() == pytest.approx(ref)
    stacked = torch.stack([imp0, torch.zeros(2, 3, dtype=torch.float64)])
    assert sink_rate(stacked).tolist() == pytest.approx([ref, 0.0])
    with pytest.raises(TlGeomError, match="eps"):
        sink_rate(imp0, eps=1.5)


# --- massive activations, DomRatio, variance ---------------------------------------------


@given(
    st.lists(st.integers(-4, 4), min_size=12, max_size=12),
    st.integers(1, 5),
)
def test_massive_activations_matches_reference_with_ties(vals: list[int], top: int) -> None:
    x = torch.tensor(vals, dtype=torch.float64).view(3, 4)
    r = massive_activations(x, top=top, abs_min=2.0, ratio_min=1.5)
    ref_vals, ref_where, ref_median = ref_massive(x.tolist(), top)
    assert r.values.tolist() == ref_vals
    assert list(zip(r.positions.tolist(), r.dims.tolist(), strict=True)) == ref_where
    assert r.median.item() == ref_median
    for v, flag in zip(ref_vals, r.massive.tolist(), strict=True):
        ratio = v / ref_median if ref_median else math.inf
        assert flag == (v > 2.0 and ratio > 1.5)


def test_massive_activations_batched_and_errors() -> None:
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    x[1, 2, 3, 1] = 5000.0
    r = massive_activations(x)
    assert r.values.shape == (2, 3, 3) and r.median.shape == (2, 3)
    assert (r.positions[1, 2, 0].item(), r.dims[1, 2, 0].item()) == (3, 1)
    assert bool(r.massive[1, 2, 0]) and not bool(r.massive[0].any())
    with pytest.raises(TlGeomError, match="top"):
        massive_activations(x, top=21)


@given(st.lists(st.integers(-5, 5), min_size=4, max_size=4))
def test_dom_ratio_and_variance_reference(vals: list[int]) -> None:
    h = torch.tensor(vals, dtype=torch.float64)
    mags = [abs(v) for v in vals]
    mean = sum(mags) / 4
    got = dom_ratio(h).item()
    if mean == 0:
        assert math.isnan(got)
    else:
        assert got == pytest.approx(max(mags) / mean)
    mu = sum(vals) / 4
    assert variance_over_dims(h).item() == pytest.approx(sum((v - mu) ** 2 for v in vals) / 4)


def test_variance_scales_with_lam_squared_under_mean_preserving_amplification() -> None:
    o = torch.randn(5, 8, dtype=torch.float64)
    mu = o.mean(-1, keepdim=True)
    amp = mu + 3.0 * (o - mu)
    assert torch.allclose(variance_over_dims(amp), 9 * variance_over_dims(o))


# --- Kendall tau --------------------------------------------------------------------------


@given(
    st.lists(st.integers(0, 3), min_size=2, max_size=9),
    st.integers(0, 10_000),
)
def test_kendall_tau_matches_reference_and_scipy(xs: list[int], seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    ys = torch.randint(0, 3, (len(xs),), generator=gen).tolist()
    got = kendall_tau(torch.tensor(xs, dtype=torch.float64), torch.tensor(ys, dtype=torch.float64))
    ref = ref_tau([float(v) for v in xs], [float(v) for v in ys])
    if math.isnan(ref):
        assert math.isnan(got.item())
        return
    assert got.item() == pytest.approx(ref, abs=1e-12)
    assert got.item() == pytest.approx(scipy.stats.kendalltau(xs, ys)[0], abs=1e-12)


def test_kendall_tau_batched() -> None:
    x, y = torch.randn(3, 4, 10), torch.randn(3, 4, 10)
    got = kendall_tau(x, y)
    assert got[2, 1].item() == pytest.approx(ref_tau(x[2, 1].tolist(), y[2, 1].tolist()))
    with pytest.raises((TlGeomError, TypeCheckError)):  # beartype in tests, ours for users
        kendall_tau(x, y[..., :5])
    with pytest.raises(TlGeomError, match="equal shapes"):
        kendall_tau.__wrapped__(x, y[..., :5])  # pyright: ignore[reportFunctionMemberAccess]


# --- super neurons, lock-in, effective rank -------------------------------------------


def test_neuron_contributions_sum_to_the_mlp_write() -> None:
    act = torch.randn(2, 6, dtype=torch.float64)
    w = torch.randn(6, 4, dtype=torch.float64)
    c = neuron_contributions(act, w, 2)
    for b in range(2):
        for n in range(6):
            assert c[b, n].item() == act[b, n].item() * w[n, 2].item()
    assert torch.allclose(c.sum(-1), (act @ w)[:, 2])
    with pytest.raises(TlGeomError, match="dim=4"):
        neuron_contributions(act, w, 4)
    with pytest.raises((TlGeomError, TypeCheckError)):
        neuron_contributions(act, w.T, 0)
    with pytest.raises(TlGeomError, match="w_out"):
        neuron_contributions.__wrapped__(act, w.T, 0)  # pyright: ignore[reportFunctionMemberAccess]


@given(st.lists(st.integers(-2, 2), min_size=12, max_size=12), st.integers(-2, 2))
def test_qk_lock_in_matches_reference(qs: list[int], k: int) -> None:
    q = torch.tensor(qs, dtype=torch.float64).view(6, 2)
    k0 = torch.tensor([k, 1], dtype=torch.float64)
    r = qk_lock_in(q, k0, min_share=0.5)
    dots = [qs[2 * i] * k + qs[2 * i + 1] for i in range(6)]
    share = sum(d > 0 for d in dots) / 6  # a zero score is not positive
    assert r.positive_share.item() == pytest.approx(share)
    assert bool(r.locked) == (share >= 0.5)


def test_qk_lock_in_batched_shapes_and_errors() -> None:
    q, k0 = torch.randn(2, 3, 7, 4), torch.randn(2, 3, 4)
    r = qk_lock_in(q, k0)
    assert r.positive_share.shape == (2, 3)
    assert r.positive_share[1, 2].item() == pytest.approx(
        ((q[1, 2] @ k0[1, 2]) > 0).double().mean().item()
    )
    with pytest.raises((TlGeomError, TypeCheckError)):
        qk_lock_in(q, k0[0])
    with pytest.raises(TlGeomError, match="k0"):
        qk_lock_in.__wrapped__(q, k0[0])  # pyright: ignore[reportFunctionMemberAccess]


def ref_erank(x: torch.Tensor) -> float:
    s = torch.linalg.svdvals(x.double()).tolist()
    total = sum(s)
    h = -sum((v / total) * math.log(v / total) for v in s if v > 0)
    return math.exp(h)


@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 10_000))
def test_effective_rank_reference_and_bounds(n: int, d: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(-2, 3, (n, d), generator=gen).double()
    got = effective_rank(x).item()
    if not x.any():
        assert math.isnan(got)
        return
    assert got == pytest.approx(ref_erank(x), rel=1e-9)
    assert 1 - 1e-9 <= got <= min(n, d) + 1e-9


def test_effective_rank_of_rank_one_and_centering() -> None:
    x = torch.outer(torch.arange(1.0, 6.0), torch.tensor([1.0, 2.0, 0.5]))
    assert effective_rank(x).item() == pytest.approx(1.0)
    same_rows = torch.ones(4, 3)
    assert math.isnan(effective_rank(same_rows, center=True).item())
    batch = torch.randn(2, 3, 8, 5)
    assert effective_rank(batch)[1, 2].item() == pytest.approx(ref_erank(batch[1, 2]))


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(TlGeomError, match="floating"):
        sink_importance.__wrapped__(torch.ones(3, 3, dtype=torch.long))  # pyright: ignore[reportFunctionMemberAccess]
    with pytest.raises(TlGeomError, match="NaN"):
        dom_ratio(torch.tensor([1.0, math.nan]))
    with pytest.raises(TlGeomError, match="empty"):
        variance_over_dims(torch.ones(0))
