"""Separability against slow literal references (spec: geometry.md, "Objects", "Metrics").

The exact reference loops over the spec definitions with ``fractions.Fraction``.
Property tests feed it *dyadic* weights (``c_i / 2^k`` from a random composition of
``2^k``, so ties and zeros occur) and small-integer values: every intermediate of
the float64 ``g`` form is then exact, and the fast path must agree bit for bit on
the counts.
"""

import itertools
import math
import re
import statistics
from collections.abc import Sequence
from fractions import Fraction

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from jaxtyping import TypeCheckError

from tl_geom._checks import ROW_SUM_ATOL, check_n, check_values, check_weights
from tl_geom.errors import TlGeomError
from tl_geom.geometry import all_queries
from tl_geom.geometry.all_queries import (
    QuerySeparability,
    separability_all_queries,
    separability_all_queries_streamed,
)
from tl_geom.geometry.baseline import (
    RandomSeparability,
    random_counts,
    random_ranks,
    random_separability,
)
from tl_geom.geometry.top_n import separability, top_n_rank

Num = Fraction | float

# --------------------------------------------------------------------------- reference


def ref_top_n(alpha: Sequence[Num], n: int) -> list[int]:
    """I_N: the N largest weights, ties to the earlier position."""
    return sorted(range(len(alpha)), key=lambda i: (-alpha[i], i))[:n]


def ref_metrics(alpha: Sequence[Num], values: Sequence[Sequence[Num]], chosen: list[int]) -> dict:
    """P, R, F, r_max^2, r_min^2 and s for a given selection, literally from the spec."""
    length, d = len(alpha), len(values[0])
    zero = alpha[0] * 0
    y = [[alpha[i] * values[i][c] for c in range(d)] for i in range(length)]
    s = [sum((y[i][c] for i in chosen), zero) for c in range(d)]
    d2 = [sum(((y[i][c] - s[c]) ** 2 for c in range(d)), zero) for i in range(length)]
    rest = [j for j in range(length) if j not in chosen]
    n = len(chosen)
    if isinstance(zero, float):  # float reference: literal distances D_i = sqrt(D_i^2)
        dist = [math.sqrt(x) for x in d2]
        r_max, r_min = max(dist[i] for i in chosen), min(dist[j] for j in rest)
        false_pos = sum(1 for j in rest if dist[j] <= r_max)
        true_pos = sum(1 for i in chosen if dist[i] < r_min)
        p, r = n / (n + false_pos), true_pos / n
        return {"P": p, "R": r, "F": 2 * p * r / (p + r), "r_max": r_max, "r_min": r_min, "s": s}
    r_max2, r_min2 = max(d2[i] for i in chosen), min(d2[j] for j in rest)
    false_pos = sum(1 for j in rest if d2[j] <= r_max2)  # closed ball
    true_pos = sum(1 for i in chosen if d2[i] < r_min2)  # open ball
    p, r = Fraction(n, n + false_pos), Fraction(true_pos, n)
    return {
        "P": p,
        "R": r,
        "F": 2 * p * r / (p + r),
        "r_max": math.sqrt(r_max2),
        "r_min": math.sqrt(r_min2),
        "perfect": r_min2 > r_max2,
        "s": s,
    }


def ref_separability(alpha: Sequence[Num], values: Sequence[Sequence[Num]], n: int) -> dict:
    chosen = ref_top_n(alpha, n)
    out = ref_metrics(alpha, values, chosen)
    ranked = sorted(alpha, reverse=True)
    out["margin"] = ranked[n - 1] - ranked[n]
    out["selected"] = [i in chosen for i in range(len(alpha))]
    return out


def as_fractions(x: torch.Tensor) -> list:
    """Exact Fractions of a float64 tensor (dyadic inputs are exact in float64)."""
    if x.ndim == 0:
        return Fraction(float(x))  # type: ignore[return-value]
    return [as_fractions(t) for t in x]


