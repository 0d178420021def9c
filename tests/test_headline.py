"""The headline: N = 2 and 4 first, gap over random, share ahead, interval over windows."""

import math

import numpy as np
import pandas as pd
import pytest

from tl_geom.app.headline import headline, headline_ns, window_interval


def _metrics(windows: int) -> pd.DataFrame:
    rows = []
    for head, (f1, rnd, sd) in enumerate([(0.9, 0.5, 0.1), (0.4, 0.6, 0.3)]):
        for n in (1, 2, 4, 8):
            rows.append(
                {"layer": 0, "head": head, "n": n, "f1": f1, "f1_random": rnd,
                 "f1_gap_std_random": sd, "windows": windows}
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_headline_numbers_by_hand() -> None:
    """Without window_gaps (runs made before they were kept): the SD fallback."""
    lines = headline(_metrics(windows=5))
    assert [line.split(":")[0] for line in lines] == ["N = 2", "N = 4"]
    gap = ((0.9 - 0.5) + (0.4 - 0.6)) / 2  # 0.1
    se = (0.1 + 0.3) / 2 / math.sqrt(5 - 1)  # 0.1
    assert f"gap {gap:+.3f}" in lines[0]
    assert "ahead in 1 of 2 heads (50%)" in lines[0]
    assert f"[{gap - 1.96 * se:+.3f}, {gap + 1.96 * se:+.3f}]" in lines[0]


def test_one_window_has_no_interval_and_no_baseline_no_headline() -> None:
    assert "interval" not in headline(_metrics(windows=1))[0]
    no_baseline = _metrics(windows=3).assign(f1_random=float("nan"))
    assert headline(no_baseline) == []
    assert headline_ns([1, 8, 16]) == [8]


def _window_gaps(rng: np.random.Generator, windows: int, heads: int, skew: bool) -> np.ndarray:
    """Per-window mean-over-heads gaps of a synthetic run whose expected gap is TRUTH.

    Heads of a window share its text (a window effect u_w), plus head noise; with
    ``skew`` the window effect is a centred exponential (a long right tail).
    """
    u = rng.exponential(0.1, windows) - 0.1 if skew else rng.normal(0, 0.1, windows)
    per_head = TRUTH + u[:, None] + rng.normal(0, 0.2, (windows, heads))
    return per_head.mean(1)


TRUTH = 0.3


@pytest.mark.parametrize(("windows", "skew"), [(4, False), (8, False), (8, True), (32, True)])
def test_window_interval_is_calibrated(windows: int, skew: bool) -> None:
    """95% intervals on runs drawn with a known expected gap cover it 95% of the time."""
    rng = np.random.default_rng(windows + 100 * skew)
    reps = 400
    cover = 0
    for _ in range(reps):
        lo, hi = window_interval(_window_gaps(rng, windows, 30, skew), draws=1000)
        cover += lo <= TRUTH <= hi
    # binomial SD at 95% over 400 runs is 1.1%: 0.91-0.99 is a 4-SD band either side
    assert 0.91 <= cover / reps <= 0.99, cover / reps


def test_window_interval_shrinks_with_more_windows() -> None:
    rng = np.random.default_rng(5)
    widths = {}
    for windows in (8, 32, 128):
        runs = [window_interval(_window_gaps(rng, windows, 30, False)) for _ in range(50)]
        widths[windows] = float(np.mean([hi - lo for lo, hi in runs]))
    # the width goes like 1/sqrt(W) (times t/z, which falls toward 1): ratios near 2
    assert 1.6 < widths[8] / widths[32] < 2.8 and 1.6 < widths[32] / widths[128] < 2.4
    assert math.isnan(window_interval(np.array([0.3]))[0])  # one window: no interval
    assert math.isnan(window_interval(np.array([0.3, np.nan]))[0])


def test_headline_bootstraps_the_window_gaps() -> None:
    """With run.json's window_gaps, the interval is window_interval of that N's column."""
    gaps = {"n": [1, 2, 4, 8], "gap": [[0.0, 0.1 * w, 0.05 * w, 0.0] for w in range(6)]}
    lines = headline(_metrics(windows=6), gaps)
    lo, hi = window_interval(np.array([0.1 * w for w in range(6)]))
    assert f"95% bootstrap interval over 6 windows [{lo:+.3f}, {hi:+.3f}]" in lines[0]
    lo4, hi4 = window_interval(np.array([0.05 * w for w in range(6)]))
    assert f"[{lo4:+.3f}, {hi4:+.3f}]" in lines[1] and "SDs" not in lines[1]
    # t-widened: wider than the plain percentile interval of the same resamples
    assert hi - lo > 2 * 1.96 * np.std([0.1 * w for w in range(6)]) / math.sqrt(6)
    one = {"n": [2, 4], "gap": [[0.2, 0.1]]}
    assert "interval" not in headline(_metrics(windows=1), one)[0]
