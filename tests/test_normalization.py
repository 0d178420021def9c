"""normalization.md: cumulative distance, N_s/N, KS critical N, softmax bounds and Jacobian.

Every fast path is compared with a slow literal reference (Python loops, float64).
Stated bounds are checked numerically; a bound that fails is pinned by asserting its
counterexample.
"""

import itertools
import math
import warnings

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from jaxtyping import TypeCheckError

from tl_geom.errors import TlGeomError
from tl_geom.geometry.top_n import separability
from tl_geom.normalization.distinguishability import (
    critical_n,
    cumulative_distance,
    distinguishability,
    random_cumulative_distance,
)
from tl_geom.normalization.ks import ks_two_sample
from tl_geom.normalization.softmax_bounds import (
    gradient_norm_bound,
    gradient_row_bound,
    gradient_sensitivity,
    jacobian_entry_bound,
    jacobian_spectral_bound,
    saturation_share,
    softmax_jacobian,
    softmax_weight_bounds,
)
from tl_geom.normalization.tables import (
    critical_n_vs_length,
    distance_vs_length,
    distance_vs_n,
    distinguishability_vs_n,
    truncate_windows,
)

BAD_INPUT = (TlGeomError, TypeCheckError)  # jaxtyping rejects some shapes first in tests
FP = 1e-12  # relative slack for float64 rounding at a tight bound (not a loosened bound)


# ---------------------------------------------------------------- slow literal references


def ref_top(alpha: list[float], n: int) -> list[int]:
    """Indices of the n largest weights, ties to the earlier position."""
    return sorted(range(len(alpha)), key=lambda i: (-alpha[i], i))[:n]


def ref_distance(alpha: list[float], x: list[list[float]], sel: list[int], form: str) -> float:
    dim = len(x[0])
    y = [[alpha[i] * x[i][k] for k in range(dim)] for i in range(len(alpha))]
    s = [sum(y[i][k] for i in sel) for k in range(dim)]
    rest = [i for i in range(len(alpha)) if i not in sel]
    if form == "sum":
        total = 0.0
        for i in rest:
            total += math.sqrt(sum((y[i][k] - s[k]) ** 2 for k in range(dim)))
        return total
    acc = [0.0] * dim
    for i in rest:
        for k in range(dim):
            acc[k] += y[i][k] - s[k]
    return math.sqrt(sum(c * c for c in acc))


def ref_rows(alpha: torch.Tensor, values: torch.Tensor):
    """Iterate (index, alpha row, values row) over the leading dims, as Python lists."""
    lead = alpha.shape[:-1]
    for idx in itertools.product(*[range(s) for s in lead]):
        yield idx, alpha[idx].tolist(), values[idx].tolist()


def ref_cumulative(alpha, values, ns, form):
    out = torch.zeros((*alpha.shape[:-1], len(ns)), dtype=torch.float64)
    for idx, a, x in ref_rows(alpha, values):
        for k, n in enumerate(ns):
            out[(*idx, k)] = ref_distance(a, x, ref_top(a, n), form)
    return out


def ref_ks(x1: list[float], x2: list[float]) -> float:
    """sup |F1 - F2| by definition, evaluated at every pooled point."""
    d = 0.0
    for t in x1 + x2:
        f1 = sum(v <= t for v in x1) / len(x1)
        f2 = sum(v <= t for v in x2) / len(x2)
        d = max(d, abs(f1 - f2))
    return d


def ref_ks_pvalue(m: int, n: int, d: float) -> float:
    """P(D >= d) under H0 by enumerating all C(m+n, m) lattice paths (small m + n)."""
    hits = total = 0
    for right in itertools.combinations(range(m + n), m):
        i = j = 0
        worst = 0.0
        steps = set(right)
        for t in range(m + n):
            if t in steps:
                i += 1
            else:
                j += 1
            worst = max(worst, abs(i / m - j / n))
        total += 1
        hits += worst >= d - 1e-12
    return hits / total


# ---------------------------------------------------------------- strategies