def assert_matches(got: dict[str, torch.Tensor], ref: dict, *, exact: bool) -> None:
    """Counts (P, R) exactly; F and radii to rounding."""
    if exact:
        assert float(got["P"]) == float(ref["P"])
        assert float(got["R"]) == float(ref["R"])
    else:
        assert float(got["P"]) == pytest.approx(float(ref["P"]), rel=1e-12)
        assert float(got["R"]) == pytest.approx(float(ref["R"]), rel=1e-12)
    assert float(got["F"]) == pytest.approx(float(ref["F"]), rel=1e-12, abs=1e-15)
    rel = 1e-15 if exact else 1e-9  # radii are measured directly, no cancellation
    assert float(got["r_max"]) == pytest.approx(ref["r_max"], rel=rel, abs=1e-300)
    assert float(got["r_min"]) == pytest.approx(ref["r_min"], rel=rel, abs=1e-300)


# --------------------------------------------------------------------------- strategies


@st.composite
def compositions(draw: st.DrawFn, total: int, parts: int) -> list[int]:
    """A random composition of ``total`` into ``parts`` non-negative integers."""
    cuts = sorted(draw(st.lists(st.integers(0, total), min_size=parts - 1, max_size=parts - 1)))
    edges = [0, *cuts, total]
    return [b - a for a, b in itertools.pairwise(edges)]


@st.composite
def dyadic_rows(draw: st.DrawFn, total: int, length: int) -> list[float]:
    return [c / total for c in draw(compositions(total, length))]


@st.composite
def small_values(draw: st.DrawFn, length: int, d: int) -> list[list[float]]:
    """Small-integer values; sometimes from a pool (duplicates), sink at 0 compressed."""
    coord = st.integers(-2, 2)
    vec = st.lists(coord, min_size=d, max_size=d)
    if draw(st.booleans()):
        pool = draw(st.lists(vec, min_size=1, max_size=3))
        rows = [pool[draw(st.integers(0, len(pool) - 1))] for _ in range(length)]
    else:
        rows = draw(st.lists(vec, min_size=length, max_size=length))
    values = [[float(x) for x in r] for r in rows]
    if draw(st.booleans()):  # compressed sink value: ||v_0|| << mean ||v_i||
        values[0] = [x / 4 for x in values[0]]
    return values


@st.composite
def n_arg(draw: st.DrawFn, length: int) -> int | list[int]:
    return draw(
        st.one_of(
            st.just(1),
            st.just(length - 1),
            st.lists(st.integers(1, length - 1), min_size=1, max_size=4),
            st.just([1, length - 1]),
        )
    )


@st.composite
def dyadic_cases(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, int | list[int]]:
    lead = draw(st.sampled_from([(), (3,), (2, 2)]))
    length = draw(st.integers(2, 7))
    d = draw(st.integers(1, 3))
    total = 2 ** draw(st.integers(0, 5))
    rows = math.prod(lead)
    alpha = [draw(dyadic_rows(total, length)) for _ in range(rows)]
    values = [draw(small_values(length, d)) for _ in range(rows)]
    a = torch.tensor(alpha, dtype=torch.float64).reshape(*lead, length)
    v = torch.tensor(values, dtype=torch.float64).reshape(*lead, length, d)
    return a, v, draw(n_arg(length))


def rows_of(x: torch.Tensor, lead: tuple[int, ...]) -> list[tuple[int, ...]]:
    return (
        [
            tuple(int(i) for i in idx)
            for idx in torch.cartesian_prod(*[torch.arange(s) for s in lead])
            .reshape(-1, len(lead))
            .tolist()
        ]
        if lead
        else [()]
    )


def per_n(res: torch.Tensor, scalar: bool, j: int) -> torch.Tensor:
    return res if scalar else res[..., j]


# --------------------------------------------------------------------------- separability


