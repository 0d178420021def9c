"""Certified counts against exact rational arithmetic on adversarial near-ties.

The inputs here are not dyadic (float32 randoms, weights summing to 1 by division), so
float scores round; coincident points (equal weights, identical value rows, as a
repeated token at layer 0) make the float comparison a coin toss unless it is decided
exactly. Spec: geometry.md, "Metrics"; ``certify.py`` for the bound.
"""

from fractions import Fraction
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tl_geom.geometry.all_queries import separability_all_queries
from tl_geom.geometry.baseline import random_counts, random_ranks
from tl_geom.geometry.certify import score_bound
from tl_geom.geometry.exact import exact_scores
from tl_geom.geometry.top_n import separability

DTYPES = [torch.float64, torch.float32]


def exact_counts(alpha: torch.Tensor, values: torch.Tensor, chosen: list[int]) -> tuple[int, int]:
    """``(#FP, #TP)`` of a selection, literally from the spec in Fractions."""
    a = [Fraction(x) for x in alpha.double().tolist()]
    v = [[Fraction(x) for x in row] for row in values.double().tolist()]
    d = len(v[0])
    y = [[a[i] * x for x in v[i]] for i in range(len(a))]
    s = [sum(y[i][c] for i in chosen) for c in range(d)]
    d2 = [sum((y[i][c] - s[c]) ** 2 for c in range(d)) for i in range(len(a))]
    rest = [j for j in range(len(a)) if j not in chosen]
    r_max2, r_min2 = max(d2[i] for i in chosen), min(d2[j] for j in rest)
    return sum(d2[j] <= r_max2 for j in rest), sum(d2[i] < r_min2 for i in chosen)


def rounded(x: float, dtype: torch.dtype) -> float:
    """``x`` as the metric dtype holds it (P and R are reported in the score dtype)."""
    return float(torch.tensor(x, dtype=torch.float64).to(dtype))


def top_n(alpha: torch.Tensor, n: int) -> list[int]:
    a = alpha.tolist()
    return sorted(range(len(a)), key=lambda i: (-a[i], i))[:n]