@st.composite
def weighted_values(draw, max_len: int = 7):
    """Integer-valued weights (ties, zeros) and values (duplicates), batched shapes."""
    lead = draw(st.sampled_from([(), (2,), (2, 3)]))
    length = draw(st.integers(2, max_len))
    dim = draw(st.integers(1, 3))
    rows = math.prod(lead)
    w = draw(st.lists(st.integers(0, 4), min_size=rows * length, max_size=rows * length))
    w_t = torch.tensor(w, dtype=torch.float64).reshape(*lead, length)
    w_t[..., 0] += (w_t.sum(-1) == 0).double()  # no all-zero row
    alpha = w_t / w_t.sum(-1, keepdim=True)
    nv = rows * length * dim
    v = draw(st.lists(st.integers(-2, 2), min_size=nv, max_size=nv))
    values = torch.tensor(v, dtype=torch.float64).reshape(*lead, length, dim)
    ns = draw(
        st.one_of(
            st.integers(1, length - 1),
            st.lists(st.integers(1, length - 1), min_size=1, max_size=4),
        )
    )
    return alpha, values, ns


# ---------------------------------------------------------------- cumulative distance


@given(weighted_values(), st.sampled_from(["sum", "norm"]))
def test_cumulative_distance_matches_reference(case, form):
    alpha, values, n = case
    ns = [n] if isinstance(n, int) else n
    ref = ref_cumulative(alpha, values, ns, form)
    ref = ref[..., 0] if isinstance(n, int) else ref
    got = cumulative_distance(alpha, values, n, form=form)
    assert got.shape == ref.shape
    scale = 1.0 + float(values.abs().max())
    # g-path sum form: clamped ||s||^2 - g loses up to sqrt(eps) ||s|| per term
    atol = 1e-6 * scale * alpha.shape[-1] if form == "sum" else 1e-12 * scale
    torch.testing.assert_close(got, ref, rtol=0, atol=atol)
    if form == "sum":
        direct = cumulative_distance(alpha, values, n, form=form, direct=True)
        torch.testing.assert_close(direct, ref, rtol=0, atol=1e-12 * scale)


@pytest.mark.parametrize("form", ["sum", "norm"])
def test_cumulative_distance_extreme_n_and_float32_input(form):
    alpha = torch.softmax(torch.randn(3, 9), -1)
    values = torch.randn(3, 9, 4)
    for n in (1, 8):  # N = 1 and N = L - 1
        ref = ref_cumulative(alpha.double(), values.double(), [n], form)[..., 0]
        got = cumulative_distance(alpha, values, n, form=form)
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)


def test_cumulative_distance_cancellation_is_clamped():
    # Tied weights, duplicated values: at N = 1 the non-selected twin coincides with s.
    alpha = torch.tensor([0.3, 0.3, 0.2, 0.2], dtype=torch.float64)
    x = torch.tensor([[1 / 3, 2 / 7, 1e8], [1 / 3, 2 / 7, 1e8], [0.1, 0.2, 0.3], [1, 1, 1]])
    got = cumulative_distance(alpha, x.double(), 1)
    direct = cumulative_distance(alpha, x.double(), 1, direct=True)
    ref = ref_distance(alpha.tolist(), x.double().tolist(), [0], "sum")
    assert not math.isnan(float(got))
    assert abs(float(direct) - ref) <= 1e-12 * ref
    s_norm = 0.3 * float(x[0].double().norm())
    assert abs(float(got) - ref) <= 2e-8 * s_norm  # documented error of the g path