@given(dyadic_cases())
def test_separability_matches_exact_reference(case) -> None:
    alpha, values, n = case
    res = separability(alpha, values, n)
    fast = separability(alpha, values, n, prefix=True)  # s as running sums: same counts
    for field in ("precision", "recall", "f1", "margin", "selected"):
        assert torch.equal(getattr(fast, field), getattr(res, field)), field
    for field in ("r_max", "r_min", "s"):
        torch.testing.assert_close(getattr(fast, field), getattr(res, field), rtol=1e-12, atol=0)
    ns = [n] if isinstance(n, int) else n
    scalar = isinstance(n, int)
    lead = tuple(alpha.shape[:-1])
    for idx in rows_of(alpha, lead):
        a, v = as_fractions(alpha[idx]), as_fractions(values[idx])
        single = separability(alpha[idx], values[idx], n)  # batching == per row
        for field in ("precision", "recall", "f1", "r_max", "r_min", "margin", "selected", "s"):
            assert torch.equal(getattr(res, field)[idx], getattr(single, field)), field
        for j, nn in enumerate(ns):
            ref = ref_separability(a, v, nn)
            got = {
                "P": per_n(res.precision, scalar, j)[idx],
                "R": per_n(res.recall, scalar, j)[idx],
                "F": per_n(res.f1, scalar, j)[idx],
                "r_max": per_n(res.r_max, scalar, j)[idx],
                "r_min": per_n(res.r_min, scalar, j)[idx],
            }
            assert_matches(got, ref, exact=True)
            margin = per_n(res.margin, scalar, j)[idx]
            assert float(margin) == float(ref["margin"])
            sel = res.selected[idx] if scalar else res.selected[idx][j]
            assert sel.tolist() == ref["selected"]
            s = res.s[idx] if scalar else res.s[idx][j]
            assert s.tolist() == [float(x) for x in ref["s"]]
            # Perfect separation iff r_min > r_max (exactly, in the reference).
            assert bool(per_n(res.perfect, scalar, j)[idx]) == ref["perfect"]
            if nn == 1:  # N = 1 is perfect unless another point equals y_top exactly
                top = ref_top_n(a, 1)[0]
                y = [[a[i] * x for x in v[i]] for i in range(len(a))]
                tie = any(y[i] == y[top] for i in range(len(a)) if i != top)
                assert ref["perfect"] == (not tie)


@pytest.mark.parametrize("seed", range(4))
def test_separability_matches_float_reference_on_continuous_inputs(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    length, d, ns = 16, 4, [1, 2, 4, 8, 15]
    logits = torch.randn(3, 2, length, generator=gen, dtype=torch.float64) * 2
    logits[..., 0] += 3.0  # a sink
    alpha = logits.softmax(-1)
    values = torch.randn(3, 2, length, d, generator=gen, dtype=torch.float64)
    values[..., 0, :] *= 0.1  # compressed sink value
    res = separability(alpha, values, ns)
    for idx in rows_of(alpha, (3, 2)):
        a, v = alpha[idx].tolist(), values[idx].tolist()
        for j, n in enumerate(ns):
            ref = ref_separability(a, v, n)
            got = {
                "P": res.precision[idx][j],
                "R": res.recall[idx][j],
                "F": res.f1[idx][j],
                "r_max": res.r_max[idx][j],
                "r_min": res.r_min[idx][j],
            }
            assert_matches(got, ref, exact=False)
            assert float(res.margin[idx][j]) == pytest.approx(ref["margin"], abs=1e-15)
    fast = separability(alpha, values, ns, prefix=True)
    for field in ("precision", "recall", "f1"):
        assert torch.equal(getattr(fast, field), getattr(res, field)), field


def direct_precision(alpha: torch.Tensor, values: torch.Tensor, n: int, dtype) -> float:
    """P_N from literal distances D_i = ||y_i - s|| in ``dtype`` (what not to do)."""
    a, v = alpha.to(dtype), values.to(dtype)
    chosen = top_n_rank(a) < n
    y = a.unsqueeze(-1) * v
    s = y[chosen].sum(0)
    dist = (y - s).norm(dim=-1)
    false_pos = int((dist[~chosen] <= dist[chosen].max()).sum())
    return n / (n + false_pos)


@pytest.mark.parametrize(
    ("gap", "float64_direct_ok"),
    [(2.0**-10, True), (2.0**-20, False)],
    ids=["moderate", "extreme"],
)
def test_float64_g_form_gets_near_ties_right(gap: float, float64_direct_ok: bool) -> None:
    # Sink key 0 (weight ~1, v = e1), key 1 (weight 2^-10, v = e2), key 2 (weight 2^-11,
    # v = (2 + gap) e2). s = y_0 + y_1 and D_2^2 = r_max^2 + (2^-11 gap)^2: key 2 lies
    # just outside the closed ball, so P_2 = 1. The difference is far below float32's
    # resolution of ||s||^2 ~ 1; the g form has no ||s||^2 term and is exact in float64.
    e = 2.0**-11
    alpha = torch.tensor([1 - 3 * e, 2 * e, e], dtype=torch.float64)
    values = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0 + gap]], dtype=torch.float64)
    ref = ref_separability(as_fractions(alpha), as_fractions(values), 2)
    assert ref["P"] == 1 and ref["R"] == 1
    assert direct_precision(alpha, values, 2, torch.float32) == pytest.approx(2 / 3)
    assert (direct_precision(alpha, values, 2, torch.float64) == 1.0) == float64_direct_ok
    res = separability(alpha, values, 2)
    assert float(res.precision) == 1.0 and float(res.recall) == 1.0
    # Below float32's g resolution too: the certified float32 path flags the row and
    # recounts it exactly, so it agrees.
    res32 = separability(alpha, values, 2, dtype=torch.float32)
    assert float(res32.precision) == 1.0 and float(res32.recall) == 1.0


