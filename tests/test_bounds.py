"""Bounds: exact criterion, certificate, random-direction envelope, simulation.

Every fast path is compared with a slow literal reference (Python loops, float64).
"""

import functools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from jaxtyping import TypeCheckError

from tl_geom.errors import TlGeomError
from tl_geom.geometry.bounds import (
    CERT_RTOL,
    certificate,
    certificate_from_values,
    failure_envelope,
    separation_gap,
)
from tl_geom.geometry.simulation import sample_values, simulate_separability
from tl_geom.geometry.top_n import separability

# ---------------------------------------------------------------- references


def ref_top_n(alpha: list[float], n: int) -> list[int]:
    """Indices of the n largest weights, ties to the earlier position."""
    order = sorted(range(len(alpha)), key=lambda i: (-alpha[i], i))
    return order[:n]


def ref_gap(alpha: torch.Tensor, values: torch.Tensor, n: int) -> float:
    a = alpha.double().tolist()
    v = values.double()
    sel = ref_top_n(a, n)
    s = sum(a[k] * v[k] for k in sel)
    g = []
    for k in range(len(a)):
        y = a[k] * v[k]
        g.append(float(2 * torch.dot(s, y) - torch.dot(y, y)))
    rest = [k for k in range(len(a)) if k not in sel]
    return min(g[i] for i in sel) - max(g[j] for j in rest)


def ref_certificate(alpha: torch.Tensor, n: int, b: float, big_b: float, c: float):
    a = alpha.double().tolist()
    sel = ref_top_n(a, n)
    rest = [k for k in range(len(a)) if k not in sel]
    big_a = sum(a[i] for i in sel)
    lower = min(a[i] ** 2 * b**2 - 2 * a[i] * big_b**2 * c * (big_a - a[i]) for i in sel)
    upper = max(2 * a[j] * big_b**2 * c * big_a - a[j] ** 2 * b**2 for j in rest)
    c_star = math.inf
    for i in sel:
        for j in rest:
            num = b**2 * (a[i] ** 2 + a[j] ** 2)
            den = 2 * big_b**2 * (a[i] * (big_a - a[i]) + a[j] * big_a)
            c_ij = num / den if den > 0 else (math.inf if num > 0 else 0.0)
            c_star = min(c_star, c_ij)
    return lower, upper, c_star


def ref_measured(alpha: torch.Tensor, values: torch.Tensor, n: int):
    a = alpha.double().tolist()
    v = values.double()
    norms = [float(v[k].norm()) for k in range(len(a))]
    c = 0.0
    for k in ref_top_n(a, n):
        for i in range(len(a)):
            if i != k and norms[i] > 0 and norms[k] > 0:
                c = max(c, abs(float(torch.dot(v[i], v[k]))) / (norms[i] * norms[k]))
    return min(norms), max(norms), c


# ---------------------------------------------------------------- strategies


@st.composite
def cases(draw, integer: bool | None = None):
    """(alpha [*lead, L], values [*lead, L, d], ns): small shapes, ties, zeros, near-orthogonal."""
    lead = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    length = draw(st.integers(2, 9))
    d = draw(st.integers(1, 10))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    kind = draw(st.sampled_from(["int", "float", "peaked"])) if integer is None else "int"
    if kind == "int":
        w = torch.randint(0, 4, (*lead, length), generator=gen).double()
        w[..., 0] += (w.sum(-1) == 0).double()
    elif kind == "float":
        w = torch.rand((*lead, length), generator=gen, dtype=torch.float64)
    else:
        w = torch.exp(4 * torch.randn((*lead, length), generator=gen, dtype=torch.float64))
    alpha = w / w.sum(-1, keepdim=True)
    vkind = draw(st.sampled_from(["int", "gauss", "near_orth"]))
    if vkind == "int":
        values = torch.randint(-2, 3, (*lead, length, d), generator=gen).double()
    elif vkind == "gauss":
        values = torch.randn((*lead, length, d), generator=gen, dtype=torch.float64)
    else:  # nearly orthogonal: one-hot directions (cycled) plus small noise
        eye = torch.eye(max(d, length), dtype=torch.float64)[:length, :d]
        noise = draw(st.sampled_from([0.0, 0.01, 0.1]))
        scale = 1 + 0.1 * torch.rand((*lead, length, 1), generator=gen, dtype=torch.float64)
        values = scale * eye + noise * torch.randn((*lead, length, d), generator=gen)
    ns = draw(st.lists(st.integers(1, length - 1), min_size=1, max_size=3))
    return alpha, values, ns