def test_cumulative_distance_batched_equals_rowwise():
    alpha = torch.softmax(torch.randn(2, 3, 4, 10, dtype=torch.float64), -1)
    values = torch.randn(2, 3, 4, 10, 5, dtype=torch.float64)
    got = cumulative_distance(alpha, values, [1, 3, 9])
    assert got.shape == (2, 3, 4, 3)
    for idx in itertools.product(range(2), range(3), range(4)):
        row = cumulative_distance(alpha[idx], values[idx], [1, 3, 9])
        torch.testing.assert_close(got[idx], row, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- random-N baseline


def all_subset_distances(a, x, n, form):
    return [ref_distance(a, x, list(c), form) for c in itertools.combinations(range(len(a)), n)]


@given(weighted_values(max_len=6), st.sampled_from(["sum", "norm"]))
def test_random_distance_each_draw_is_a_subset_distance(case, form):
    alpha, values, n = case
    ns = [n] if isinstance(n, int) else n
    got = random_cumulative_distance(alpha, values, ns, draws=3, reduce="none", form=form)
    assert got.shape == (*alpha.shape[:-1], 3, len(ns))
    for idx, a, x in ref_rows(alpha, values):
        for k, nk in enumerate(ns):
            options = torch.tensor(all_subset_distances(a, x, nk, form))
            for draw in range(3):
                assert float((options - got[(*idx, draw, k)]).abs().min()) < 1e-6


def test_random_distance_mean_matches_exact_expectation():
    alpha = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.06, 0.04], dtype=torch.float64)
    values = torch.randn(6, 3, dtype=torch.float64)
    a, x = alpha.tolist(), values.tolist()
    got = random_cumulative_distance(alpha, values, [1, 2, 4], draws=4000, seed=3)
    for k, n in enumerate([1, 2, 4]):
        opts = np.array(all_subset_distances(a, x, n, "sum"))
        sem = opts.std() / math.sqrt(4000)
        assert abs(float(got[k]) - opts.mean()) < 5 * sem + 1e-12


def test_random_distance_seeded_and_mean_of_draws():
    alpha = torch.softmax(torch.randn(4, 12, dtype=torch.float64), -1)
    values = torch.randn(4, 12, 3, dtype=torch.float64)
    a = random_cumulative_distance(alpha, values, 5, seed=1)
    b = random_cumulative_distance(alpha, values, 5, seed=1)
    c = random_cumulative_distance(alpha, values, 5, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    per = random_cumulative_distance(alpha, values, 5, seed=1, reduce="none")
    assert per.shape == (4, 16)
    torch.testing.assert_close(per.mean(-1), a)


def test_top_n_is_below_random_on_peaked_attention():
    # Sanity of direction (not a theorem): concentrated weights, top-N closer to s.
    alpha = torch.softmax(3 * torch.randn(64, 32, dtype=torch.float64), -1)
    values = torch.randn(64, 32, 8, dtype=torch.float64)
    top = cumulative_distance(alpha, values, 4).mean()
    rnd = random_cumulative_distance(alpha, values, 4).mean()
    assert top > rnd  # s of the top set is large, so everything else is far from it


# ---------------------------------------------------------------- distinguishability


@given(weighted_values())
def test_distinguishability_is_geometry_recall(case):
    alpha, values, n = case
    got = distinguishability(alpha, values, n)
    torch.testing.assert_close(got, separability(alpha, values, n).recall)
    ns = [n] if isinstance(n, int) else n
    for idx, a, x in ref_rows(alpha, values):
        for k, nk in enumerate(ns):
            sel = ref_top(a, nk)
            y = np.array(a)[:, None] * np.array(x)
            s = y[sel].sum(0)
            dist = np.linalg.norm(y - s, axis=1)
            r = min(dist[i] for i in range(len(a)) if i not in sel)
            n_s = sum(dist[i] < r for i in sel)
            val = got[idx] if isinstance(n, int) else got[(*idx, k)]
            # exact-tie rows may differ in the last bit between g and direct distances
            close = any(abs(dist[i] - r) < 1e-9 for i in sel)
            assert close or float(val) == n_s / nk


# ---------------------------------------------------------------- KS test


@given(
    st.lists(st.integers(0, 6), min_size=1, max_size=25),
    st.lists(st.integers(0, 6), min_size=1, max_size=25),
)
def test_ks_matches_scipy_with_ties(x1, x2):
    res = ks_two_sample(
        torch.tensor(x1, dtype=torch.float64), torch.tensor(x2, dtype=torch.float64)
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ref = scipy.stats.ks_2samp(x1, x2, method="exact")
    assert float(res.statistic) == pytest.approx(ref.statistic, abs=1e-15)
    assert float(res.statistic) == pytest.approx(ref_ks(x1, x2), abs=1e-15)
    # scipy falls back to the asymptotic p (with a warning) where its exact series
    # rounds outside [0, 1], e.g. m = n, D = 1/n; compare there with enumeration only.
    scipy_exact = not any("Exact calculation unsuccessful" in str(w.message) for w in caught)
    if scipy_exact:
        assert float(res.pvalue) == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-14)
    if len(x1) + len(x2) <= 14:
        ref_p = ref_ks_pvalue(len(x1), len(x2), float(res.statistic))
        assert float(res.pvalue) == pytest.approx(ref_p, rel=1e-9, abs=1e-14)


@pytest.mark.parametrize(
    ("m", "n"), [(144, 144), (120, 300), (37, 53), (1, 1), (400, 50), (60, 60)]
)
def test_ks_matches_scipy_continuous_batched(m, n):
    gen = np.random.default_rng(m * 1000 + n)
    x1 = gen.normal(size=(4, m))
    x2 = gen.normal(loc=[[0.0], [0.3], [1.0], [10.0]], size=(4, n))  # last: D = 1, tiny p
    res = ks_two_sample(torch.tensor(x1), torch.tensor(x2))
    for b in range(4):
        ref = scipy.stats.ks_2samp(x1[b], x2[b], method="exact")
        assert float(res.statistic[b]) == pytest.approx(ref.statistic, abs=1e-15)
        assert float(res.pvalue[b]) == pytest.approx(ref.pvalue, rel=1e-9, abs=0)


# ---------------------------------------------------------------- critical N


def test_critical_n_pvalues_match_scipy_and_rule():
    alpha = torch.softmax(2 * torch.randn(40, 24, dtype=torch.float64), -1)
    values = torch.randn(40, 24, 4, dtype=torch.float64)
    ns = [16, 1, 2, 4, 8, 20]
    res = critical_n(alpha, values, ns, draws=2, seed=5)
    assert res.ns == (1, 2, 4, 8, 16, 20)
    top = cumulative_distance(alpha, values, list(res.ns))
    rnd = random_cumulative_distance(alpha, values, list(res.ns), draws=2, seed=5, reduce="none")
    for k in range(len(res.ns)):
        ref = scipy.stats.ks_2samp(
            top[:, k].numpy(), rnd[:, :, k].flatten().numpy(), method="exact"
        )
        assert float(res.pvalue[k]) == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-14)
        assert float(res.statistic[k]) == pytest.approx(ref.statistic, abs=1e-15)
    keep = [n for n, p in zip(res.ns, res.pvalue.tolist(), strict=True) if p >= 0.01]
    assert res.n == (keep[0] if keep else None)
    frame = res.to_frame()
    assert list(frame.columns) == ["n", "statistic", "pvalue", "rejects"]


