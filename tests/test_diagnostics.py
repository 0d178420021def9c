"""Diagnostics of the empirical assumptions, each against a slow literal reference."""

import itertools
import math
from fractions import Fraction

import pytest
import scipy.stats
import torch
from hypothesis import given
from hypothesis import strategies as st

from tl_geom.errors import TlGeomError
from tl_geom.geometry.decay import BETA_GRID, cosine_decay
from tl_geom.geometry.diagnostics import (
    attention_entropy,
    norm_cv_positions,
    norm_stability,
    sink_mass,
    sink_recall_correlation,
    sink_similarity,
    spearman,
)
from tl_geom.geometry.profile import attention_profile
from tl_geom.geometry.simulation import sample_values

# ---------------------------------------------------------------- references


def ref_cos(u: torch.Tensor, w: torch.Tensor) -> float:
    nu, nw = float(u.norm()), float(w.norm())
    return 0.0 if nu == 0 or nw == 0 else float(torch.dot(u, w)) / (nu * nw)


def ref_norm_stability(v: torch.Tensor, sink: int) -> tuple[float, float]:
    norms = [float(x.norm()) for x in v]
    rest = [x for i, x in enumerate(norms) if i != sink]
    mean = sum(rest) / len(rest)
    var = sum((x - mean) ** 2 for x in rest) / len(rest)
    return math.sqrt(var) / mean, norms[sink] / mean


def ref_cosine_decay(v: torch.Tensor, max_lag: int, sink: int | None, z: float):
    """Mean cosine per lag, pair counts and the leading run of lags above the floor."""
    length, d = v.shape
    keep = [i for i in range(length) if i != sink]
    means, counts = [], []
    for k in range(max_lag + 1):
        cs = [ref_cos(v[i], v[i + k]) for i in keep if i + k in keep]
        means.append(sum(cs) / len(cs) if cs else 0.0)
        counts.append(len(cs))
    run = 0
    for k in range(1, max_lag + 1):
        if counts[k] == 0 or means[k] <= z / math.sqrt(d * counts[k]):
            break
        run = k
    return means, counts, run


def ref_decay_fit(means, counts, run, beta):
    """Closed-form best plateau c at this beta and the weighted SSE, literally."""
    pts = [(k, means[k], counts[k]) for k in range(1, run + 1)]
    sxy = sum(w * (1 - math.exp(-beta * k)) * (m - math.exp(-beta * k)) for k, m, w in pts)
    sxx = sum(w * (1 - math.exp(-beta * k)) ** 2 for k, m, w in pts)
    c = min(1.0, max(-1.0, sxy / sxx)) if sxx > 0 else 0.0
    sse = sum(w * (m - c - (1 - c) * math.exp(-beta * k)) ** 2 for k, m, w in pts)
    return c, sse


def ref_units(length: int, bins: int) -> list[int]:
    nb = min(bins, length - 1)
    return [0] + [
        1 + math.floor(Fraction((length - 1) * b, nb) + Fraction(1, 2)) for b in range(nb + 1)
    ]


def ref_sse(a: list[float], cps: tuple[int, ...]) -> float:
    bounds = [0, *cps, len(a)]
    total = 0.0
    for lo, hi in itertools.pairwise(bounds):
        seg = a[lo:hi]
        mean = sum(seg) / len(seg)
        total += sum((x - mean) ** 2 for x in seg)
    return total


def ref_best_segmentation(a: list[float], bins: int) -> float:
    """Smallest 4-segment SSE over all change points at unit edges (brute force)."""
    edges = ref_units(len(a), bins)[1:-1]
    return min(ref_sse(a, cps) for cps in itertools.combinations(edges, 3))


# ---------------------------------------------------------------- strategies


@st.composite
def value_cases(draw, min_len: int = 3):
    lead = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    length = draw(st.integers(min_len, 10))
    d = draw(st.integers(1, 6))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    if draw(st.booleans()):  # integer values: ties, zero vectors, exact opposites
        v = torch.randint(-2, 3, (*lead, length, d), generator=gen).double()
    else:
        v = torch.randn((*lead, length, d), generator=gen, dtype=torch.float64)
        v = v * torch.rand((*lead, length, 1), generator=gen, dtype=torch.float64)
    return v


