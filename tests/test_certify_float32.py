"""The baseline's float32 scores (``score_dtype=torch.float32``) against exact arithmetic.

Only the score matmul and its passes run in float32; ``s`` stays float64 and every
comparison is certified by ``certify.mixed_bounds`` or decided from float64 scores. The
counts must equal exact rational arithmetic and the float64 path bit for bit, on
coincident points, on near-ties at float32's rounding level, beside a sink, and under
a float32 matmul precision setting that would allow TF32 or bfloat16.
Spec: geometry.md, "Metrics" (Baseline); ``certify.py`` for the bound.
"""

from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_certify import exact_counts, near_ties, sink_and_ties, tied_case
from tl_geom.geometry.baseline import default_score_dtype, random_counts, random_ranks
from tl_geom.geometry.certify import gamma_sum, ieee_float32, mixed_bounds, mixed_scores_fit


def exact_baseline(alpha: torch.Tensor, values: torch.Tensor, rank: torch.Tensor, ns: list[int]):
    """``(P, R)`` ``[draw, nn]`` of the subsets ``rank < N`` of one row, in Fractions."""
    draws, length = rank.shape
    p = torch.empty(draws, len(ns), dtype=torch.float64)
    r = torch.empty_like(p)
    for t in range(draws):
        for j, n in enumerate(ns):
            fp, tp = exact_counts(alpha, values, [k for k in range(length) if rank[t, k] < n])
            p[t, j], r[t, j] = n / (n + fp), tp / n
    return p, r


def float32_scores_agree(alpha: torch.Tensor, values: torch.Tensor, ns: list[int], seed: int):
    """The float32-score baseline equals exact arithmetic and the float64 path."""
    length = alpha.shape[0]
    rank = random_ranks((1,), length, draws=6, seed=seed)
    a, v, n_t = alpha.unsqueeze(0), values.unsqueeze(0), torch.tensor(ns)
    got = random_counts(a, v, rank, n_t, score_dtype=torch.float32)
    ref = random_counts(a, v, rank, n_t, score_dtype=torch.float64)
    for x, y in zip(got, ref, strict=True):
        assert x.dtype == torch.float64 and torch.equal(x, y)
    p, r = exact_baseline(alpha, values, rank[0], ns)
    assert torch.equal(got[0][0], p) and torch.equal(got[1][0], r)


@settings(max_examples=50, deadline=None)
@given(near_ties(), st.integers(0, 2**16))
def test_float32_scores_count_exactly_on_coincident_points(case, seed: int) -> None:
    alpha, values, ns = case
    float32_scores_agree(alpha, values, sorted(set(ns)), seed)