def test_critical_n_never_and_always_rejects():
    # Identical values and uniform weights: every subset has the same d~, D = 0, p = 1.
    alpha = torch.full((30, 10), 0.1, dtype=torch.float64)
    values = torch.ones(30, 10, 2, dtype=torch.float64)
    res = critical_n(alpha, values, [2, 5, 8])
    assert res.n == 2 and not bool(res.rejects.any())
    # One dominant key per row: top-N d~ is far from random-N d~ at every small N.
    logits = torch.full((60, 32), -8.0, dtype=torch.float64)
    logits[:, 5] = 8.0
    alpha = torch.softmax(logits, -1)
    values = torch.randn(60, 32, 4, dtype=torch.float64)
    res = critical_n(alpha, values, [1])
    assert res.n is None and bool(res.rejects.all())


# ---------------------------------------------------------------- experiment tables


def test_experiment_tables():
    alpha = torch.softmax(torch.randn(2, 3, 64, dtype=torch.float64), -1)
    values = torch.randn(2, 3, 64, 4, dtype=torch.float64)
    df = distance_vs_n(alpha, values, [1, 5, 20], draws=4)
    assert list(df.columns) == ["n", "d_top", "d_top_std", "d_random", "d_random_std"]
    top = cumulative_distance(alpha, values, [1, 5, 20])
    np.testing.assert_allclose(df["d_top"], top.reshape(-1, 3).mean(0).numpy())

    by_len = distance_vs_length((alpha, values), [16, 32, 64], n=5, draws=2)
    assert by_len["length"].tolist() == [16, 32, 64]
    a16, v16 = truncate_windows(alpha, values, 16)
    torch.testing.assert_close(a16.sum(-1), torch.ones(2, 3, dtype=torch.float64))
    assert by_len["d_top"][0] == pytest.approx(float(cumulative_distance(a16, v16, 5).mean()))

    calls = []

    def windows(length):
        calls.append(length)
        return torch.softmax(torch.randn(5, length, dtype=torch.float64), -1), torch.randn(
            5, length, 3, dtype=torch.float64
        )

    assert len(distance_vs_length(windows, [8, 16], n=2, draws=2)) == 2 and calls == [8, 16]

    dist = distinguishability_vs_n(alpha, values, [1, 2, 8])
    np.testing.assert_allclose(
        dist["ns_over_n"], distinguishability(alpha, values, [1, 2, 8]).reshape(-1, 3).mean(0)
    )
    crit = critical_n_vs_length((alpha, values), [16, 64], [1, 2, 4, 8, 32])
    assert list(crit.columns) == ["length", "critical_n", "critical_fraction", "grid_max"]
    assert crit["grid_max"].tolist() == [8, 32]


