"""Calibration of the verdict rules of the softmax-limits and sink papers (issue 16).

Data drawn from a known truth: a claim true by construction -> "reproduced", false ->
"not reproduced", too few samples to tell -> "inconclusive".
"""

import numpy as np
import pandas as pd
import pytest

from tl_geom import claim
from tl_geom.sinks import claims as sc


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
    true = sc.claim_variance_amplification(_summary(rng, 100, amp=0.4, ctl=0.02, sd=0.1))
    assert true.verdict == claim.REPRODUCED and true.n == 100
    false = sc.claim_variance_amplification(_summary(rng, 100, amp=0.02, ctl=0.02, sd=0.1))
    assert false.verdict == claim.NOT
    both = sc.claim_variance_amplification(_summary(rng, 100, amp=0.4, ctl=0.4, sd=0.1))
    assert both.verdict == claim.PARTLY  # the control makes the sink too
    few = sc.claim_variance_amplification(_summary(rng, 4, amp=0.4, ctl=0.02, sd=0.1))
    assert few.verdict == claim.INCONCLUSIVE
    noisy = sc.claim_variance_amplification(_summary(rng, 100, amp=0.12, ctl=0.02, sd=1.0))
    assert noisy.verdict == claim.INCONCLUSIVE  # the interval straddles the threshold


def test_variance_amplification_interval_covers_the_truth() -> None:
    rng = np.random.default_rng(0)
    hits = []
    for _ in range(200):
        lo, hi = sc.claim_variance_amplification(_summary(rng, 100, 0.4, 0.02, 0.1)).interval or (
            np.nan, np.nan)  # fmt: skip
        hits.append(lo < 0.4 < hi)
    assert 0.9 <= np.mean(hits) <= 0.99  # a +-2 se interval: about 95%


def test_headnorm_without_a_baseline_sink_is_inconclusive() -> None:
    summary = pd.DataFrame(
        {"arm": ["baseline", "headnorm"], "dom_ratio": [2.5, 2.25], "sink_rate": [0.0, 0.0],
         "val_loss": [2.0, 2.0], "effective_rank": [10.0, 11.0], "sink_step": [np.nan] * 2}
    )  # fmt: skip
    f = sc.claim_headnorm(summary, 100)
    assert f.verdict == claim.INCONCLUSIVE and "no baseline sink" in f.measured
    summary["sink_rate"] = [0.6, 0.0]
    summary["dom_ratio"] = [80.0, 30.0]
    assert sc.claim_headnorm(summary, 100).verdict == claim.REPRODUCED
