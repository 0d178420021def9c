"""Calibration of the separability paper's claim rules (issue 15).

Each rule on data where its claim is true by construction says "reproduced", on data
where it is false "not reproduced", and on too little data "inconclusive". The heads
tables are built by the library's own diagnostics from values drawn from the
assumption model, so the test covers the measurement and the rule together.
"""

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
from test_diagnostics import literal_spearman

from tl_geom.claim import INCONCLUSIVE, NOT, REPRODUCED, share_verdict, wilson_interval
from tl_geom.geometry import assumption_claims as gac
from tl_geom.geometry.decay import cosine_decay
from tl_geom.geometry.diagnostics import norm_cv_positions, norm_stability, spearman
from tl_geom.geometry.rho0_claims import _spearman  # pyright: ignore[reportPrivateUsage]
from tl_geom.geometry.simulation import sample_values

GROUPS = 3  # query heads per KV head, as in SmolLM2


def heads_from_kv(kv: dict[str, np.ndarray], layers: int) -> pd.DataFrame:
    """A heads table: KV-head columns repeated to GROUPS query heads each."""
    n_kv = len(next(iter(kv.values())))
    per_layer = n_kv // layers
    rows = []
    for g in range(n_kv):
        for q in range(GROUPS):
            row = {k: float(v[g]) for k, v in kv.items()}
            layer, kv_head = divmod(g, per_layer)
            rows.append({"layer": layer, "head": kv_head * GROUPS + q, "kv_head": kv_head, **row})
    return pd.DataFrame(rows)


def decay_heads(n_kv: int, beta: float) -> pd.DataFrame:
    gen = torch.Generator().manual_seed(n_kv)
    v = sample_values(256, 64, cv=0.2, lam=0.3, beta=beta, c_inf=0.2, samples=n_kv, generator=gen)
    res = cosine_decay(v)
    kv = {"decay_holds": res.holds.double().numpy(), "beta_r2": res.r2.numpy(),
          "beta": res.beta.numpy(), "c_inf": res.c_inf.numpy()}  # fmt: skip
    return heads_from_kv(kv, 1)


@pytest.mark.parametrize(
    ("n_kv", "beta", "expected"),
    [(40, 0.1, REPRODUCED), (40, math.inf, NOT), (2, 0.1, INCONCLUSIVE)],
)
def test_cosine_decay_claim_is_calibrated(n_kv: int, beta: float, expected: str) -> None:
    f = gac.claim_cosine_decay(decay_heads(n_kv, beta))
    assert f.verdict == expected, f.measured
    assert f.n == n_kv  # KV heads counted once, not GROUPS times


def norms_heads(n_kv: int, cv_pos: float, lam: float, windows: int) -> pd.DataFrame:
    """KV heads whose norms = a positional profile (CV cv_pos) x token noise (CV 0.22)."""
    gen = torch.Generator().manual_seed(7)
    length = 256
    profile = 1 + cv_pos * torch.randn(n_kv, length, generator=gen, dtype=torch.float64)
    profile = profile.clamp_min(0.05)
    profile[:, 0] = lam * profile[:, 1:].mean(-1)
    s2 = math.log1p(0.22**2)
    noise = torch.exp(math.sqrt(s2) * torch.randn(windows, n_kv, length, generator=gen) - s2 / 2)
    noise[:, :, 0] = 1.0
    norms = profile * noise
    pos = norm_cv_positions(norms)
    v = norms[0].unsqueeze(-1) * torch.eye(1, dtype=torch.float64)  # [kv, L, 1] values
    tok = norm_stability(v)
    kv = {
        "norm_cv_positions": pos.cv.numpy(),
        "norm_cv_tokens": tok.cv.numpy(),
        "sink_lambda": tok.lam.numpy(),
        "sink_compressed": tok.compressed.double().numpy(),
    }
    return heads_from_kv(kv, 1)