# ---------------------------------------------------------------- softmax bounds


@pytest.mark.parametrize("temperature", [0.05, 0.3, 1.0, 7.0])
@pytest.mark.parametrize("length", [2, 17, 512])
def test_softmax_weight_bounds_hold(temperature, length):
    delta = 1.5
    z = (torch.rand(200, length, dtype=torch.float64) * 2 - 1) * delta
    z[:, 0] = delta  # extremes included
    z[:, 1] = -delta
    a = torch.softmax(z / temperature, -1)
    lo, hi = softmax_weight_bounds(length, delta, temperature)
    assert float(a.min()) >= lo * (1 - FP)
    assert float(a.max()) <= hi * (1 + FP)
    # the bound is tight in the exponent only as L -> 1; at Delta = 0 it is exact
    assert softmax_weight_bounds(length, 0.0, temperature) == pytest.approx((1 / length,) * 2)


def test_softmax_weight_bounds_overflow_is_inf():
    lo, hi = softmax_weight_bounds(10, 1e4, 0.01)
    assert lo == 0.0 and hi == math.inf


def random_and_adversarial_logits():
    gen = torch.Generator().manual_seed(11)
    cases = [torch.randn(50, 12, generator=gen, dtype=torch.float64) * s for s in (0.1, 1, 10)]
    two_equal = torch.full((1, 12), -30.0, dtype=torch.float64)
    two_equal[0, [3, 7]] = 30.0  # two equal large logits: a ~ (1/2, 1/2)
    cases.append(two_equal)
    cases.append(torch.tensor([[0.0, 0.0]], dtype=torch.float64))
    return cases


@pytest.mark.parametrize("temperature", [0.01, 0.1, 1.0, 5.0])
def test_jacobian_matches_autograd(temperature):
    for z in random_and_adversarial_logits():
        jac = softmax_jacobian(z, temperature)
        for b in range(min(z.shape[0], 5)):
            ref = torch.autograd.functional.jacobian(
                lambda u: torch.softmax(u / temperature, -1), z[b]
            )
            torch.testing.assert_close(jac[b], ref, rtol=1e-12, atol=1e-12)
    batched = softmax_jacobian(torch.randn(2, 3, 5), 0.5)
    assert batched.shape == (2, 3, 5, 5) and batched.dtype == torch.float64