@st.composite
def weight_cases(draw, min_len: int = 4):
    lead = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    length = draw(st.integers(min_len, 12))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    if draw(st.booleans()):
        w = torch.randint(0, 4, (*lead, length), generator=gen).double()
        w[..., 0] += (w.sum(-1) == 0).double()
    else:
        w = torch.rand((*lead, length), generator=gen, dtype=torch.float64) ** 3
    return w / w.sum(-1, keepdim=True)


def flat(x: torch.Tensor, tail: int = 0) -> torch.Tensor:
    return x.reshape(-1, *x.shape[x.ndim - tail :]) if tail else x.reshape(-1)


# ---------------------------------------------------------------- 1. norms


@given(value_cases(), st.data())
def test_norm_stability_matches_reference(v, data) -> None:
    sink = data.draw(st.integers(0, v.shape[-2] - 1))
    res = norm_stability(v, sink=sink)
    assert res.cv.shape == v.shape[:-2]
    for r, rows in enumerate(flat(v, 2)):
        norms = rows.norm(dim=-1)
        if float(norms[torch.arange(len(norms)) != sink].mean()) == 0:
            assert math.isnan(flat(res.cv)[r]) and not bool(flat(res.holds)[r])
            continue
        cv, lam = ref_norm_stability(rows, sink)
        assert flat(res.cv)[r].item() == pytest.approx(cv, rel=1e-9, abs=1e-12)
        assert flat(res.lam)[r].item() == pytest.approx(lam, rel=1e-9, abs=1e-12)
        assert bool(flat(res.holds)[r]) == (cv <= 0.1 and lam < 0.5)


def test_norm_stability_synthetic() -> None:
    gen = torch.Generator().manual_seed(0)
    good = sample_values(64, 32, cv=0.03, lam=0.2, samples=4, generator=gen)
    res = norm_stability(good)
    assert torch.all(res.holds) and torch.allclose(res.lam, torch.tensor(0.2).double())
    noisy = sample_values(64, 32, cv=0.5, lam=0.2, samples=4, generator=gen)
    assert not torch.any(norm_stability(noisy).stable)
    loud_sink = sample_values(64, 32, cv=0.03, lam=1.0, samples=4, generator=gen)
    res = norm_stability(loud_sink)
    assert torch.all(res.stable) and not torch.any(res.compressed)
    assert torch.all(norm_stability(noisy, cv_max=1.0).stable)