def test_n1_is_perfect_except_exact_ties() -> None:
    gen = torch.Generator().manual_seed(1)
    alpha = torch.rand(5, 9, generator=gen, dtype=torch.float64).softmax(-1)
    values = torch.randn(5, 9, 3, generator=gen, dtype=torch.float64)
    res = separability(alpha, values, 1)
    assert bool(res.perfect.all())
    # Two keys with equal weight and equal value: y_1 == y_0, D_1 = 0 = r_max.
    alpha = torch.tensor([0.4, 0.4, 0.2], dtype=torch.float64)
    values = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]], dtype=torch.float64)
    res = separability(alpha, values, 1)
    assert res.selected.tolist() == [True, False, False]  # tie to the earlier position
    assert (float(res.precision), float(res.recall), float(res.f1)) == (0.5, 0.0, 0.0)


def test_perfect_iff_r_min_above_r_max() -> None:
    alpha = torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64)
    values = torch.tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0], [2.0, 1.0]], dtype=torch.float64)
    res = separability(alpha, values, [1, 2, 3])
    # N=2: y = (0, 1/2), (1/4, 0), (-1/8, 0), (1/4, 1/8); s = (1/4, 1/2);
    # D_0 = 1/4, D_1 = 1/2 = r_max; D_2 = 5/8, D_3 = 3/8 = r_min <= r_max.
    assert res.r_max[1].item() == 0.5 and res.r_min[1].item() == 0.375
    assert res.precision[1].item() == pytest.approx(2 / 3)  # D_3 in the closed ball
    assert res.recall[1].item() == 0.5  # only D_0 = 1/4 < r_min = 3/8
    # N=3 (key 2 wins the tie with key 3): D_3 = |(1/8, -3/8)| < r_max = D_2.
    assert res.perfect.tolist() == (res.r_min > res.r_max).tolist() == [True, False, False]


def test_margin_values() -> None:
    alpha = torch.tensor([0.1, 0.5, 0.1, 0.3], dtype=torch.float64)
    res = separability(alpha, torch.eye(4, dtype=torch.float64), [1, 2, 3])
    assert res.margin.tolist() == pytest.approx([0.2, 0.2, 0.0])


def test_to_frame_columns() -> None:
    alpha = torch.full((2, 3, 5), 0.2, dtype=torch.float64)
    values = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    frame = separability(alpha, values, [1, 2]).to_frame(["layer", "head"])
    assert list(frame.columns) == [
        "layer",
        "head",
        "n",
        "precision",
        "recall",
        "f1",
        "r_max",
        "r_min",
        "margin",
    ]
    assert len(frame) == 2 * 3 * 2 and sorted(set(frame["n"])) == [1, 2]
    assert list(separability(alpha, values, 3).to_frame().columns[:3]) == ["dim0", "dim1", "n"]
    rnd = random_separability(alpha, values, [1, 2], draws=3).to_frame(["layer", "head"])
    assert list(rnd.columns) == [
        "layer",
        "head",
        "n",
        "precision",
        "recall",
        "f1",
        "precision_std",
        "recall_std",
        "f1_std",
    ]
    pattern = torch.full((2, 5, 5), 0.2, dtype=torch.float64)
    q = separability_all_queries(pattern, values[0, :2], [1, 2], causal=False)
    frame = q.to_frame(["head", "query"])
    assert len(frame) == 2 * 5 * 2 and list(frame.columns[:3]) == ["head", "query", "n"]
    with pytest.raises(ValueError, match="dims has 1 names for 2 leading dims"):
        q.to_frame(["head"])