def rows(alpha: torch.Tensor, values: torch.Tensor):
    return alpha.reshape(-1, alpha.shape[-1]), values.reshape(-1, *values.shape[-2:])


# ---------------------------------------------------------------- exact criterion


@given(cases())
def test_gap_matches_reference_and_separability(case) -> None:
    alpha, values, ns = case
    gap = separation_gap(alpha, values, ns)
    assert gap.shape == (*alpha.shape[:-1], len(ns))
    assert torch.equal(gap > 0, separability(alpha, values, ns).perfect)
    a_rows, v_rows = rows(alpha, values)
    for r, (a, v) in enumerate(zip(a_rows, v_rows, strict=True)):
        for k, n in enumerate(ns):
            ref = ref_gap(a, v, n)
            got = gap.reshape(-1, len(ns))[r, k].item()
            assert got == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_gap_scalar_n_shape() -> None:
    alpha = torch.softmax(torch.randn(2, 3, 6, dtype=torch.float64), -1)
    values = torch.randn(2, 3, 6, 4, dtype=torch.float64)
    assert separation_gap(alpha, values, 2).shape == (2, 3)


# ---------------------------------------------------------------- certificate


@given(cases(), st.floats(0.0, 1.0), st.floats(1e-3, 10.0), st.floats(0.0, 0.5))
def test_certificate_matches_reference(case, b_frac, big_b, c) -> None:
    alpha, _, ns = case
    b = b_frac * big_b
    cert = certificate(alpha, ns, b=b, B=big_b, c=c)
    for r, a in enumerate(alpha.reshape(-1, alpha.shape[-1])):
        for k, n in enumerate(ns):
            lower, upper, c_star = ref_certificate(a, n, b, big_b, c)
            assert cert.lower.reshape(-1, len(ns))[r, k].item() == pytest.approx(lower, abs=1e-12)
            assert cert.upper.reshape(-1, len(ns))[r, k].item() == pytest.approx(upper, abs=1e-12)
            assert cert.c_star.reshape(-1, len(ns))[r, k].item() == pytest.approx(
                c_star, rel=1e-9, abs=1e-15
            )
            got = bool(cert.certified.reshape(-1, len(ns))[r, k])
            if abs(lower - upper) > 2 * CERT_RTOL * big_b**2:  # outside the rounding guard
                assert got == (lower > upper)
                assert got == (c < c_star)


@given(cases())
def test_certificate_never_certifies_a_non_perfect_case(case) -> None:
    alpha, values, ns = case
    cert = certificate_from_values(alpha, values, ns)
    perfect = separability(alpha, values, ns).perfect
    assert not bool((cert.certified & ~perfect).any())
    # any looser statistics are also sound, and never certify more
    looser = certificate(
        alpha, ns, b=cert.b[..., 0] * 0.9, B=cert.B[..., 0] * 1.1, c=cert.c.clamp_max(0.9) + 0.1
    )
    assert not bool((looser.certified & ~cert.certified).any())


@given(cases())
def test_measured_statistics_match_reference(case) -> None:
    alpha, values, ns = case
    cert = certificate_from_values(alpha, values, ns)
    a_rows, v_rows = rows(alpha, values)
    for r, (a, v) in enumerate(zip(a_rows, v_rows, strict=True)):
        for k, n in enumerate(ns):
            b, big_b, c = ref_measured(a, v, n)
            assert cert.b.reshape(-1, len(ns))[r, k].item() == pytest.approx(b, rel=1e-12)
            assert cert.B.reshape(-1, len(ns))[r, k].item() == pytest.approx(big_b, rel=1e-12)
            assert cert.c.reshape(-1, len(ns))[r, k].item() == pytest.approx(c, abs=1e-12)


def test_certificate_fires_and_is_sound_on_many_random_cases() -> None:
    """4000 batched cases from orthogonal to generic: it certifies some, never a false one."""
    gen = torch.Generator().manual_seed(1)
    cases_, length, d = 4000, 12, 16
    logits = torch.randn(cases_, length, generator=gen, dtype=torch.float64)
    alpha = torch.softmax(logits * torch.linspace(0, 6, cases_).view(-1, 1), -1)
    noise = torch.logspace(-3, 0, cases_, dtype=torch.float64).view(-1, 1, 1)
    eye = torch.eye(d, dtype=torch.float64)[:length]
    scale = 1 + 0.2 * torch.rand(cases_, length, 1, generator=gen, dtype=torch.float64)
    values = scale * (eye + noise * torch.randn(cases_, length, d, generator=gen))
    ns = [1, 2, 3, 6, 11]
    cert = certificate_from_values(alpha, values, ns)
    perfect = separability(alpha, values, ns).perfect
    assert not bool((cert.certified & ~perfect).any())
    assert int(cert.certified.sum()) > 1000  # it fires...
    assert int((perfect & ~cert.certified).sum()) > 100  # ...and is not the exact criterion