def tied_case(seed: int, length: int = 22, d: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """``length - 1`` tied weights and one heavier key; value rows 0 and L-1 equal.

    Key 0 (selected) and key L-1 (not selected for N = L - 2) coincide: ``D_0 = D_{L-1}``,
    so key 0 is not inside the open ball of radius ``r_min`` (the held-out case of
    issue 17: float64 matmuls gave R = 0.75 where exact arithmetic gives 0.70).
    """
    gen = torch.Generator().manual_seed(seed)
    alpha = torch.ones(length, dtype=torch.float64)
    alpha[1] = 2.0
    alpha /= alpha.sum()
    values = torch.randn(length, d, generator=gen).double()
    values[1:-1] *= 3  # the coincident pair is the nearest to s
    values[-1] = values[0]
    return alpha, values


@pytest.mark.parametrize("dtype", DTYPES)
def test_coincident_selected_and_unselected_points_count_exactly(dtype) -> None:
    n = 20
    changed = 0
    for seed in range(40):
        alpha, values = tied_case(seed)
        fp, tp = exact_counts(alpha, values, top_n(alpha, n))
        res = separability(alpha, values, n, dtype=dtype)
        assert float(res.precision) == rounded(n / (n + fp), dtype)
        assert float(res.recall) == rounded(tp / n, dtype)
        # the pair coincides, so key 0 is never in the open ball
        assert tp < n
        changed += int(tp != n)
    assert changed == 40


@pytest.mark.parametrize("dtype", DTYPES)
def test_baseline_counts_exact_on_coincident_points(dtype) -> None:
    alpha, values = tied_case(3, length=12, d=16)
    values[5] = values[0]
    values[7] = values[0]
    a, v = alpha.to(dtype).unsqueeze(0), values.to(dtype).unsqueeze(0)
    rank = random_ranks((1,), 12, draws=8, seed=2)
    ns = torch.tensor([1, 3, 6, 11])
    p, r, _ = random_counts(a, v, rank, ns, exact_inputs=(alpha.unsqueeze(0), values.unsqueeze(0)))
    for t in range(8):
        for j, n in enumerate(ns.tolist()):
            chosen = [k for k in range(12) if rank[0, t, k] < n]
            fp, tp = exact_counts(alpha, values, chosen)
            assert float(p[0, t, j]) == rounded(n / (n + fp), dtype)
            assert float(r[0, t, j]) == rounded(tp / n, dtype)


@st.composite
def near_ties(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Random float32 rows with tied weights and repeated value rows (coincident points)."""
    length = draw(st.integers(3, 10))
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    levels = draw(st.lists(st.integers(1, 3), min_size=length, max_size=length))
    alpha = torch.tensor(levels, dtype=torch.float64)
    alpha = (alpha / alpha.sum()).float().double()
    values = torch.randn(length, d, generator=gen)
    for _ in range(draw(st.integers(0, 3))):
        i, j = draw(st.integers(0, length - 1)), draw(st.integers(0, length - 1))
        values[j] = values[i]
    ns = draw(st.lists(st.integers(1, length - 1), min_size=1, max_size=3))
    return alpha, values.double(), ns


@settings(max_examples=60, deadline=None)
@given(near_ties(), st.sampled_from(DTYPES))
def test_certified_counts_equal_exact_arithmetic(case, dtype) -> None:
    alpha, values, ns = case
    res = separability(alpha, values, ns, dtype=dtype)
    for j, n in enumerate(ns):
        fp, tp = exact_counts(alpha, values, top_n(alpha, n))
        assert float(res.precision[j]) == rounded(n / (n + fp), dtype)
        assert float(res.recall[j]) == rounded(tp / n, dtype)
    # batching does not change a count: the same row twice beside a different one
    batch = separability(
        torch.stack([alpha, alpha.flip(0), alpha]), torch.stack([values, values, values]), ns
    )
    single = separability(alpha, values, ns)
    for k in ("precision", "recall", "f1"):
        assert torch.equal(getattr(batch, k)[0], getattr(single, k))
        assert torch.equal(getattr(batch, k)[2], getattr(single, k))
    # every query row at once: the final row is the same selection
    pattern = alpha.unsqueeze(0)
    q = separability_all_queries(pattern, values, ns, causal=False, dtype=dtype)
    assert torch.equal(q.precision[0], res.precision)
    assert torch.equal(q.recall[0], res.recall)


@settings(max_examples=40, deadline=None)
@given(near_ties(), st.sampled_from(DTYPES))
def test_score_bound_bounds_the_rounding(case, dtype) -> None:
    alpha, values, ns = case
    a, v = alpha.to(dtype), values.to(dtype)
    for n in ns:
        chosen = top_n(alpha, n)
        sel = torch.zeros_like(a, dtype=torch.bool)
        sel[chosen] = True
        s = (a * sel) @ v
        g = a * (v @ (2 * s) - a * (v * v).sum(-1))
        w = a * v.square().sum(-1).sqrt()
        bound = float(score_bound(w, v.shape[-1], n, g_dtype=dtype, s_dtype=dtype))
        y = [
            [Fraction(x) * Fraction(c) for c in r]
            for x, r in zip(alpha.tolist(), values.tolist(), strict=True)
        ]
        ss = [sum(y[i][c] for i in chosen) for c in range(v.shape[-1])]
        exact_g = [
            2 * sum(sc * yc for sc, yc in zip(ss, yk, strict=True)) - sum(yc * yc for yc in yk)
            for yk in y
        ]
        for k, g_k in enumerate(exact_g):  # with a factor 2 to spare
            assert abs(Fraction(float(g[k])) - g_k) <= Fraction(bound) / 2
        # exact_scores is Q^2 g for one common Q: same zeros, one common ratio
        ints = exact_scores(alpha, values, chosen, list(range(len(alpha))))
        ratios = {Fraction(ints[k]) / g_k for k, g_k in enumerate(exact_g) if g_k != 0}
        assert len(ratios) <= 1 and all(
            (ints[k] == 0) == (g_k == 0) for k, g_k in enumerate(exact_g)
        )


@pytest.mark.slow
def test_compiled_baseline_passes_equal_the_eager_ones() -> None:
    """The fused (torch.compile) counting kernel gives the eager passes' counts and flags."""
    from tl_geom.geometry import fused

    gen = torch.Generator().manual_seed(0)
    g = torch.randn(3, 4, 5, 64, generator=gen, dtype=torch.float64)
    g[..., 10] = g[..., 11]  # exact ties: flagged rows must agree too
    rank = torch.stack([torch.randperm(64, generator=gen) for _ in range(12)]).view(3, 4, 64)
    n = torch.tensor([1, 2, 8, 16, 63])
    w = torch.rand(3, 1, 1, 64, generator=gen, dtype=torch.float64)
    a_sel = torch.rand(3, 4, 5, 1, generator=gen, dtype=torch.float64) * 10
    args = (w, a_sel, 1e-4, 1e-300)
    want = fused.eager_passes(g, rank, n, *args)
    fused.set_compiled(True)
    try:
        got = fused.baseline_passes(g, rank, n, *args)
    finally:
        fused.set_compiled(False)
    for x, y in zip(got, want, strict=True):
        assert torch.equal(x, y)
    assert bool(want[2].any()) and not bool(want[2].all())


def test_compiled_context_restores_and_a_failed_compile_falls_back(monkeypatch: Any) -> None:
    """``compiled(True)`` turns the kernel on for its block only; a kernel that fails to
    compile warns once and gives the eager passes' counts."""
    from tl_geom.geometry import fused

    gen = torch.Generator().manual_seed(1)
    g = torch.randn(2, 3, 2, 16, generator=gen, dtype=torch.float64)
    rank = torch.stack([torch.randperm(16, generator=gen) for _ in range(6)]).view(2, 3, 16)
    n = torch.tensor([1, 4])
    args = (torch.ones(2, 1, 1, 16, dtype=torch.float64), torch.ones(2, 3, 2, 1), 1e-13, 0.0)
    want = fused.eager_passes(g, rank, n, *args)

    def broken(*_: Any, **__: Any) -> Any:
        def fail(*_a: Any, **_k: Any) -> Any:
            raise RuntimeError("no compiler here")

        return fail

    monkeypatch.setattr(fused, "_state", {"on": False, "fn": None})
    monkeypatch.setattr(torch, "compile", broken)
    with fused.compiled(True):
        assert fused._state["on"]
        with pytest.warns(UserWarning, match="no compiler here"):
            got = fused.baseline_passes(g, rank, n, *args)
        assert not fused._state["on"]  # the failure switched it off for the rest
    assert not fused._state["on"]
    for x, y in zip(got, want, strict=True):
        assert torch.equal(x, y)
    monkeypatch.setattr(fused, "_state", {"on": True, "fn": None})
    with fused.compiled(False):  # the environment's TL_GEOM_COMPILE=1 is kept
        assert fused._state["on"]
    assert fused._state["on"]


def test_compile_flag_reaches_the_config_and_leaves_the_fingerprint() -> None:
    """``--compile`` parses into ``AnalyzeConfig.compile``; results do not depend on it,
    so a resumed run may switch it."""
    from tl_geom.app.cli import _parser
    from tl_geom.jobs.config import AnalyzeConfig, from_namespace

    on = from_namespace(AnalyzeConfig, _parser().parse_args(["analyze", "--compile"]))
    off = from_namespace(AnalyzeConfig, _parser().parse_args(["analyze"]))
    assert on.compile and not off.compile
    assert on.fingerprint() == off.fingerprint()


@st.composite
def sink_and_ties(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    """A heavy sink with a long value (it sets the uniform bound ``E``) beside small,
    tied keys with repeated value rows: near-ties the per-key bounds must still catch."""
    length = draw(st.integers(4, 12))
    d = draw(st.integers(1, 6))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    levels = draw(st.lists(st.integers(1, 3), min_size=length - 1, max_size=length - 1))
    sink = draw(st.sampled_from([1.0, 10.0, 100.0]))
    alpha = torch.tensor([sink * sum(levels), *levels], dtype=torch.float64)
    alpha = (alpha / alpha.sum()).float().double()
    alpha /= alpha.sum()  # rows sum to 1 within float64 rounding
    values = torch.randn(length, d, generator=gen)
    values[0] *= draw(st.sampled_from([1.0, 30.0]))
    for _ in range(draw(st.integers(0, 3))):
        i, j = draw(st.integers(1, length - 1)), draw(st.integers(1, length - 1))
        values[j] = values[i]
    return alpha, values.double()


def first_stage(y: torch.Tensor, rank: torch.Tensor, ns: torch.Tensor, uniform: bool):
    """The baseline's first stage on ``y [1, L, d]``: per key and selection, or with
    one bound per row (``e_k = E = 8 gamma (2 A + W) W + tiny``, the previous rule)."""
    from tl_geom.geometry import fused
    from tl_geom.geometry.certify import key_bounds

    w = y.square().sum(-1).sqrt()
    scale, tiny = key_bounds(y.shape[-1], int(ns.max()), g_dtype=y.dtype, s_dtype=y.dtype)
    sel = (rank.unsqueeze(-2) < ns.view(-1, 1)).to(y.dtype)  # [1, t, nn, key]
    s = torch.einsum("btnk,bkd->btnd", sel, y)
    g = 2 * torch.einsum("btnd,bkd->btnk", s, y) - (y * y).sum(-1)[:, None, None, :]
    if uniform:
        w_k = w.amax(-1).view(1, 1, 1, 1).expand(1, 1, 1, w.shape[-1])
        a_j = w.sum(-1).view(1, 1, 1, 1).expand(*g.shape[:-1], 1)
    else:
        w_k, a_j = w.view(1, 1, 1, -1), torch.einsum("btnk,bk->btn", sel, w).unsqueeze(-1)
    return fused.eager_passes(g, rank, ns, w_k, a_j * (1 + 1e-12), scale, tiny)


@settings(max_examples=60, deadline=None)
@given(sink_and_ties(), st.sampled_from(DTYPES), st.integers(0, 2**16))
def test_per_key_bounds_count_exactly_and_flag_within_the_uniform_ones(case, dtype, seed) -> None:
    """The baseline with per-key, per-selection stage-1 bounds equals exact rational
    arithmetic on every draw and N; its flags are a subset of the uniform bound's, and
    the two agree on every count neither flags."""
    alpha, values = case
    length = alpha.shape[0]
    ns = torch.tensor(sorted({1, max(1, length // 2), length - 1}))
    rank = random_ranks((1,), length, draws=6, seed=seed)
    a, v = alpha.to(dtype).unsqueeze(0), values.to(dtype).unsqueeze(0)
    p, r, _ = random_counts(a, v, rank, ns, exact_inputs=(alpha.unsqueeze(0), values.unsqueeze(0)))
    for t in range(6):
        for j, n in enumerate(ns.tolist()):
            chosen = [k for k in range(length) if rank[0, t, k] < n]
            fp, tp = exact_counts(alpha, values, chosen)
            assert float(p[0, t, j]) == rounded(n / (n + fp), dtype)
            assert float(r[0, t, j]) == rounded(tp / n, dtype)
    y = a.unsqueeze(-1) * v
    fp_k, tp_k, flag_k = first_stage(y, rank, ns, uniform=False)
    fp_u, tp_u, flag_u = first_stage(y, rank, ns, uniform=True)
    assert not bool((flag_k & ~flag_u).any())
    both = ~flag_u
    assert torch.equal(fp_k[both], fp_u[both]) and torch.equal(tp_k[both], tp_u[both])


def test_per_key_bounds_flag_fewer_rows_beside_a_sink() -> None:
    """A sink with 60% of the weight and a long value row sets the uniform ``E``; with
    bounds per key and selection far fewer first-stage entries are flagged (float32)."""
    gen = torch.Generator().manual_seed(0)
    length, d = 256, 16
    alpha = torch.rand(length, generator=gen, dtype=torch.float64) * 1e-3
    alpha[0] = 0.6 * alpha[1:].sum() / 0.4
    alpha /= alpha.sum()
    values = torch.randn(length, d, generator=gen, dtype=torch.float64)
    values[0] *= 50
    y = (alpha.unsqueeze(-1) * values).float().unsqueeze(0)
    rank = random_ranks((1,), length, draws=16, seed=0)
    ns = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128])
    flag_k = first_stage(y, rank, ns, uniform=False)[2]
    flag_u = first_stage(y, rank, ns, uniform=True)[2]
    assert int(flag_k.sum()) < int(flag_u.sum()) // 2, (int(flag_k.sum()), int(flag_u.sum()))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([1e-14, 1e-6, 1e-3, 1e-1]))
def test_two_stage_passes_equal_the_per_key_passes(seed: int, scale: float) -> None:
    """The eager two-stage passes (one bound per selection, then per key on the
    undecided entries), and the per-key stage alone, give :func:`key_passes`' counts and
    flags bit for bit, on scores with exact ties and keys of very different norms, in
    float64 and in float32."""
    from tl_geom.geometry import fused

    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(2, 3, 4, 32, generator=gen, dtype=torch.float64)
    g[..., 5] = g[..., 6]  # exact ties
    g[..., 7] = g[..., 8] + 1e-9  # near-ties
    rank = torch.stack([torch.randperm(32, generator=gen) for _ in range(6)]).view(2, 3, 32)
    n = torch.tensor([1, 3, 16, 31])
    w = torch.rand(2, 1, 1, 32, generator=gen, dtype=torch.float64) * 1e-2
    w[..., 0] = 10.0  # a sink's long value
    a_sel = torch.rand(2, 3, 4, 1, generator=gen, dtype=torch.float64) * 20
    want = fused.key_passes(g, rank, n, w, a_sel, scale, 1e-300)
    got = fused.eager_passes(g, rank, n, w, a_sel, scale, 1e-300)
    per_key = fused.eager_passes(g, rank, n, w, a_sel, scale, 1e-300, first_stage=False)
    for x, y, z in zip(got, want, per_key, strict=True):
        assert torch.equal(x, y) and torch.equal(z, y)
    # float32 scores with float64 norms (the certified float32 path): the same agreement
    g32, tiny = g.float(), 1e-36
    want = fused.key_passes(g32, rank, n, w, a_sel, scale, tiny)
    for first in (True, False):
        got = fused.eager_passes(g32, rank, n, w, a_sel, scale, tiny, first_stage=first)
        for x, y in zip(got, want, strict=True):
            assert torch.equal(x, y)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([0.0, 1e-12, 1e-3]))
def test_masked_certified_counts_equal_the_boolean_counts(seed: int, bound: float) -> None:
    """The masked counts (float sums over -inf-filled scores) equal plain boolean counts
    over the sets, with ties, absent keys, and a row whose rest is empty (every present
    key selected): that row is not flagged for an empty rest."""
    from tl_geom.geometry.certify import certified_counts

    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(3, 4, 24, generator=gen, dtype=torch.float64).round(decimals=1)  # ties
    present = torch.rand(3, 1, 24, generator=gen) < 0.8
    present[..., :6] = True
    selected = (torch.rand(3, 4, 24, generator=gen) < 0.3) & present
    selected[..., 0] = True
    selected[0, 0] = present[0, 0]  # the rest of this row is empty
    rest = present & ~selected
    inf = torch.tensor(float("inf"), dtype=g.dtype)
    t_min = torch.where(selected, g, inf).amin(-1)
    t_max = torch.where(rest, g, -inf).amax(-1)
    e = torch.full_like(t_min, bound)
    fp, tp, flagged = certified_counts(g, e, selected, t_min, t_max, rest)
    lo_min, hi_min = (t_min - 2 * e).unsqueeze(-1), (t_min + 2 * e).unsqueeze(-1)
    lo_max, hi_max = (t_max - 2 * e).unsqueeze(-1), (t_max + 2 * e).unsqueeze(-1)
    want_fp = ((g >= lo_min) & rest).sum(-1)
    want_tp = ((g > hi_max) & selected).sum(-1)
    want_flag = (((g > hi_min) & rest).sum(-1) != want_fp) | (
        ((g >= lo_max) & selected).sum(-1) != want_tp
    )
    assert torch.equal(fp, want_fp) and torch.equal(tp, want_tp)
    assert torch.equal(flagged, want_flag)
    assert not bool(flagged[0, 0]) and int(fp[0, 0]) == 0
