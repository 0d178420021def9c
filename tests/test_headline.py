"""The headline: N = 2 and 4 first, gap over random, share ahead, interval over windows."""

import math

import pandas as pd

from tl_geom.app.headline import headline, headline_ns


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