# --------------------------------------------------------------------------- random baseline


@given(dyadic_cases(), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_random_separability_matches_reference_on_same_subsets(case, draws: int, seed: int):
    alpha, values, n = case
    res = random_separability(alpha, values, n, draws=draws, seed=seed)
    assert isinstance(res, RandomSeparability) and (res.draws, res.seed) == (draws, seed)
    ranks = random_ranks(alpha.shape[:-1], alpha.shape[-1], draws=draws, seed=seed)
    ns = [n] if isinstance(n, int) else n
    scalar = isinstance(n, int)
    for idx in rows_of(alpha, tuple(alpha.shape[:-1])):
        a, v = as_fractions(alpha[idx]), as_fractions(values[idx])
        for j, nn in enumerate(ns):
            refs = [
                ref_metrics(a, v, [k for k in range(len(a)) if ranks[idx][t][k] < nn])
                for t in range(draws)
            ]
            for key, field in (("P", "precision"), ("R", "recall"), ("F", "f1")):
                per_draw = [float(r[key]) for r in refs]
                mean = per_n(getattr(res, field), scalar, j)[idx]
                std = per_n(getattr(res, f"{field}_std"), scalar, j)[idx]
                assert float(mean) == pytest.approx(statistics.fmean(per_draw), rel=1e-12)
                assert float(std) == pytest.approx(statistics.pstdev(per_draw), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("chunk", [1, 40, 200, 300, 10**9])
def test_random_counts_do_not_depend_on_the_chunking(chunk: int) -> None:
    # 1 and 40: one draw of one row at a time; 200: one row, all draws; 300: two rows.
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(5, 12, generator=gen, dtype=torch.float64).softmax(-1)
    v = torch.randn(5, 12, 3, generator=gen, dtype=torch.float64)
    rank = random_ranks((5,), 12, draws=3, seed=4)
    n = torch.tensor([1, 3, 7])
    whole = random_counts(a, v, rank, n, chunk=10**9)
    for x, y in zip(random_counts(a, v, rank, n, chunk=chunk), whole, strict=True):
        assert x.shape == (5, 3, 3) and torch.equal(x, y)


def test_random_separability_mean_by_hand() -> None:
    # L = 4, keys 1..3 identical (y_1 = y_2 = y_3), key 0 distinct; N = 1.
    # A random key 0 (prob 1/4) is perfect; a random key in 1..3 has two coincident
    # points: P = 1/3, R = 0, F = 0. E[P] = 1/4 + 3/4 * 1/3 = 1/2, E[R] = E[F] = 1/4,
    # Var[P] = (1/4 + 3/4 * 1/9) - 1/4 = 1/12.
    alpha = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    values = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    res = random_separability(alpha, values, 1, draws=4000, seed=3)
    assert res.precision.item() == pytest.approx(0.5, abs=0.02)
    assert res.recall.item() == pytest.approx(0.25, abs=0.02)
    assert res.f1.item() == pytest.approx(0.25, abs=0.02)
    assert res.precision_std.item() == pytest.approx(math.sqrt(1 / 12), abs=0.02)
    # The subsets are uniform: each key is selected with probability N/L.
    ranks = random_ranks((), 6, draws=6000, seed=0)
    freq = (ranks < 2).double().mean(0)
    assert torch.allclose(freq, torch.full((6,), 2 / 6, dtype=torch.float64), atol=0.02)


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"),
        ),
    ],
)
def test_random_ranks_are_the_same_wherever_they_are_sorted(device: str) -> None:
    here = random_ranks((3, 2), 50, draws=4, seed=11)
    there = random_ranks((3, 2), 50, draws=4, seed=11, device=device)
    assert there.device.type == device and torch.equal(there.cpu(), here)
    assert torch.equal(here.sort(-1).values, torch.arange(50).expand(3, 2, 4, 50))


