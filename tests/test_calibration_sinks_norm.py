"""Calibration of the verdict rules of the softmax-limits and sink papers (issue 16).

Data drawn from a known truth: a claim true by construction -> "reproduced", false ->
"not reproduced", too few samples to tell -> "inconclusive".
"""

import numpy as np
import pandas as pd
import pytest

from tl_geom import claim
from tl_geom.sinks import intervention_claims as sic


def _summary(rng: np.random.Generator, n: int, amp: float, ctl: float, sd: float) -> pd.DataFrame:
    """A shift_summary frame from per-sample imp(k) drawn around the given true means."""
    rows = []
    for arm, top in (("amplify", amp), ("control", ctl)):
        for lam, frac in ((4.0, 0.25), (16.0, 0.5), (64.0, 1.0)):
            true = 0.01 + frac * (top - 0.01)
            draws = true + sd * rng.standard_normal(n)
            rows.append(
                {"arm": arm, "site": "z", "k": 10, "lam": lam, "edited_layer": 3,
                 "imp_k_before": 0.01, "imp_k_after": float(draws.mean()),
                 "delta_k": float(draws.mean() - 0.01),
                 "delta_k_se": float(draws.std(ddof=1) / np.sqrt(n)), "n": n}
            )  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", range(5))
def test_variance_amplification_calibrated(seed: int) -> None:
    rng = np.random.default_rng(seed)
    true = sic.claim_variance_amplification(_summary(rng, 100, amp=0.4, ctl=0.02, sd=0.1))
    assert true.verdict == claim.REPRODUCED and true.n == 100
    false = sic.claim_variance_amplification(_summary(rng, 100, amp=0.02, ctl=0.02, sd=0.1))
    assert false.verdict == claim.NOT
    both = sic.claim_variance_amplification(_summary(rng, 100, amp=0.4, ctl=0.4, sd=0.1))
    assert both.verdict == claim.PARTLY  # the control makes the sink too
    few = sic.claim_variance_amplification(_summary(rng, 4, amp=0.4, ctl=0.02, sd=0.1))
    assert few.verdict == claim.INCONCLUSIVE
    noisy = sic.claim_variance_amplification(_summary(rng, 100, amp=0.12, ctl=0.02, sd=1.0))
    assert noisy.verdict == claim.INCONCLUSIVE  # the interval straddles the threshold


def test_variance_amplification_interval_covers_the_truth() -> None:
    rng = np.random.default_rng(0)
    hits = []
    for _ in range(200):
        lo, hi = sic.claim_variance_amplification(_summary(rng, 100, 0.4, 0.02, 0.1)).interval or (
            np.nan, np.nan)  # fmt: skip
        hits.append(lo < 0.4 < hi)
    assert 0.9 <= np.mean(hits) <= 0.99  # a +-2 se interval: about 95%


def test_headnorm_without_a_baseline_sink_is_inconclusive() -> None:
    summary = pd.DataFrame(
        {"arm": ["baseline", "headnorm"], "dom_ratio": [2.5, 2.25], "sink_rate": [0.0, 0.0],
         "val_loss": [2.0, 2.0], "effective_rank": [10.0, 11.0], "sink_step": [np.nan] * 2}
    )  # fmt: skip
    f = sic.claim_headnorm(summary, 100)
    assert f.verdict == claim.INCONCLUSIVE and "no baseline sink" in f.measured
    summary["sink_rate"] = [0.6, 0.0]
    summary["dom_ratio"] = [80.0, 30.0]
    assert sic.claim_headnorm(summary, 100).verdict == claim.REPRODUCED


GRID = [1, 2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64]


def _heads(rng: np.random.Generator, windows: int, n_star: list[int]) -> tuple:
    """d~ samples [window, head, N]: top-N differs from random (3 sd) exactly below N*_h."""
    import torch

    grid = np.array(GRID)
    random = rng.standard_normal((windows, len(n_star), len(GRID)))
    top = rng.standard_normal((windows, len(n_star), len(GRID)))
    shift = 3.0 * (grid[None, :] < np.array(n_star)[:, None])  # [head, N]
    return torch.tensor(top + shift[None]), torch.tensor(random)