def test_certificate_doc_example_and_shapes() -> None:
    alpha = torch.softmax(torch.randn(2, 3, 8, dtype=torch.float64), -1)
    cert = certificate(alpha, 3, b=torch.full((2, 3), 0.5), B=1.0, c=0.1)
    assert cert.certified.shape == cert.c_star.shape == cert.b.shape == (2, 3)
    cert = certificate(
        alpha, [1, 3], b=0.5, B=1.0, c=torch.tensor([0.01, 0.1], dtype=torch.float64)
    )
    assert cert.c.shape == (2, 3, 2)
    assert torch.all(cert.c[..., 0] == 0.01)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"b": 2.0, "B": 1.0, "c": 0.1}, "b must be <= B"),
        ({"b": 0.5, "B": 1.0, "c": -0.1}, "c must be finite"),
        ({"b": -0.5, "B": 1.0, "c": 0.1}, "b must be finite"),
        ({"b": 0.5, "B": float("nan"), "c": 0.1}, "B must be finite"),
        ({"b": 0.5, "B": 1.0, "c": torch.zeros(5)}, "does not broadcast"),
    ],
)
def test_certificate_bad_input(kwargs, match) -> None:
    with pytest.raises(TlGeomError, match=match):
        certificate(torch.full((4,), 0.25), 2, **kwargs)


def test_bad_n_and_weights() -> None:
    with pytest.raises(TlGeomError, match="out of range"):
        certificate(torch.full((4,), 0.25), 4, b=1.0, B=1.0, c=0.0)
    with pytest.raises(TlGeomError, match="sum to 1"):
        failure_envelope(torch.ones(4), 1, d=4, b=1.0, B=1.0)
    with pytest.raises(TlGeomError, match="d must be"):
        failure_envelope(torch.full((4,), 0.25), 1, d=0, b=1.0, B=1.0)
    # jaxtyping (active under pytest) rejects the shapes before our own check does
    with pytest.raises((TlGeomError, TypeCheckError)):
        separation_gap(torch.full((4,), 0.25), torch.ones(5, 3), 1)


# ---------------------------------------------------------------- envelope


def random_direction_failure_rate(alpha, n, d, b, big_b, draws, seed):
    """Empirical 1 - P(perfect) with uniform directions and norms uniform in [b, B]."""
    gen = torch.Generator().manual_seed(seed)
    length = alpha.shape[-1]
    u = torch.randn(draws, length, d, generator=gen, dtype=torch.float64)
    u = u / u.norm(dim=-1, keepdim=True)
    r = b + (big_b - b) * torch.rand(draws, length, 1, generator=gen, dtype=torch.float64)
    res = separability(alpha.expand(draws, length), r * u, n)
    return 1 - res.perfect.double().mean(0)


ENVELOPE_CONFIGS = [
    # (profile, L, ns, d, b, B)
    ("uniform", 8, [1, 2, 4], 16, 1.0, 1.0),
    ("uniform", 8, [1, 2, 4], 64, 1.0, 1.0),
    ("uniform", 8, [2], 128, 0.8, 1.0),
    ("peaked", 16, [1, 2, 4, 8], 64, 1.0, 1.0),
    ("peaked", 16, [1, 2, 4], 256, 0.9, 1.1),
    ("sink", 32, [1, 2, 4], 64, 0.5, 1.0),
    ("geometric", 12, [1, 2, 3, 6], 32, 1.0, 1.0),
    # few pairs: the bound drops below 1 while failures are still observed
    ("two_and_small", 3, [1, 2], 24, 1.0, 1.0),
    ("two_and_small", 3, [2], 32, 1.0, 1.0),
    ("uniform", 3, [2], 32, 1.0, 1.0),
]