@pytest.mark.parametrize(
    ("n_kv", "cv_pos", "lam", "expected"),
    [(40, 0.03, 0.2, REPRODUCED), (40, 0.4, 1.0, NOT), (3, 0.03, 0.2, INCONCLUSIVE)],
)
def test_value_norms_claim_is_calibrated(n_kv: int, cv_pos: float, lam: float, expected: str):
    f = gac.claim_value_norms(norms_heads(n_kv, cv_pos, lam, windows=32))
    assert f.verdict == expected, f.measured
    assert f.n == n_kv and f.interval is not None


def test_value_norms_claim_without_windows_is_inconclusive() -> None:
    f = gac.claim_value_norms(norms_heads(40, 0.03, 0.2, windows=1))  # no positional CV
    assert f.verdict == INCONCLUSIVE


@pytest.mark.parametrize(
    ("n_heads", "share", "expected"),
    [(120, 0.9, REPRODUCED), (120, 0.0, NOT), (4, 0.5, INCONCLUSIVE)],
)
def test_four_phase_claim_is_calibrated(n_heads: int, share: float, expected: str) -> None:
    holds = np.arange(n_heads) < round(share * n_heads)
    heads = pd.DataFrame({"layer": 0, "head": np.arange(n_heads), "profile_holds": holds,
                          "profile_r2": 0.9})  # fmt: skip
    assert gac.claim_four_phase(heads).verdict == expected


def rho0_tables(n_kv: int, strength: float, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Recall_N of each query head = strength * rho0 * bump(N peaking at 4) + noise."""
    rng = np.random.default_rng(seed)
    layers = max(1, n_kv // 3)
    rho0 = rng.uniform(0, 1, n_kv)
    heads = heads_from_kv({"rho0": rho0}, layers)
    ns = [1, 2, 3, 4, 6, 8, 16]
    rows = []
    for _, h in heads.iterrows():
        for n in ns:
            bump = math.exp(-((math.log2(n) - 2) ** 2))
            rec = 0.5 + strength * h["rho0"] * bump + rng.normal(0, 0.1)
            rows.append({"layer": h["layer"], "head": h["head"], "n": n, "recall": rec})
    return pd.DataFrame(rows), heads


@pytest.mark.parametrize(
    ("n_kv", "strength", "expected"),
    [(90, 0.5, REPRODUCED), (600, 0.0, NOT), (5, 0.5, INCONCLUSIVE)],
)
def test_rho0_recall_claim_is_calibrated(n_kv: int, strength: float, expected: str) -> None:
    metrics, heads = rho0_tables(n_kv, strength)
    f = gac.claim_rho0_recall(metrics, heads)
    assert f.verdict == expected, f.measured
    assert f.n == n_kv  # KV heads with the group's mean Recall, each counted once


def test_rho0_recall_claim_false_when_anticorrelated() -> None:
    metrics, heads = rho0_tables(90, -0.5)
    assert gac.claim_rho0_recall(metrics, heads).verdict == NOT


def test_share_verdict_literal() -> None:
    """share_verdict against the Wilson interval computed by hand."""
    for k, n in ((0, 10), (3, 10), (9, 10), (45, 90), (2, 3)):
        p, z = k / n, 1.96
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        lo, hi = wilson_interval(k, n)
        assert lo == pytest.approx(max(0.0, centre - half)) and hi == pytest.approx(
            min(1.0, centre + half)
        )
        want = ("reproduced" if lo >= 0.5 else "not reproduced" if hi < 0.2
                else "partly" if lo >= 0.2 and hi < 0.5 else "inconclusive")  # fmt: skip
        assert share_verdict(k, n) == want


def test_bootstrap_spearman_matches_the_diagnostic() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        x = rng.integers(0, 4, 12).astype(np.float64)  # ties
        y = x + rng.integers(-2, 3, 12)
        ref = scipy.stats.spearmanr(x, y).statistic
        ours = float(spearman(torch.tensor(x), torch.tensor(y).view(-1, 1))[0])
        assert _spearman(x, y) == pytest.approx(ref) and ours == pytest.approx(ref)
        assert _spearman(x, y) == pytest.approx(literal_spearman(x.tolist(), y.tolist()))
    assert math.isnan(_spearman(np.ones(5), np.arange(5.0)))  # constant: nan
    assert math.isnan(_spearman(np.arange(2.0), np.arange(2.0)))  # fewer than 3 points