def test_random_separability_is_deterministic_and_layout_independent() -> None:
    gen = torch.Generator().manual_seed(0)
    alpha = torch.randn(2, 3, 10, generator=gen, dtype=torch.float64).softmax(-1)
    values = torch.randn(2, 3, 10, 4, generator=gen, dtype=torch.float64)
    ns = [1, 3, 9]
    res = random_separability(alpha, values, ns, seed=7)
    again = random_separability(alpha, values, ns, seed=7)
    flat = random_separability(alpha.reshape(6, 10), values.reshape(6, 10, 4), ns, seed=7)
    first = random_separability(alpha[0], values[0], ns, seed=7)  # leading rows only
    other = random_separability(alpha, values, ns, seed=8)
    f32 = random_separability(alpha, values, ns, seed=7, dtype=torch.float32)
    for field in ("precision", "recall", "f1", "precision_std", "recall_std", "f1_std"):
        x = getattr(res, field)
        assert torch.equal(x, getattr(again, field))
        assert torch.equal(x.reshape(6, 3), getattr(flat, field))
        assert torch.equal(x[0], getattr(first, field))
        assert torch.allclose(x.float(), getattr(f32, field), atol=1e-6)  # same subsets
    assert not torch.equal(res.f1, other.f1)
    # Top-N is at least as separable as random at N = 1 (always perfect here).
    assert bool((separability(alpha, values, 1).f1 >= res.f1[..., 0]).all())


# --------------------------------------------------------------------------- all queries


@st.composite
def dyadic_patterns(draw: st.DrawFn):
    lead = draw(st.sampled_from([(), (2,), (2, 1)]))
    length = draw(st.integers(2, 6))
    q_len = draw(st.integers(1, length))
    d = draw(st.integers(1, 3))
    causal = draw(st.booleans())
    total = 2 ** draw(st.integers(0, 4))
    rows = math.prod(lead)
    pattern = []
    for _ in range(rows):
        for q in range(q_len):
            seen = length - q_len + q + 1 if causal else length
            pattern.append(draw(dyadic_rows(total, seen)) + [0.0] * (length - seen))
    values = [draw(small_values(length, d)) for _ in range(rows)]
    p = torch.tensor(pattern, dtype=torch.float64).reshape(*lead, q_len, length)
    v = torch.tensor(values, dtype=torch.float64).reshape(*lead, length, d)
    return p, v, draw(n_arg(length)), causal, draw(st.integers(1, 4))


def all_queries_by_loop(pattern, values, n, causal: bool) -> dict[str, torch.Tensor]:
    """Reference: one ``separability`` call per query row on its visible keys."""
    ns = [n] if isinstance(n, int) else list(n)
    q_len, length = pattern.shape[-2:]
    lead = tuple(pattern.shape[:-2])
    names = ("precision", "recall", "f1", "r_max", "r_min", "margin")
    out = {k: torch.full((*lead, q_len, len(ns)), float("nan"), dtype=torch.float64) for k in names}
    for idx in rows_of(pattern, lead):
        for q in range(q_len):
            seen = length - q_len + q + 1 if causal else length
            ok = [j for j, nn in enumerate(ns) if nn < seen]
            if not ok:
                continue
            res = separability(pattern[idx][q, :seen], values[idx][:seen], [ns[j] for j in ok])
            for k in names:
                out[k][(*idx, q)][ok] = getattr(res, k)
    return {k: v[..., 0] if isinstance(n, int) else v for k, v in out.items()}