@functools.cache
def monte_carlo(index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(envelope, empirical failure rate) of ENVELOPE_CONFIGS[index], fixed seed."""
    kind, length, ns, d, b, big_b = ENVELOPE_CONFIGS[index]
    alpha = profile(kind, length)
    env = failure_envelope(alpha, ns, d=d, b=b, B=big_b)
    draws = 20000 if length <= 3 else 3000  # standard error of a rate <= 0.009
    rate = random_direction_failure_rate(alpha, ns, d, b, big_b, draws=draws, seed=7)
    return env, rate


def profile(kind: str, length: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(length)
    if kind == "uniform":
        w = torch.ones(length, dtype=torch.float64)
    elif kind == "peaked":
        w = torch.exp(2 * torch.randn(length, generator=gen, dtype=torch.float64))
    elif kind == "two_and_small":
        w = torch.tensor([1.0, 1.0, 0.2], dtype=torch.float64)
    elif kind == "sink":
        w = torch.ones(length, dtype=torch.float64)
        w[0], w[-3:] = 20.0, 4.0
    else:
        w = 0.7 ** torch.arange(length, dtype=torch.float64)
    return w / w.sum()


@pytest.mark.parametrize("index", range(len(ENVELOPE_CONFIGS)))
def test_envelope_bounds_monte_carlo_failure_rate(index: int) -> None:
    env, rate = monte_carlo(index)
    length, ns = ENVELOPE_CONFIGS[index][1], ENVELOPE_CONFIGS[index][2]
    assert torch.all(env.bound >= rate), (env.bound.tolist(), rate.tolist())
    assert torch.all((env.bound >= 0) & (env.bound <= 1))
    assert torch.equal(env.pairs, torch.tensor([k * (length - k) for k in ns]).double())


def test_envelope_is_informative_somewhere() -> None:
    """The test above can fail: some configs have a bound < 1 and a positive failure rate.

    It also checks the largest kappa the data would allow in the same form,
    ``ln(2 N (L - N) / rate) / (d gamma^2)``: the proven 1/2 must stay below it.
    """
    informative, kappa_max = 0, math.inf
    for index, config in enumerate(ENVELOPE_CONFIGS):
        env, rate = monte_carlo(index)
        informative += int(((env.bound < 1) & (rate > 0)).sum())
        seen = rate > 0
        if bool(seen.any()):
            implied = torch.log(2 * env.pairs / rate) / (config[3] * env.c_star**2)
            kappa_max = min(kappa_max, float(implied[seen].min()))
    assert informative >= 3
    assert 0.5 < kappa_max


def test_envelope_formula_against_reference() -> None:
    alpha = profile("peaked", 10)
    env = failure_envelope(alpha, [1, 3, 5], d=50, b=0.7, B=1.2)
    for k, n in enumerate([1, 3, 5]):
        _, _, c_star = ref_certificate(alpha, n, 0.7, 1.2, 0.0)
        expect = min(1.0, 2 * n * (10 - n) * math.exp(-0.5 * 50 * c_star**2))
        assert env.bound[k].item() == pytest.approx(expect, rel=1e-9)
    assert env.kappa == 0.5


# ---------------------------------------------------------------- simulation


def test_sample_values_follow_the_model() -> None:
    gen = torch.Generator().manual_seed(3)
    v = sample_values(40, 512, cv=0.05, lam=0.2, beta=0.3, samples=64, generator=gen)
    norms = v.norm(dim=-1)
    rest = norms[:, 1:]
    assert (norms[:, 0] / rest.mean(-1)).allclose(torch.tensor(0.2, dtype=torch.float64))
    cv = (rest.std(-1, unbiased=False) / rest.mean(-1)).mean()
    assert cv.item() == pytest.approx(0.05, rel=0.15)
    u = v / norms.unsqueeze(-1)
    for lag in (1, 3, 6):
        cos = (u[:, :-lag] * u[:, lag:]).sum(-1).mean()
        assert cos.item() == pytest.approx(math.exp(-0.3 * lag), abs=0.03)
    indep = sample_values(20, 256, samples=32, generator=gen)
    u = indep / indep.norm(dim=-1, keepdim=True)
    assert (u[:, :-1] * u[:, 1:]).sum(-1).mean().abs() < 0.02
    assert torch.allclose(indep.norm(dim=-1), torch.ones(32, 20, dtype=torch.float64))


def test_simulation_matches_literal_loop() -> None:
    alpha = torch.stack([profile("sink", 16), profile("peaked", 16)])
    ns = [1, 2, 4]
    sim = simulate_separability(alpha, ns, d=8, cv=0.1, lam=0.3, beta=0.2, samples=6, seed=5)
    gen = torch.Generator().manual_seed(5)
    v = sample_values(16, 8, cv=0.1, lam=0.3, beta=0.2, samples=12, generator=gen)
    for row in range(2):
        prec, rec, perf = [], [], []
        for s in range(6):
            res = separability(alpha[row], v[s * 2 + row], ns)
            prec.append(res.precision)
            rec.append(res.recall)
            perf.append(res.perfect.double())
        assert torch.allclose(sim.precision[row], torch.stack(prec).mean(0))
        assert torch.allclose(sim.recall_std[row], torch.stack(rec).std(0, unbiased=False))
        assert torch.allclose(sim.perfect[row], torch.stack(perf).mean(0))
    again = simulate_separability(alpha, ns, d=8, cv=0.1, lam=0.3, beta=0.2, samples=6, seed=5)
    assert torch.equal(sim.f1, again.f1)


def test_simulation_limits() -> None:
    alpha = profile("geometric", 12)
    # independent directions in high d: top-N almost always separates
    easy = simulate_separability(alpha, [1, 2, 4], d=512, samples=64)
    assert torch.all(easy.perfect > 0.95)
    # beta = 0, cv = 0, lam = 1: one shared value, so y_i lie on a ray; with strictly
    # decreasing weights D_i = A_N - alpha_i separates exactly
    line = simulate_separability(alpha, [2, 4], d=16, beta=0.0, samples=4)
    assert torch.all(line.perfect == 1)
    # independent directions in d = 2 with flat weights: failures are common
    hard = simulate_separability(profile("peaked", 16), [4, 8], d=2, samples=64)
    assert hard.f1.shape == (2,)
    assert torch.all(hard.perfect < 0.9)
    assert simulate_separability(alpha, 3, d=4, samples=4).precision.shape == ()


def test_simulation_bad_input() -> None:
    with pytest.raises(TlGeomError, match="cv, lam, beta"):
        simulate_separability(profile("uniform", 8), 2, d=4, cv=-1.0)
    with pytest.raises(TlGeomError, match="sink"):
        sample_values(8, 4, sink=8)


def test_envelope_per_head_is_calibrated() -> None:
    """Issue 15: heads drawn from the model with known parameters, measured with
    separability, then enveloped from the parameters the diagnostics fitted: the mean F1
    over heads agrees within 0.05 at every N."""
    from tl_geom.geometry.decay import cosine_decay
    from tl_geom.geometry.diagnostics import norm_stability
    from tl_geom.geometry.simulation import simulate_heads

    gen = torch.Generator().manual_seed(21)
    length, d, windows, ns = 256, 32, 12, [1, 2, 4, 8, 16]
    truth = [(0.1, 0.2, 0.3, 0.0), (0.25, 0.4, 0.05, 0.3), (0.15, 0.1, 0.5, 0.1),
             (0.05, 0.3, 0.1, 0.2), (0.2, 0.2, 1.0, 0.0), (0.1, 0.5, 0.02, 0.4)]  # fmt: skip
    pos = torch.arange(length, dtype=torch.float64)
    measured, profiles, fitted = [], [], []
    for h, (cv, lam, beta, c_inf) in enumerate(truth):
        logits = 3.0 * torch.exp(-(length - 1 - pos) / (5 + 10 * h)) + 0.3 * torch.randn(
            length, generator=gen, dtype=torch.float64
        )
        logits[0] = 4.0
        alpha = torch.softmax(logits, -1)
        v = sample_values(length, d, cv=cv, lam=lam, beta=beta, c_inf=c_inf, samples=windows,
                          generator=gen)  # fmt: skip
        measured.append(separability(alpha.expand(windows, -1), v, ns).f1.double().mean(0))
        norms, decay = norm_stability(v), cosine_decay(v)
        b = decay.beta.nanmedian()
        fitted.append([norms.cv.mean(), norms.lam.mean(), b if torch.isfinite(b) else math.inf,
                       decay.c_inf.nanmedian().clamp(0, 0.99)])  # fmt: skip
        profiles.append(alpha)
    params = torch.tensor([[float(x) for x in row] for row in fitted], dtype=torch.float64)
    env = simulate_heads(torch.stack(profiles), ns, d=d, params=params, samples=16, seed=3)
    gap = (env.f1.mean(0) - torch.stack(measured).mean(0)).abs()
    assert torch.all(gap <= 0.05), gap