@pytest.mark.parametrize("windows", [32, 128])
def test_critical_n_by_head_recovers_known_n_star(windows: int) -> None:
    from tl_geom.normalization.critical import critical_n_by_head

    truth = [2, 6, 11, 23, 45]
    rng = np.random.default_rng(windows)
    misses = 0
    for _ in range(10):
        top, rnd = _heads(rng, windows, truth)
        got = critical_n_by_head(top, rnd, GRID).n_star.numpy()
        step = [abs(GRID.index(int(g)) - GRID.index(t)) if np.isfinite(g) else 99
                for g, t in zip(got, truth, strict=True)]  # fmt: skip
        misses += sum(s > 1 for s in step)
    assert misses <= 1  # within one grid step, at both sample sizes (50 heads, ~1% slack)


def test_critical_n_by_head_shapes_and_literal() -> None:
    import torch
    from scipy.stats import ks_2samp

    from tl_geom.errors import TlGeomError
    from tl_geom.normalization.critical import critical_n_by_head

    rng = np.random.default_rng(1)
    top, rnd = _heads(rng, 40, [4, 100])
    res = critical_n_by_head(top, rnd, GRID)
    for h in range(2):  # the slow way: one scipy test per head and N
        for j in range(len(GRID)):
            ref = ks_2samp(top[:, h, j].numpy(), rnd[:, h, j].numpy(), method="exact")
            assert float(res.pvalue[h, j]) == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-12)
    assert res.windows == 40 and np.isnan(float(res.n_star[1]))  # rejects at every N of the grid
    frame = res.to_frame(256)
    assert len(frame) == 2 * len(GRID) and set(frame["length"]) == {256}
    with pytest.raises(TlGeomError, match="windows"):
        critical_n_by_head(top[:1], rnd[:1], GRID)
    with pytest.raises(TlGeomError, match="ns"):
        critical_n_by_head(top, rnd, GRID[::-1])
    bare = getattr(critical_n_by_head, "__wrapped__", critical_n_by_head)  # no beartype
    with pytest.raises(TlGeomError, match="differ"):
        bare(top, rnd[:5], GRID)
    del torch


def test_critical_n_claim_on_synthetic_heads() -> None:
    import pandas as pd

    from tl_geom.normalization import claims as nc
    from tl_geom.normalization.critical import critical_n_by_head

    rng = np.random.default_rng(2)
    frames = []
    for length in (64, 128, 256, 512):  # N* = 0.06 L by construction, 32 windows
        truth = [min(GRID, key=lambda g, x=length: abs(g - 0.06 * x))] * 4
        top, rnd = _heads(rng, 32, truth)
        frames.append(critical_n_by_head(top, rnd, GRID).to_frame(length))
    f = nc.claim_critical_n(pd.concat(frames, ignore_index=True))
    assert f.verdict == claim.REPRODUCED and f.n == 32
    frames = []
    for length in (64, 128, 256, 512):  # N* = 2 at every L: a constant, not 0.06 L
        top, rnd = _heads(rng, 32, [2] * 4)
        frames.append(critical_n_by_head(top, rnd, GRID).to_frame(length))
    assert nc.claim_critical_n(pd.concat(frames, ignore_index=True)).verdict == claim.NOT
    top, rnd = _heads(rng, 8, [4] * 4)  # 8 windows: underpowered
    small = [critical_n_by_head(top, rnd, GRID).to_frame(x) for x in (64, 128)]
    assert nc.claim_critical_n(pd.concat(small, ignore_index=True)).verdict == claim.INCONCLUSIVE


def test_gradient_sensitivity_capped_eps_dropped_and_said() -> None:
    import pandas as pd

    from tl_geom.normalization import claims as nc

    ts = [0.001, 0.003, 0.01, 0.03, 0.1, 1.0]
    rows = []
    for eps in (1e-3, 10.0):  # g ~ 1/T for small eps (true); the cap binds at eps = 10
        for row in range(16):
            for t in ts:
                g = (0.5 + 0.01 * row) / t if eps < 1 else 0.2
                rows.append({"temperature": t, "eps": eps, "sensitivity": g, "change": g * eps,
                             "jacobian_at": g, "row": row})  # fmt: skip
    f = nc.claim_gradient_sensitivity(pd.DataFrame(rows), 0.25)
    assert f.verdict == claim.REPRODUCED and f.numbers["dropped_eps"] == ["10"] and f.n == 16
    assert "eps 10 dropped" in f.measured and "25% of rows saturated" in f.measured
    every = pd.DataFrame(rows).assign(change=1.5)
    assert nc.claim_gradient_sensitivity(every).verdict == claim.INCONCLUSIVE
    flat = pd.DataFrame(rows).assign(sensitivity=1.0, change=1e-3)  # no 1/T law at kept eps
    assert nc.claim_gradient_sensitivity(flat).verdict == claim.NOT