@given(dyadic_patterns())
def test_all_queries_match_per_row_loop(case) -> None:
    pattern, values, n, causal, chunk = case
    res = separability_all_queries(pattern, values, n, causal=causal, chunk=chunk)
    assert isinstance(res, QuerySeparability)
    ref = all_queries_by_loop(pattern, values, n, causal)
    for k in ("precision", "recall", "margin"):  # exact on dyadic inputs
        assert torch.equal(getattr(res, k).isnan(), ref[k].isnan()), k
        assert torch.equal(getattr(res, k).nan_to_num(), ref[k].nan_to_num()), k
    for k in ("f1", "r_max", "r_min"):
        torch.testing.assert_close(getattr(res, k), ref[k], equal_nan=True, rtol=1e-12, atol=0)
    whole = separability_all_queries(pattern, values, n, causal=causal, chunk=64)
    for k in ("precision", "recall", "f1", "r_max", "r_min", "margin"):
        torch.testing.assert_close(getattr(res, k), getattr(whole, k), equal_nan=True)
    if pattern.shape[-2] == pattern.shape[-1]:  # every query: the streamed form
        asked: list[tuple[int, int]] = []

        def rows(start: int, stop: int) -> torch.Tensor:
            asked.append((start, stop))
            return pattern[..., start:stop, :]

        streamed = separability_all_queries_streamed(rows, values, n, causal=causal, chunk=chunk)
        assert all(stop - start <= chunk for start, stop in asked)
        assert [i for a, b in asked for i in range(a, b)] == list(range(pattern.shape[-1]))
        for k in ("precision", "recall", "f1", "r_max", "r_min", "margin"):
            torch.testing.assert_close(getattr(streamed, k), getattr(res, k), equal_nan=True)


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_all_queries_leave_out_the_n_a_chunk_cannot_have(chunk: int) -> None:
    """Chunks whose rows all see N keys or fewer skip that N (and all N: all NaN)."""
    gen = torch.Generator().manual_seed(5)
    length, ns = 7, [4, 1, 2, 6]  # row 0 sees 1 key: no N; rows 1..4: some of them
    scores = torch.randn(2, length, length, generator=gen, dtype=torch.float64)
    future = torch.arange(length) > torch.arange(length).unsqueeze(-1)
    pattern = scores.masked_fill(future, float("-inf")).softmax(-1)
    values = torch.randn(2, length, 3, generator=gen, dtype=torch.float64)
    res = separability_all_queries(pattern, values, ns, causal=True, chunk=chunk)
    ref = all_queries_by_loop(pattern, values, ns, True)
    assert res.precision[:, 0].isnan().all()
    assert not res.precision[:, 1, 1].isnan().any() and res.precision[:, 1, 2].isnan().all()
    for k, want in ref.items():
        torch.testing.assert_close(getattr(res, k), want, equal_nan=True, rtol=1e-12, atol=0)


@pytest.mark.parametrize("causal", [True, False])
def test_all_queries_on_continuous_softmax(causal: bool) -> None:
    gen = torch.Generator().manual_seed(2)
    length, q_len, ns = 12, 9, [1, 2, 4, 8]
    scores = torch.randn(2, 3, q_len, length, generator=gen, dtype=torch.float64) * 2
    scores[..., 0] += 2.0
    if causal:
        future = torch.arange(length) > torch.arange(q_len).unsqueeze(-1) + length - q_len
        scores = scores.masked_fill(future, float("-inf"))
    pattern = scores.softmax(-1)
    values = torch.randn(2, 3, length, 5, generator=gen, dtype=torch.float64)
    ref = all_queries_by_loop(pattern, values, ns, causal)
    results = [
        separability_all_queries(pattern, values, ns, causal=causal, chunk=c) for c in (1, 4, 64)
    ]
    for res in results:
        for k, want in ref.items():
            torch.testing.assert_close(getattr(res, k), want, equal_nan=True, rtol=1e-10, atol=0)
    for k in ("precision", "recall"):  # chunking does not change the counts
        assert all(
            torch.equal(getattr(r, k).nan_to_num(), getattr(results[0], k).nan_to_num())
            for r in results
        )
    expect_visible = (
        torch.arange(q_len) + length - q_len + 1 if causal else torch.full((q_len,), length)
    )
    assert results[0].visible.tolist() == expect_visible.tolist()
    if causal:  # the first row sees 4 keys: N = 4 and 8 are undefined there
        assert results[0].precision[..., 0, 2:].isnan().all()
        assert not results[0].precision[..., 0, :2].isnan().any()


def test_all_queries_validate_visible_row_sums() -> None:
    values = torch.randn(4, 2, dtype=torch.float64)
    full = torch.full((4, 4), 0.25, dtype=torch.float64)  # a non-causal pattern
    separability_all_queries(full, values, 1, causal=False)
    with pytest.raises(TlGeomError, match="sum to 1"):
        separability_all_queries(full, values, 1, causal=True)
    with pytest.raises(TlGeomError, match="5 query rows but only 4 keys"):
        separability_all_queries(torch.full((5, 4), 0.25, dtype=torch.float64), values, 1)
    with pytest.raises(TlGeomError, match="chunk must be an int >= 1"):
        separability_all_queries(full, values, 1, causal=False, chunk=0)
    with pytest.raises(TlGeomError, match="sum to 1"):  # checked chunk by chunk
        separability_all_queries_streamed(lambda a, b: full[a:b], values, 1, chunk=2)
    with pytest.raises(
        TlGeomError, match=r"rows\(3, 4\) gave shape \(1, 3, 4\), expected \(1, 1, 4\)"
    ):
        separability_all_queries_streamed(lambda a, b: full[:3], values, 1, causal=False, chunk=3)


