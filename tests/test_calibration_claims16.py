"""Calibration of the remaining verdict rules of the softmax-limits and sink papers (issue 16).

Per-unit data drawn from a known truth: the claim true by construction -> "reproduced",
false -> "not reproduced", in between -> "partly", too few units -> "inconclusive"; and
``n`` and the interval behind each verdict are the ones in ``claims.csv``.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tl_geom import claim
from tl_geom.normalization import claims as nc
from tl_geom.normalization.softmax_bounds import gradient_sensitivity
from tl_geom.sinks import claims as sc
from tl_geom.sinks import intervention_claims as sic
from tl_geom.sinks.origins import SuperNeurons

R, P, N, INC = claim.REPRODUCED, claim.PARTLY, claim.NOT, claim.INCONCLUSIVE
LENGTHS = np.array([32, 64, 128, 256, 512, 1024])


def _length_table(rng: np.random.Generator, windows: int, k: float) -> pd.DataFrame:
    """d~_5 per window = 0.01 L^k times log-normal noise (sd 0.3), ``windows`` per L."""
    per = [0.01 * x**k * np.exp(0.3 * rng.standard_normal(windows)) for x in LENGTHS]
    return pd.DataFrame(
        {"length": LENGTHS, "d_top": [w.mean() for w in per], "d_random": 1.0,
         "d_top_by_window": [w.tolist() for w in per]}
    )  # fmt: skip


@pytest.mark.parametrize("seed", range(3))
def test_distance_length_calibrated(seed: int) -> None:
    rng = np.random.default_rng(seed)
    true = nc.claim_distance_length(_length_table(rng, 32, 1.0))
    assert true.verdict == R and true.n == 32 and true.interval is not None
    assert nc.claim_distance_length(_length_table(rng, 32, 0.5)).verdict == P  # grows, sublinear
    assert nc.claim_distance_length(_length_table(rng, 32, 0.0)).verdict == N  # flat
    assert nc.claim_distance_length(_length_table(rng, 4, 1.0)).verdict == INC  # 4 windows
    bare = _length_table(rng, 32, 1.0).drop(columns="d_top_by_window")
    assert nc.claim_distance_length(bare).verdict == INC  # no per-window data: no interval


def test_distance_length_interval_covers_the_truth() -> None:
    rng = np.random.default_rng(0)
    hits = [lo <= 1.0 <= hi for lo, hi in
            (nc.claim_distance_length(_length_table(rng, 32, 1.0)).interval or (9, 9)
             for _ in range(200))]  # fmt: skip
    assert 0.9 <= np.mean(hits) <= 0.99  # a 95% percentile bootstrap (400 draws: 0.96)


PLATEAU_N = np.array([1, 5, 10, 20, 50, 100, 200])


def _plateau(
    rng: np.random.Generator, heads: int, curve: list[float], per_head: bool = True
) -> claim.Finding:
    """Per-head d~_N = a head scale (log-normal) x the true curve x 5% noise, judged."""
    scale = np.exp(0.5 * rng.standard_normal((heads, 1)))
    per = scale * np.array(curve) * (1 + 0.05 * rng.standard_normal((heads, len(curve))))
    table = pd.DataFrame({"n": PLATEAU_N, "d_top": per.mean(0), "d_random": 1.0})
    return nc.claim_distance_plateau(table, 1024, per if per_head else None)


@pytest.mark.parametrize("seed", range(3))
def test_distance_plateau_calibrated(seed: int) -> None:
    rng = np.random.default_rng(seed)
    flat = [10, 6, 5.5, 5, 5, 5, 5]  # changes to N = 20, then flat (N = 200 not judged)
    f = _plateau(rng, 100, [*flat[:-1], 50.0])
    assert f.verdict == R and f.n == 100 and f.interval is not None
    assert _plateau(rng, 100, [10, 6, 5.5, 5, 5.5, 5.9, 6]).verdict == P  # +18% from 20 to 100
    assert _plateau(rng, 100, [1, 2, 3, 5, 8, 12, 20]).verdict == N
    assert _plateau(rng, 5, flat).verdict == INC  # 5 heads
    assert _plateau(rng, 100, flat, per_head=False).verdict == INC  # no per-head data


RATIO_N = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256])


def _ratio(rng: np.random.Generator, heads: int, curve: list[float]) -> tuple:
    """Per-head N_s/N = the true curve + noise (sd 0.1), clipped to [0, 1]."""
    per = np.clip(np.array(curve) + 0.1 * rng.standard_normal((heads, len(curve))), 0, 1)
    return pd.DataFrame({"n": RATIO_N, "ns_over_n": per.mean(0)}), per


@pytest.mark.parametrize("seed", range(3))
def test_recall_saturation_calibrated(seed: int) -> None:
    rng = np.random.default_rng(seed)
    band = [1, 0.95, 0.9, 0.85, 0.78, 0.77, 0.77, 0.76, 0.76]
    f = nc.claim_recall_saturation(*_ratio(rng, 200, band))
    assert f.verdict == R and f.n == 200 and f.interval is not None
    low = [1, 0.8, 0.6, 0.5, 0.4, 0.4, 0.4, 0.4, 0.4]  # flat, below the band
    assert nc.claim_recall_saturation(*_ratio(rng, 200, low)).verdict == P
    falls = [1, 0.95, 0.9, 0.85, 0.8, 0.6, 0.4, 0.3, 0.2]  # no saturation, out of the band
    assert nc.claim_recall_saturation(*_ratio(rng, 200, falls)).verdict == N
    assert nc.claim_recall_saturation(*_ratio(rng, 6, band)).verdict == INC  # 6 heads
    edge = [1, 0.9, 0.8, 0.75, 0.7, 0.7, 0.7, 0.7, 0.7]  # the level sits on the band's edge
    assert nc.claim_recall_saturation(*_ratio(rng, 200, edge)).verdict == INC


TEMPS = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0]


def _rows(rng: np.random.Generator, rows: int, power: float) -> pd.DataFrame:
    """A by-row g table: g_row(T) = a_row / T^power (a_row log-normal), eps = 1e-3."""
    a = np.exp(0.3 * rng.standard_normal(rows))
    t = np.array(TEMPS)
    g = a[:, None] / t[None, :] ** power
    return pd.DataFrame(
        {"temperature": np.tile(t, rows), "eps": 1e-3, "sensitivity": g.ravel(),
         "change": 1e-3 * g.ravel(), "row": np.repeat(np.arange(rows), len(t))}
    )  # fmt: skip


def test_gradient_sensitivity_calibrated() -> None:
    gen = torch.Generator().manual_seed(0)
    z = 1e-4 * torch.randn(64, 32, generator=gen, dtype=torch.float64)  # unsaturated: 1/T holds
    table = gradient_sensitivity(z, TEMPS, (1e-3, 0.1, 10.0), draws=2, by_row=True)
    f = nc.claim_gradient_sensitivity(table)
    assert f.verdict == R and f.n == 64 and f.numbers["dropped_eps"] == ["0.1", "10"]
    lo, hi = f.interval or (0, 0)
    assert lo <= -0.9 and hi >= -1.1  # the slope's interval holds about -1
    rng = np.random.default_rng(0)
    assert nc.claim_gradient_sensitivity(_rows(rng, 64, 0.0)).verdict == N  # no 1/T
    assert nc.claim_gradient_sensitivity(_rows(rng, 64, 0.3)).verdict == P  # slope -0.3, 4x
    assert nc.claim_gradient_sensitivity(_rows(rng, 6, 1.0)).verdict == INC  # 6 rows
    means = _rows(rng, 64, 1.0).drop(columns="row")  # no rows: no interval
    assert nc.claim_gradient_sensitivity(means).verdict == INC


def test_gradient_sensitivity_by_row_means_are_the_pooled_table() -> None:
    z = torch.randn(5, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pooled = gradient_sensitivity(z, [0.01, 1.0], [1e-3, 10.0], draws=3)
    rows = gradient_sensitivity(z, [0.01, 1.0], [1e-3, 10.0], draws=3, by_row=True)
    assert len(rows) == 4 * 5 and sorted(set(rows["row"])) == list(range(5))
    mean = rows.groupby(["temperature", "eps"]).mean(numeric_only=True).reset_index()
    for col in ("change", "sensitivity", "jacobian", "jacobian_at"):
        np.testing.assert_allclose(mean[col], pooled[col], rtol=1e-12, atol=1e-300)


def _variance_samples(rng: np.random.Generator, n: int, first_sd: list[float]) -> np.ndarray:
    """Per-sample shares of the variance across samples of z ~ N(0, sd^2) [n, layer, pos, 16].

    Position 0 has sd ``first_sd[layer]``, the 31 others 1 (as origins.variance_discrepancy).
    """
    sd = np.ones((len(first_sd), 32))
    sd[:, 0] = first_sd
    z = rng.standard_normal((n, len(first_sd), 32, 16)) * sd[None, :, :, None]
    return ((z - z.mean(0)) ** 2).mean(-1)


@pytest.mark.parametrize("seed", range(3))
def test_first_position_variance_calibrated(seed: int) -> None:
    rng = np.random.default_rng(seed)
    dims = np.ones((10, 32))
    f = sc.claim_first_position_variance(_variance_samples(rng, 64, [2.0] * 10), dims)
    assert f.verdict == R and f.n == 64 and f.interval == (1.0, 1.0)
    half = sc.claim_first_position_variance(_variance_samples(rng, 64, [2.0] * 4 + [0.5] * 6), dims)
    assert half.verdict == P
    assert (
        sc.claim_first_position_variance(_variance_samples(rng, 64, [0.5] * 10), dims).verdict == N
    )
    few = sc.claim_first_position_variance(_variance_samples(rng, 5, [2.0] * 10), dims)
    assert few.verdict == INC and few.interval is None
    # judged up to the sink's formation: layers 0-2 only, where position 0 is largest
    upto = sc.claim_first_position_variance(
        _variance_samples(rng, 64, [2.0] * 3 + [0.5] * 7), dims, upto=2
    )
    assert upto.verdict == R and upto.numbers["layers"] == 3


def _massive(rng: np.random.Generator, n: int, top: float, ratio: float) -> claim.Finding:
    noise = np.exp(0.2 * rng.standard_normal((2, n, 6)))
    t, r = 0.1 * noise[0], 0.5 * noise[1]  # most layers small
    t[:, 3], r[:, 3] = top * noise[0, :, 3], ratio * noise[1, :, 3]
    return sc.claim_massive_activations(t, r, np.zeros(6), np.full(6, 7))


def test_massive_activations_calibrated() -> None:
    rng = np.random.default_rng(0)
    f = _massive(rng, 16, 2e4, 5e3)
    assert f.verdict == R and f.n == 16 and f.interval is not None and f.interval[0] > 0.5
    assert _massive(rng, 16, 50.0, 500.0).verdict == P  # only at a tenth of the thresholds
    assert _massive(rng, 16, 3.0, 3.0).verdict == N
    assert _massive(rng, 3, 2e4, 5e3).verdict == INC  # 3 samples: Wilson lower bound < 0.5


def _super(rng: np.random.Generator, n: int, writers: int, size: float) -> claim.Finding:
    """``writers`` neurons of layer 1 write ``size`` each into the dim; the rest noise."""
    c = rng.standard_normal((n, 3, 16))
    c[:, 1, 5 : 5 + writers] += size * (1 + 0.1 * rng.standard_normal((n, writers)))
    write = c.sum(-1)
    sn = SuperNeurons(
        torch.tensor(c.mean(0)), torch.tensor(write.mean(0)), 7, 0, (0, 1, 2),
        torch.tensor(c), torch.tensor(write),
    )  # fmt: skip
    return sc.claim_super_neurons(sn.to_frame(), 7, c, write)


def test_super_neurons_calibrated() -> None:
    rng = np.random.default_rng(0)
    f = _super(rng, 16, 1, 500.0)
    assert f.verdict == R and f.n == 16 and f.numbers["neuron"] == 5
    assert _super(rng, 16, 3, 300.0).verdict == P  # three neurons share the write
    assert _super(rng, 16, 1, 5.0).verdict == N  # no neuron writes >= 100
    assert _super(rng, 3, 1, 500.0).verdict == INC  # 3 samples


def _self_only(rng: np.random.Generator, n: int, after: float, sd: float) -> claim.Finding:
    """imp(k) per sample and layer: 0.01 before, ``after`` under the mask, noise ``sd``."""
    before = 0.01 + 0.002 * rng.standard_normal((n, 6))
    return sic.claim_self_only(before, after + sd * rng.standard_normal((n, 6)), 10)


@pytest.mark.parametrize("seed", range(3))
def test_self_only_calibrated(seed: int) -> None:
    rng = np.random.default_rng(seed)
    f = _self_only(rng, 64, 0.3, 0.1)
    assert f.verdict == R and f.n == 64 and f.interval is not None
    assert f.interval[0] < 0.3 < f.interval[1]
    assert _self_only(rng, 64, 0.04, 0.01).verdict == P  # 4x, below 0.1
    assert _self_only(rng, 64, 0.01, 0.002).verdict == N  # the mask changes nothing
    assert _self_only(rng, 5, 0.3, 0.1).verdict == INC  # 5 samples
    assert _self_only(rng, 64, 0.1, 0.5).verdict == INC  # the interval straddles 0.1


# --- the interval helpers: slow references and properties ---------------------------


def test_slope_draws_matches_a_loop_of_polyfits() -> None:
    from tl_geom.normalization.distance_claims import slope_draws

    rng = np.random.default_rng(3)
    per = [np.exp(rng.standard_normal(12)) * x for x in (32.0, 64.0, 128.0)]
    got = slope_draws([32, 64, 128], per, draws=50, seed=4)
    ref_rng = np.random.default_rng(4)  # the same resamples, one draw at a time
    idx = [ref_rng.integers(0, s.size, (50, s.size)) for s in per]
    for d in range(50):
        means = [s[i[d]].mean() for s, i in zip(per, idx, strict=True)]
        k = np.polyfit(np.log([32, 64, 128]), np.log(means), 1)[0]
        assert got[d] == pytest.approx(k, rel=1e-10, abs=1e-12)


@given(
    st.floats(-2, 2),
    st.floats(1e-3, 1e3),
    st.integers(1, 20),
)
def test_slope_draws_exact_on_a_noise_free_power_law(k: float, c: float, units: int) -> None:
    from tl_geom.normalization.distance_claims import slope_draws

    x = np.array([16.0, 32.0, 64.0, 512.0])
    draws = slope_draws(x, [np.full(units, c * v**k) for v in x], draws=20)
    np.testing.assert_allclose(draws, k, atol=1e-9)


def test_first_position_ratio_interval_matches_a_loop() -> None:
    rng = np.random.default_rng(5)
    per = rng.random((12, 3, 5))
    got = sc.first_position_ratio_interval(per, seed=2)
    idx = np.random.default_rng(2).integers(0, 12, (sc.DRAWS, 12))
    ratios = []
    for d in range(sc.DRAWS):  # the slow way: resample, average, divide
        var = per[idx[d]].mean(0)
        ratios.append(var[:, 0] / var[:, 1:].max(-1))
    ref = np.quantile(np.array(ratios), [0.025, 0.975], axis=0).T
    np.testing.assert_allclose(got, ref, rtol=1e-12)


@given(st.lists(st.floats(0.1, 10.0), min_size=6, max_size=6), st.integers(10, 40))
def test_first_position_ratio_interval_exact_without_noise(var: list[float], n: int) -> None:
    v = np.array(var).reshape(2, 3)
    iv = sc.first_position_ratio_interval(np.broadcast_to(v, (n, 2, 3)).copy())
    exact = v[:, 0] / v[:, 1:].max(-1)
    np.testing.assert_allclose(iv, np.stack([exact, exact], 1), rtol=1e-12)


@given(st.lists(st.floats(-1e3, 1e3), min_size=10, max_size=60))
def test_mean_interval_holds_the_mean(x: list[float]) -> None:
    lo, hi = claim.mean_interval(x)
    m = float(np.mean(x))
    assert lo <= m + 1e-9 * (1 + abs(m)) and m - 1e-9 * (1 + abs(m)) <= hi
    assert hi - lo == pytest.approx(4 * np.std(x, ddof=1) / np.sqrt(len(x)), abs=1e-9)


@given(st.integers(0, 40), st.integers(0, 40), st.integers(1, 40))
def test_by_samples_never_rewards_fewer_samples_showing_it(full: int, extra: int, n: int) -> None:
    full = min(full, n)
    weak = min(full + extra, n)
    order = {N: 0, P: 1, R: 2}
    v = sc.by_samples(full, weak, n)
    if v != INC and full < n:
        more = sc.by_samples(full + 1, max(weak, full + 1), n)
        assert more == INC or order[more] >= order[v]