@given(st.integers(1, 5), st.integers(3, 8), st.integers(0, 2**31 - 1), st.data())
def test_norm_cv_positions_matches_reference(w, length, seed, data) -> None:
    gen = torch.Generator().manual_seed(seed)
    norms = torch.rand(w, 2, length, generator=gen, dtype=torch.float64) + 0.1
    sink = data.draw(st.integers(0, length - 1))
    res = norm_cv_positions(norms, sink=sink)
    for h in range(2):
        cols = [[float(norms[x, h, i]) for x in range(w)] for i in range(length) if i != sink]
        mu = [sum(c) / w for c in cols]
        mubar = sum(mu) / len(mu)
        var_pos = sum((m - mubar) ** 2 for m in mu) / len(mu)
        if w < 2:
            assert math.isnan(res.cv[h]) and math.isnan(res.cv_raw[h])
            continue
        s2 = [sum((x - m) ** 2 for x in c) / (w - 1) for c, m in zip(cols, mu, strict=True)]
        part = max(0.0, var_pos - sum(s2) / len(s2) / w)
        assert res.cv_raw[h].item() == pytest.approx(math.sqrt(var_pos) / mubar, rel=1e-9)
        assert res.cv[h].item() == pytest.approx(math.sqrt(part) / mubar, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("cv_pos", [0.0, 0.02, 0.05])
def test_norm_cv_positions_recovers_its_model(cv_pos: float) -> None:
    """Norms = a positional profile (CV ``cv_pos``) times token noise (CV 0.22), W = 64."""
    gen = torch.Generator().manual_seed(5)
    length, w = 1024, 64
    profile = 1 + cv_pos * torch.randn(4, length, generator=gen, dtype=torch.float64)
    profile = profile / profile[:, 1:].mean(-1, keepdim=True)
    sigma2 = math.log1p(0.22**2)
    noise = torch.exp(math.sqrt(sigma2) * torch.randn(w, 4, length, generator=gen) - sigma2 / 2)
    res = norm_cv_positions(profile * noise)
    true = profile[:, 1:].std(-1, unbiased=False) / profile[:, 1:].mean(-1)
    assert torch.allclose(res.cv, true, atol=0.006)
    assert torch.all(res.cv_raw > res.cv)  # the raw figure carries the sampling part


# ---------------------------------------------------------------- 2. cosine decay


@given(value_cases(), st.data())
def test_cosine_decay_matches_reference(v, data) -> None:
    length = v.shape[-2]
    max_lag = data.draw(st.integers(1, length - 1))
    sink = data.draw(st.sampled_from([None, 0, length - 1]))
    z = data.draw(st.sampled_from([0.0, 0.5, 2.0]))
    res = cosine_decay(v, max_lag=max_lag, sink=sink, floor_z=z)
    assert res.mean_cos.shape == (*v.shape[:-2], max_lag + 1)
    grid = BETA_GRID.tolist()
    for r, rows in enumerate(flat(v, 2)):
        means, counts, run = ref_cosine_decay(rows, max_lag, sink, z)
        assert flat(res.mean_cos, 1)[r].tolist() == pytest.approx(means, abs=1e-9)
        beta, c_inf, r2 = (flat(x)[r].item() for x in (res.beta, res.c_inf, res.r2))
        # near-ties with the floor may flip a lag: compare the run only away from it
        margins = [
            abs(means[k] - z / math.sqrt(v.shape[-1] * counts[k]))
            for k in range(1, run + 2)
            if k <= max_lag and counts[k]
        ]
        if min(margins, default=1.0) < 1e-9:
            continue
        assert flat(res.lags)[r].item() == run
        if run == 0:
            assert math.isnan(beta) and math.isnan(c_inf) and not bool(flat(res.holds)[r])
            continue
        c_ref, sse = ref_decay_fit(means, counts, run, beta)
        assert c_inf == pytest.approx(c_ref, rel=1e-6, abs=1e-9)
        best_grid = min(ref_decay_fit(means, counts, run, b)[1] for b in grid)
        assert sse <= best_grid * (1 + 1e-9) + 1e-12  # the grid optimum or better
        wsum = sum(counts[1 : run + 1])
        mbar = sum(counts[k] * means[k] for k in range(1, run + 1)) / wsum
        sst = sum(counts[k] * (means[k] - mbar) ** 2 for k in range(1, run + 1))
        if run < 3 or sst <= wsum * 1e-24:
            assert math.isnan(r2) and not bool(flat(res.holds)[r])
        else:
            assert r2 == pytest.approx(1 - sse / sst, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("c_inf", [0.0, 0.3])
@pytest.mark.parametrize("beta", [0.02, 0.1, 0.5])
def test_cosine_decay_recovers_its_model(beta: float, c_inf: float) -> None:
    """Issue 15: values drawn from the model (L = 1024, d = 64) are judged to hold."""
    gen = torch.Generator().manual_seed(11)
    v = sample_values(1024, 64, cv=0.2, lam=0.3, beta=beta, c_inf=c_inf, samples=20, generator=gen)
    res = cosine_decay(v)
    assert res.holds.double().mean().item() >= 0.9
    assert res.beta.median().item() == pytest.approx(beta, rel=0.25)
    assert res.c_inf.median().item() == pytest.approx(c_inf, abs=0.05)


def test_cosine_decay_rejects_independent_directions() -> None:
    gen = torch.Generator().manual_seed(12)
    for c_inf in (0.0, 0.3):  # no decay at all, with or without a shared direction
        v = sample_values(1024, 64, c_inf=c_inf, samples=12, generator=gen)
        assert not torch.any(cosine_decay(v).holds)


def test_cosine_decay_violations() -> None:
    e = torch.zeros(16, 4, dtype=torch.float64)
    e[:, 0] = 1.0
    constant = cosine_decay(e)  # cos = 1 at every lag: flat, no decay
    assert math.isnan(constant.r2.item()) and not bool(constant.holds)
    alternating = e * torch.tensor([(-1.0) ** i for i in range(16)]).view(-1, 1)
    assert not bool(cosine_decay(alternating).holds)
    with pytest.raises(TlGeomError, match="max_lag"):
        cosine_decay(e, max_lag=16)


# ---------------------------------------------------------------- 3. profile


@given(weight_cases(), st.sampled_from([3, 4, 5, 100]))
def test_profile_fit_is_the_least_squares_optimum(alpha, bins) -> None:
    res = attention_profile(alpha, bins=bins)
    assert res.change_points.shape == (*alpha.shape[:-1], 3)
    for r, a in enumerate(flat(alpha, 1)):
        a_list = a.tolist()
        cps = tuple(flat(res.change_points, 1)[r].tolist())
        assert list(cps) == sorted(set(cps)) and 1 <= cps[0] and cps[-1] < len(a_list)
        assert set(cps) <= set(ref_units(len(a_list), bins))
        best = ref_best_segmentation(a_list, bins)
        assert ref_sse(a_list, cps) == pytest.approx(best, rel=1e-9, abs=1e-15)
        fitted = flat(res.fitted, 1)[r]
        assert fitted.sum().item() == pytest.approx(1.0)
        sse = float(((a - fitted) ** 2).sum())
        tot = float(((a - a.mean()) ** 2).sum())
        if tot > 0:
            assert flat(res.r2)[r].item() == pytest.approx(1 - sse / tot, abs=1e-9)


def four_segments(length: int, cps: tuple[int, int, int], noise: float, seed: int):
    gen = torch.Generator().manual_seed(seed)
    level = torch.full((length,), 0.2, dtype=torch.float64)
    level[cps[0] : cps[1]] = 1.0
    level[cps[1] : cps[2]] = 2.0 + torch.sin(torch.arange(cps[2] - cps[1]).double())
    level[cps[2] :] = 4.0
    level[0] = 0.6 * length
    w = level * (1 + noise * torch.rand(length, generator=gen, dtype=torch.float64))
    return w / w.sum()


def test_profile_recovers_known_change_points() -> None:
    alpha = four_segments(200, (1, 60, 170), noise=0.1, seed=0)
    res = attention_profile(alpha, bins=199)  # exact, one unit per position
    assert res.change_points.tolist() == [1, 60, 170]
    assert bool(res.holds) and res.r2.item() > 0.99 and res.r2_rest.item() > 0.7
    # batched, with a pooled resolution whose unit edges contain the true change points
    batch = torch.stack([four_segments(1025, (1, 257, 769), 0.1, s) for s in range(3)])
    res = attention_profile(batch.view(3, 1, 1025), bins=128)
    assert res.change_points.shape == (3, 1, 3)
    assert torch.all(res.change_points == torch.tensor([1, 257, 769]))
    assert torch.all(res.holds)


def test_profile_violations() -> None:
    flat_row = torch.full((64,), 1 / 64, dtype=torch.float64)
    res = attention_profile(flat_row)
    assert not bool(res.holds) and math.isnan(res.r2.item())
    no_sink = four_segments(64, (1, 20, 50), 0.0, 0)
    no_sink[0] = 0.0
    assert not bool(attention_profile(no_sink / no_sink.sum()).holds)
    decreasing = torch.linspace(2, 1, 64, dtype=torch.float64)
    decreasing[0] = 30.0
    assert not bool(attention_profile(decreasing / decreasing.sum()).holds)


# ---------------------------------------------------------------- 4. sink and Spearman


@given(value_cases(min_len=2), st.data())
def test_sink_similarity_matches_reference(v, data) -> None:
    sink = data.draw(st.integers(0, v.shape[-2] - 1))
    rho = sink_similarity(v, sink=sink)
    assert rho.shape == v.shape[:-2]
    for r, rows in enumerate(flat(v, 2)):
        cs = [ref_cos(rows[sink], rows[j]) for j in range(rows.shape[0]) if j != sink]
        assert flat(rho)[r].item() == pytest.approx(sum(cs) / len(cs), abs=1e-12)


@given(
    st.integers(2, 30),
    st.integers(1, 5),
    st.integers(0, 2**31 - 1),
    st.booleans(),
)
def test_spearman_matches_scipy(heads, nn, seed, ties) -> None:
    gen = torch.Generator().manual_seed(seed)
    if ties:
        x = torch.randint(0, 4, (heads,), generator=gen).double()
        y = torch.randint(0, 3, (heads, nn), generator=gen).double()
    else:
        x = torch.randn(heads, generator=gen, dtype=torch.float64)
        y = torch.randn(heads, nn, generator=gen, dtype=torch.float64)
    got = spearman(x, y)
    for k in range(nn):
        if len(set(x.tolist())) < 2 or len(set(y[:, k].tolist())) < 2:
            assert math.isnan(got[k].item())
            continue
        ref = scipy.stats.spearmanr(x.numpy(), y[:, k].numpy()).statistic
        assert got[k].item() == pytest.approx(float(ref), abs=1e-9)
        literal = literal_spearman(x.tolist(), y[:, k].tolist())
        assert got[k].item() == pytest.approx(literal, abs=1e-9)


def literal_spearman(x: list[float], y: list[float]) -> float:
    """Pearson of average ranks, by counting: rank_i = #(x_j < x_i) + (#(x_j == x_i) + 1) / 2."""

    def ranks(v: list[float]) -> list[float]:
        return [sum(u < a for u in v) + (sum(u == a for u in v) + 1) / 2 for a in v]

    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    den = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return num / den


def test_sink_recall_correlation() -> None:
    rho0 = torch.tensor([0.1, 0.5, 0.3, 0.9], dtype=torch.float64)
    recall = torch.stack([rho0, -rho0, torch.tensor([1.0, 1.0, 0.5, 1.0]).double()], 1)
    res = sink_recall_correlation(rho0, recall)
    assert res.spearman[:2].tolist() == pytest.approx([1.0, -1.0])
    assert res.holds.tolist() == [True, False, True]


# ---------------------------------------------------------------- helpers


@given(weight_cases(min_len=2))
def test_entropy_and_sink_mass(alpha) -> None:
    h = attention_entropy(alpha)
    for r, a in enumerate(flat(alpha, 1).tolist()):
        ref = -sum(p * math.log(p) for p in a if p > 0)
        assert flat(h)[r].item() == pytest.approx(ref, abs=1e-12)
    assert torch.equal(sink_mass(alpha), alpha[..., 0])
    assert torch.equal(sink_mass(alpha, sink=1), alpha[..., 1])


# ---------------------------------------------------------------- errors


def test_bad_input() -> None:
    v = torch.randn(5, 3, dtype=torch.float64)
    with pytest.raises(TlGeomError, match="sink=5 out of range"):
        norm_stability(v, sink=5)
    with pytest.raises(TlGeomError, match="at least 3"):
        norm_stability(v[:2])
    with pytest.raises(TlGeomError, match="max_lag=5"):
        cosine_decay(v, max_lag=5)
    with pytest.raises(TlGeomError, match="NaN"):
        sink_similarity(torch.full((4, 2), float("nan")))
    with pytest.raises(TlGeomError, match="floating"):  # bypass the jaxtyping wrapper
        cosine_decay.__wrapped__(torch.ones(4, 2, dtype=torch.long))
    with pytest.raises(TlGeomError, match="L >= 4"):
        attention_profile(torch.full((3,), 1 / 3))
    with pytest.raises(TlGeomError, match="sum to 1"):
        attention_profile(torch.ones(8))
    with pytest.raises(TlGeomError, match="heads >= 2"):
        spearman(torch.ones(1), torch.ones(1, 2))
    with pytest.raises(TlGeomError, match="negative"):
        attention_entropy(torch.tensor([1.5, -0.5]))