@pytest.mark.parametrize("temperature", [0.01, 0.1, 1.0, 5.0])
def test_jacobian_bounds_that_hold(temperature):
    for z in random_and_adversarial_logits():
        jac = softmax_jacobian(z, temperature)
        entry = float(jac.abs().amax())
        spectral = float(torch.linalg.matrix_norm(jac, ord=2).amax())
        row = float(torch.linalg.vector_norm(jac, dim=-1).amax())
        assert entry <= jacobian_entry_bound(temperature) * (1 + FP)
        assert spectral <= jacobian_spectral_bound(temperature) * (1 + FP)
        assert row <= gradient_row_bound(temperature) * (1 + FP)
    # all three are attained at two equal logits
    jac = softmax_jacobian(torch.tensor([0.0, 0.0]), temperature)
    assert float(jac.abs().amax()) == pytest.approx(jacobian_entry_bound(temperature), rel=1e-12)
    spectral = float(torch.linalg.matrix_norm(jac, ord=2))
    assert spectral == pytest.approx(jacobian_spectral_bound(temperature), rel=1e-12)
    row = float(torch.linalg.vector_norm(jac, dim=-1).amax())
    assert row == pytest.approx(gradient_row_bound(temperature), rel=1e-12)


def test_paper_gradient_norm_bound_fails_counterexample():
    """Pins the status: min{1/(4T), sqrt 2} fails for every norm of the Jacobian tried."""
    z = torch.tensor([0.0, 0.0], dtype=torch.float64)
    jac = softmax_jacobian(z, 1.0)
    bound = gradient_norm_bound(1.0)  # 0.25
    assert float(torch.linalg.matrix_norm(jac, ord=2)) == pytest.approx(0.5)
    assert float(torch.linalg.matrix_norm(jac)) == pytest.approx(0.5)  # Frobenius
    assert float(torch.linalg.vector_norm(jac, dim=-1).amax()) == pytest.approx(math.sqrt(2) / 4)
    assert float(torch.linalg.vector_norm(jac, dim=-1).amax()) > bound
    jac = softmax_jacobian(z, 0.01)  # the sqrt 2 branch
    assert gradient_norm_bound(0.01) == math.sqrt(2)
    assert float(jac.abs().amax()) == pytest.approx(25.0) and 25.0 > math.sqrt(2)
    assert float(torch.linalg.matrix_norm(jac, ord=2)) == pytest.approx(50.0)


# ---------------------------------------------------------------- gradient sensitivity


def test_gradient_sensitivity_table_and_limit():
    z = torch.randn(8, 64, dtype=torch.float64)
    df = gradient_sensitivity(z, [0.05, 1.0], [1e-6, 1e-1], draws=4)
    assert list(df.columns) == [
        "temperature", "eps", "change", "sensitivity", "jacobian", "jacobian_at", "capped"
    ]  # fmt: skip
    assert len(df) == 4
    small = df[df["eps"] == 1e-6]
    np.testing.assert_allclose(small["sensitivity"], small["jacobian"], rtol=1e-4)
    np.testing.assert_allclose(small["jacobian_at"], small["jacobian"], rtol=1e-4)
    assert not df["capped"].any()
    big = torch.randn(64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    capped = gradient_sensitivity(big, [0.01], [10.0], draws=4)  # change near its cap 2
    assert capped["capped"].all() and (capped["sensitivity"] <= 2 / 10.0).all()
    again = gradient_sensitivity(z, [0.05, 1.0], [1e-6, 1e-1], draws=4)
    assert df.equals(again)


def test_gradient_sensitivity_matches_loop_reference():
    z = torch.randn(3, 7, dtype=torch.float64)
    temps, eps = [0.1, 2.0], [0.01, 3.0]
    df = gradient_sensitivity(z, temps, eps, draws=2, seed=4)
    gen = torch.Generator().manual_seed(4)
    xis = [torch.randn(3, 7, generator=gen, dtype=torch.float64) for _ in range(2)]
    for t in temps:
        for e in eps:
            tot = 0.0
            for xi in xis:
                for r in range(3):
                    p = torch.softmax((z[r] + e * xi[r]) / t, -1)
                    q = torch.softmax(z[r] / t, -1)
                    tot += float((p - q).abs().sum())
            row = df[(df["temperature"] == t) & (df["eps"] == e)]
            assert float(row["change"].iloc[0]) == pytest.approx(tot / 6, rel=1e-12)
            jac = 0.0  # the explicit Jacobian at the perturbed logits, times the same xi
            for xi in xis:
                for r in range(3):
                    big_j = softmax_jacobian(z[r] + e * xi[r], t)
                    jac += float((big_j @ xi[r]).abs().sum())
            assert float(row["jacobian_at"].iloc[0]) == pytest.approx(jac / 6, rel=1e-10)


def _slow_saturation(rows: list[list[float]], t: float) -> float:
    hits = 0
    for row in rows:
        a, b = sorted(row, reverse=True)[:2]
        hits += (a - b) > t * math.log(len(row))
    return hits / len(rows)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.lists(st.floats(-30, 30), min_size=6, max_size=6), min_size=1, max_size=5),
    st.floats(0.01, 5.0),
    st.floats(-100, 100),
)
def test_saturation_share_reference_and_shift_invariance(rows, t, c):
    z = torch.tensor(rows, dtype=torch.float64)
    got = saturation_share(z, t)
    assert got == pytest.approx(_slow_saturation(rows, t))
    gaps = z.topk(2, -1).values
    near = ((gaps[:, 0] - gaps[:, 1]) - t * math.log(6)).abs() < 1e-9 * (1 + abs(c))
    if not bool(near.any()):  # away from the boundary a constant shift changes nothing
        assert saturation_share(z + c, t) == got