@settings(max_examples=50, deadline=None)
@given(sink_and_ties(), st.integers(0, 2**16))
def test_float32_scores_count_exactly_beside_a_sink(case, seed: int) -> None:
    alpha, values = case
    length = alpha.shape[0]
    float32_scores_agree(alpha, values, sorted({1, max(1, length // 2), length - 1}), seed)


@st.composite
def float32_near_ties(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    """Value rows that differ from another row by a relative 2**-k, k around float32's
    24 bits: distances that float32 scores cannot order and float64 can."""
    length = draw(st.integers(4, 12))
    d = draw(st.integers(1, 6))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    levels = draw(st.lists(st.integers(1, 2), min_size=length, max_size=length))
    alpha = torch.tensor(levels, dtype=torch.float64)
    alpha /= alpha.sum()
    values = torch.randn(length, d, generator=gen, dtype=torch.float64)
    for _ in range(draw(st.integers(1, 4))):
        i, j = draw(st.integers(0, length - 1)), draw(st.integers(0, length - 1))
        bits = draw(st.integers(18, 30))
        values[j] = values[i] * (
            1 + 2.0**-bits * torch.randn(d, generator=gen, dtype=torch.float64)
        )
    return alpha, values


@settings(max_examples=60, deadline=None)
@given(float32_near_ties(), st.integers(0, 2**16))
def test_float32_scores_count_exactly_on_float32_near_ties(case, seed: int) -> None:
    alpha, values = case
    length = alpha.shape[0]
    float32_scores_agree(alpha, values, sorted({1, 2, length // 2, length - 1}), seed)


def test_float32_scores_count_exactly_on_the_held_out_case() -> None:
    """Issue 17's case (21 tied weights, rows 0 and 21 equal), each N and draw."""
    for seed in range(3):
        alpha, values = tied_case(seed)
        float32_scores_agree(alpha, values, [1, 5, 11, 20, 21], seed)


@settings(max_examples=40, deadline=None)
@given(st.one_of(float32_near_ties(), sink_and_ties()), st.integers(0, 2**16))
def test_mixed_bound_bounds_the_rounding(case, seed: int) -> None:
    """Every float32 score lies within half of its key's bound of the exact score,
    formed as ``random_counts`` forms it (float64 ``s``, one float32 matmul)."""
    alpha, values = case
    length, d = values.shape
    ns = [1, max(1, length // 2), length - 1]
    rank = random_ranks((), length, draws=3, seed=seed)
    y = alpha.unsqueeze(-1) * values
    w = y.square().sum(-1).sqrt()
    a_max = mixed_scores_fit(w, torch.float32)
    assert a_max is not None
    scale, tiny, extra = mixed_bounds(d, max(ns), torch.float32, torch.float64, a_max)
    y_b = torch.cat([y, -y.square().sum(-1, keepdim=True)], -1).float()
    rows = zip(alpha.tolist(), values.tolist(), strict=True)
    yq = [[Fraction(x) * Fraction(c) for c in row] for x, row in rows]
    for t in range(3):
        for n in ns:
            chosen = [k for k in range(length) if rank[t, k] < n]
            sel = (rank[t] < n).double()
            s = sel @ y
            a_j = float(sel @ w) * (1 + 2 * gamma_sum(max(ns) + 8, torch.float64))
            s_aug = torch.cat([2 * s, torch.ones(1, dtype=torch.float64)]).float()
            with ieee_float32():
                g = (s_aug.unsqueeze(0) @ y_b.T)[0]
            a_eff = float(s.norm()) * (1 + 2**-40) + extra * a_j
            ss = [sum(yq[i][c] for i in chosen) for c in range(d)]
            for k in range(length):
                dot = sum(sc * yc for sc, yc in zip(ss, yq[k], strict=True))
                exact = 2 * dot - sum(c * c for c in yq[k])
                e_k = scale * (2 * a_eff + float(w[k])) * float(w[k]) + tiny
                assert abs(Fraction(float(g[k])) - exact) <= Fraction(e_k) / 2


def test_reduced_float32_matmul_precision_does_not_reach_the_scores() -> None:
    """With TF32/bfloat16 allowed for float32 matmuls the counts stay exact (the score
    matmul runs under ``ieee_float32``), and the user's setting is restored."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        for seed in range(2):
            alpha, values = tied_case(seed)
            float32_scores_agree(alpha, values, [1, 11, 20], seed)
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(before)
    with pytest.raises(RuntimeError, match="inside"), ieee_float32():
        assert torch.get_float32_matmul_precision() == "highest"
        raise RuntimeError("inside")
    assert torch.get_float32_matmul_precision() == before


def test_scores_that_could_overflow_float32_stay_in_float64() -> None:
    """Values of 1e20 would overflow float32 scores: the path keeps them in float64, and
    the counts are still exact."""
    alpha, values = tied_case(0, length=10, d=4)
    big = values * 1e20
    w = (alpha.unsqueeze(-1) * big).square().sum(-1).sqrt()
    assert mixed_scores_fit(w, torch.float32) is None
    assert mixed_scores_fit(w / 1e20, torch.float32) is not None
    float32_scores_agree(alpha, big, [1, 4, 9], 0)


def test_default_score_dtype_is_float32_on_accelerators_only() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert default_score_dtype(cpu, torch.float64) == torch.float64
    assert default_score_dtype(cuda, torch.float64) == torch.float32
    assert default_score_dtype(cuda, torch.float32) == torch.float32


@settings(max_examples=40, deadline=None)
@given(float32_near_ties(), st.integers(0, 2**16), st.integers(1, 3))
def test_float32_scores_count_exactly_with_zero_weights_and_rows(case, seed: int, zeros: int):
    """Keys of weight 0 (an underflowed softmax) and zero value rows: their scores are
    exactly 0 in both dtypes and tie; every count is still exact."""
    alpha, values = case
    length = alpha.shape[0]
    alpha[1 : 1 + zeros] = 0.0
    alpha /= alpha.sum()
    values[-1] = 0.0
    float32_scores_agree(alpha, values, sorted({1, length // 2, length - 1}), seed)


def test_ieee_blocks_in_threads_restore_the_setting_last() -> None:
    """Blocks that overlap in two threads: the setting stays "highest" until the last
    one leaves, then the user's comes back."""
    import threading

    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    entered, release = threading.Event(), threading.Event()
    seen: list[str] = []

    def other() -> None:
        with ieee_float32():
            entered.set()
            release.wait(10)
            seen.append(torch.get_float32_matmul_precision())

    try:
        worker = threading.Thread(target=other)
        worker.start()
        assert entered.wait(10)
        with ieee_float32():
            assert torch.get_float32_matmul_precision() == "highest"
        assert torch.get_float32_matmul_precision() == "highest"  # the other is inside
        release.set()
        worker.join(10)
        assert seen == ["highest"]
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        release.set()
        torch.set_float32_matmul_precision(before)