# --------------------------------------------------------------------------- bad input


def good_input() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.full((2, 4), 0.25, dtype=torch.float64), torch.randn(2, 4, 3, dtype=torch.float64)


ALL = [
    pytest.param(lambda a, v, n: separability(a, v, n), id="separability"),
    pytest.param(lambda a, v, n: random_separability(a, v, n, draws=2), id="random"),
    pytest.param(
        lambda a, v, n: separability_all_queries(a.unsqueeze(-2), v, n, causal=False),
        id="all_queries",
    ),
]


@pytest.mark.parametrize("call", ALL)
@pytest.mark.parametrize(
    ("n", "message"),
    [
        (0, "n=0 out of range 1..3 for L=4"),
        (4, "n=4 out of range 1..3 for L=4"),
        ([1, 5], "n=5 out of range 1..3 for L=4"),
        ([], "n is an empty list"),
    ],
)
def test_bad_n(call, n, message: str) -> None:
    alpha, values = good_input()
    with pytest.raises(TlGeomError, match=re.escape(message)):
        call(alpha, values, n)
    with pytest.raises((TlGeomError, TypeCheckError)):  # wrong type: beartype answers first
        call(alpha, values, [1.5])


@pytest.mark.parametrize("call", ALL)
def test_bad_weights(call) -> None:
    alpha, values = good_input()
    negative = alpha.clone()
    negative[0, :2] = torch.tensor([0.75, -0.25])
    with pytest.raises(TlGeomError, match="negative weights"):
        call(negative, values, 1)
    with pytest.raises(TlGeomError, match=r"rows must sum to 1 within 0\.001"):
        call(alpha * (1 + 2 * ROW_SUM_ATOL), values, 1)
    call(alpha * (1 + ROW_SUM_ATOL / 2), values, 1)  # within tolerance
    for bad in (float("nan"), float("inf")):
        broken = alpha.clone()
        broken[1, 2] = bad
        with pytest.raises(TlGeomError, match="alpha holds 1 NaN/inf entries of 8"):
            call(broken, values, 1)
        broken = values.clone()
        broken[0, 0, 0] = bad
        with pytest.raises(TlGeomError, match="values holds 1 NaN/inf entries of 24"):
            call(alpha, broken, 1)


@pytest.mark.parametrize("call", ALL)
def test_bad_shapes_and_dtypes(call) -> None:
    alpha, values = good_input()
    with pytest.raises((TlGeomError, TypeCheckError)):
        call(alpha, values[:, :3], 1)
    with pytest.raises((TlGeomError, TypeCheckError)):
        call(alpha, values[:1], 1)
    with pytest.raises((TlGeomError, TypeCheckError)):
        call((alpha * 4).long(), values, 1)
    with pytest.raises((TlGeomError, TypeCheckError)):
        call(alpha, values.long(), 1)


def test_check_messages() -> None:
    """The TlGeomError path behind jaxtyping's shape/dtype checks."""
    alpha, values = good_input()
    with pytest.raises(TlGeomError, match=r"shapes disagree: alpha \(2, 4\) needs values"):
        check_values(alpha, values[:, :3])
    with pytest.raises(
        TlGeomError, match=r"values must be a floating tensor, got dtype torch\.int64"
    ):
        check_values(alpha, values.long())
    with pytest.raises(
        TlGeomError, match=r"alpha must be a floating tensor, got dtype torch\.int64"
    ):
        check_weights(alpha.long())
    with pytest.raises(TlGeomError, match=r"shapes disagree: pattern \(2, 1, 4\) needs values"):
        all_queries._check_pattern(alpha.unsqueeze(1), values[:, :3])
    with pytest.raises(TlGeomError, match="pattern must be"):
        all_queries._check_pattern(alpha[0], values[0])
    with pytest.raises(TlGeomError, match="draws must be an int >= 1, got 0"):
        random_separability(alpha, values, 1, draws=0)
    assert check_n([3, 1], 4) == (3, 1)
    with pytest.raises(TlGeomError, match="n must be ints, got True"):
        check_n(True, 4)
    assert issubclass(TlGeomError, ValueError)