# ---------------------------------------------------------------- bad input


def test_bad_input():
    alpha = torch.softmax(torch.randn(2, 6), -1)
    values = torch.randn(2, 6, 3)
    for n in (0, 6, [1, 7], [], 2.5, True):
        with pytest.raises(BAD_INPUT):
            cumulative_distance(alpha, values, n)  # type: ignore[arg-type]
    with pytest.raises(BAD_INPUT):
        cumulative_distance(alpha, torch.randn(2, 5, 3), 2)
    with pytest.raises(BAD_INPUT):
        cumulative_distance(alpha, torch.randn(3, 6, 3), 2)
    neg = alpha.clone()
    neg[0, 0] = -0.1
    with pytest.raises(TlGeomError, match="negative"):
        cumulative_distance(neg, values, 2)
    with pytest.raises(TlGeomError, match="sum to 1"):
        cumulative_distance(alpha * 2, values, 2)
    nan = alpha.clone()
    nan[1, 2] = float("nan")
    with pytest.raises(TlGeomError, match="NaN"):
        random_cumulative_distance(nan, values, 2)
    bad_v = values.clone()
    bad_v[0, 0, 0] = float("inf")
    with pytest.raises(TlGeomError, match="NaN"):
        cumulative_distance(alpha, bad_v, 2)
    with pytest.raises(BAD_INPUT, match="form"):
        cumulative_distance(alpha, values, 2, form="max")  # type: ignore[arg-type]
    with pytest.raises(TlGeomError, match="draws"):
        random_cumulative_distance(alpha, values, 2, draws=0)
    with pytest.raises(BAD_INPUT, match="reduce"):
        random_cumulative_distance(alpha, values, 2, reduce="sum")  # type: ignore[arg-type]
    with pytest.raises(TlGeomError, match="level"):
        critical_n(alpha, values, [1, 2], level=1.5)
    with pytest.raises(TlGeomError, match="length"):
        truncate_windows(alpha, values, 7)
    with pytest.raises(BAD_INPUT):
        ks_two_sample(torch.zeros(2, 0), torch.zeros(2, 3))
    with pytest.raises(TlGeomError, match="NaN"):
        ks_two_sample(torch.tensor([1.0, float("nan")]), torch.tensor([1.0]))
    for t in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(TlGeomError, match="temperature"):
            softmax_jacobian(torch.randn(4), t)
        with pytest.raises(TlGeomError, match="temperature"):
            jacobian_spectral_bound(t)
        with pytest.raises(TlGeomError, match="temperature"):
            softmax_weight_bounds(4, 1.0, t)
        with pytest.raises(TlGeomError, match="temperature"):
            gradient_sensitivity(torch.randn(4), [1.0, t])
    with pytest.raises(TlGeomError, match="eps"):
        gradient_sensitivity(torch.randn(4), [1.0], [0.0])
    with pytest.raises(TlGeomError, match="delta"):
        softmax_weight_bounds(4, -1.0, 1.0)
    with pytest.raises(TlGeomError, match="NaN"):
        softmax_jacobian(torch.tensor([0.0, float("nan")]), 1.0)
