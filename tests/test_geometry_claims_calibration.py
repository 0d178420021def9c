"""Calibration of top-N vs random, the small-N peak, the head regimes and sparsification.

Each rule on tables where its claim is true by construction says "reproduced", where it
is false "not reproduced" (or "partly" where the rule says so), and on too little data
"inconclusive", never "partly" for want of power (issue 15).
"""

import numpy as np
import pandas as pd
import pytest

from tl_geom.claim import INCONCLUSIVE, NOT, PARTLY, REPRODUCED
from tl_geom.geometry import claims as gc
from tl_geom.geometry import regimes_claims as rc

NS = [1, 2, 3, 4, 6, 8, 16, 32, 64]


def metrics_table(heads: int, gap: float, peak: float, seed: int = 0) -> pd.DataFrame:
    """Per head and N: F1 a noisy bump over log2 N peaking at ``peak`` (N = 1 perfect), and
    the random baseline ``gap`` below it (plus noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for h in range(heads):
        for n in NS:
            bump = np.exp(-((np.log2(n) - np.log2(peak)) ** 2) / 2)
            f1 = 1.0 if n == 1 else 0.3 + 0.4 * bump + rng.normal(0, 0.05)
            rnd = f1 - gap + rng.normal(0, 0.03)
            rows.append({"layer": h // 9, "head": h % 9, "n": n, "f1": f1, "f1_random": rnd})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    ("heads", "gap", "expected"),
    [(270, 0.1, REPRODUCED), (270, -0.1, NOT), (270, 0.007, PARTLY), (6, 0.1, INCONCLUSIVE)],
)
def test_top_beats_random_is_calibrated(heads: int, gap: float, expected: str) -> None:
    f = gc.claim_top_beats_random(metrics_table(heads, gap, 2))
    assert f.verdict == expected, f.measured
    assert f.n == heads and f.interval is not None


@pytest.mark.parametrize(
    ("heads", "peak", "expected"),
    [(270, 2, REPRODUCED), (270, 7, PARTLY), (270, 32, NOT), (6, 2, INCONCLUSIVE)],
)
def test_peak_small_n_is_calibrated(heads: int, peak: float, expected: str) -> None:
    f = gc.claim_peak_small_n(metrics_table(heads, 0.1, peak))
    assert f.verdict == expected, f.measured
    assert f.n == heads


def test_peak_with_a_flat_top_is_inconclusive() -> None:
    """F1 equal at N = 4 and N = 6 up to noise: the interval straddles 4."""
    m = metrics_table(270, 0.1, 24**0.5)  # the bump is symmetric in log2 N around 4 and 6
    assert gc.claim_peak_small_n(m).verdict == INCONCLUSIVE


def test_peak_bootstrap_against_a_loop() -> None:
    rng = np.random.default_rng(1)
    f1 = rng.uniform(0, 1, (30, 5))
    ns = np.array([2.0, 3.0, 4.0, 8.0, 16.0])
    n_star, (lo, hi) = gc.peak_bootstrap(f1, ns, draws=300, seed=7)
    gen = np.random.default_rng(7)
    picks = gen.integers(0, 30, (300, 30))
    loop = [ns[int(np.argmax(f1[p].mean(0)))] for p in picks]
    assert n_star == ns[int(np.argmax(f1.mean(0)))]
    assert (lo, hi) == (np.quantile(loop, 0.025), np.quantile(loop, 0.975))


# ---------------------------------------------------------------- head regimes


def regimes_table(
    order: tuple[str, ...], layers: int = 30, kv: int = 3, noise: float = 0.2, seed: int = 0
) -> pd.DataFrame:
    """Heads of ``layers`` x ``kv`` KV groups x 3 query heads; the type of a KV group's heads
    follows depth in ``order`` (thirds of the layers), a ``noise`` share drawn at random."""
    rng = np.random.default_rng(seed)
    kinds = ("Retriever", "Mixer", "Reset", "unclear")
    rows = []
    for layer in range(layers):
        for g in range(kv):
            for q in range(3):
                band = order[min(len(order) - 1, layer * len(order) // layers)]
                kind = str(rng.choice(kinds)) if rng.uniform() < noise else band
                rows.append({"layer": layer, "head": g * 3 + q, "kv_head": g, "type": kind})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (regimes_table(("Retriever", "Reset", "Mixer")), REPRODUCED),
        (regimes_table(("Retriever", "Mixer", "Reset")), PARTLY),  # three regimes, other order
        (regimes_table(("Retriever", "Mixer"), noise=0.0), NOT),  # no Reset heads
        (regimes_table(("Retriever", "Reset", "Mixer"), layers=3, kv=1), INCONCLUSIVE),
        (regimes_table(("Retriever",), noise=1.0), INCONCLUSIVE),  # types blind to depth
    ],
)
def test_head_regimes_is_calibrated(table: pd.DataFrame, expected: str) -> None:
    f = rc.claim_head_regimes(table, 0.5)
    assert f.verdict == expected, f.measured
    assert f.n == table.groupby(["layer", "kv_head"]).ngroups  # KV groups, each once


def test_regime_bootstrap_against_a_literal_computation() -> None:
    t = regimes_table(("Retriever", "Reset", "Mixer"), layers=12, kv=2, noise=0.5, seed=3)
    boot = rc.regime_bootstrap(t, draws=20, seed=5)
    depth = t["layer"] / t["layer"].max()
    keys = list(zip(t["layer"], t["kv_head"], strict=True))
    groups = sorted(set(keys))
    picks = np.random.default_rng(5).integers(0, len(groups), (20, len(groups)))
    for b, pick in enumerate([None, *picks]):
        chosen = groups if pick is None else [groups[i] for i in pick]
        rows = [i for g in chosen for i in range(len(t)) if keys[i] == g]
        kinds = t["type"].to_numpy()[rows]
        d = depth.to_numpy()[rows]
        for j, kind in enumerate(rc.ORDER):
            sel = kinds == kind
            assert boot["share"][b, j] == pytest.approx(sel.mean())
            if sel.any():
                assert boot["depth"][b, j] == pytest.approx(d[sel].mean())


# ---------------------------------------------------------------- sparsification


def sparsify_table(type_scale: float, seeds: int, seed: int = 0) -> pd.DataFrame:
    """Loss changes: random seeds around f, the type rule ``type_scale`` times f, the
    entropy heuristic below the type rule at the smallest fraction only."""
    rng = np.random.default_rng(seed)
    rows = []
    fractions = (0.05, 0.1, 0.2, 0.3, 0.5)
    for f in fractions:
        for s in range(seeds):
            rows.append(("random", f, s, f * rng.uniform(0.9, 1.1)))
        rows.append(("type", f, None, type_scale * f))
        rows.append(("entropy", f, None, 0.0 if f == 0.05 else 2 * f))
        rows.append(("sink_mass", f, None, 3 * f))
        rows.append(("last_token", f, None, 3 * f))
    t = pd.DataFrame(rows, columns=["rule", "fraction", "seed", "delta_loss"])
    return t.assign(ablation="zero")


@pytest.mark.parametrize(
    ("type_scale", "seeds", "expected"),
    [(0.5, 3, REPRODUCED), (1.5, 3, NOT), (0.5, 1, INCONCLUSIVE), (1.0, 5, INCONCLUSIVE)],
)
def test_sparsify_is_calibrated(type_scale: float, seeds: int, expected: str) -> None:
    f = gc.claim_sparsify(sparsify_table(type_scale, seeds))
    assert f.verdict == expected, f.measured
    assert f.n == seeds and f.interval is not None
