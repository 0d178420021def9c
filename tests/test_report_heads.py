"""The report's "heads to look at" and its attention view of the measured query."""

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TEXT
from test_report import MPL_SVG, assert_offline, make_analysis, parse

from tl_geom import capture_attention, inspect_head, load_model
from tl_geom.app.report import write_report
from tl_geom.jobs import head_rows as head_rows_module
from tl_geom.jobs.aggregate import QUERY_KEYS
from tl_geom.jobs.analyze import analyze
from tl_geom.jobs.head_rows import pick_heads, picture_n
from tl_geom.jobs.results import Analysis, AttentionView, HeadRows
from tl_geom.lens.data import token_windows
from tl_geom.lens.sdpa import load_fused_model


def _tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """2 layers x 4 heads at N = 2, 4; numbers chosen so each pick is known by hand."""
    gap = [0.5, 0.1, 0.3, -0.2, 0.4, 0.0, 0.2, 0.6]
    f1 = [0.9, 0.5, 0.7, 0.1, 0.8, 0.4, 0.6, 0.95]
    heads = pd.DataFrame(
        {
            "layer": [0, 0, 0, 0, 1, 1, 1, 1],
            "head": [0, 1, 2, 3, 0, 1, 2, 3],
            "type": ["Retriever"] * 3 + ["Mixer", "Reset", "unclear", "Mixer", "unclear"],
            "sink_mass": [0.1, 0.2, 0.3, 0.9, 0.5, 0.4, np.nan, 0.2],
            "entropy": [1.0, 2.0, 3.0, 0.5, 4.0, 2.5, 1.5, 2.2],
            "rho0": [0.1, 0.2, 0.7, 0.3, 0.0, 0.1, 0.2, 0.3],
        }
    )
    rows = []
    for i, (lay, hd) in enumerate(zip(heads["layer"], heads["head"], strict=True)):
        for n in (2, 4):
            shift = 0.0 if n == 4 else 0.05  # N = 2 differs: the picks read N = 4 only
            rows.append(
                {"layer": lay, "head": hd, "n": n, "f1": f1[i] - shift,
                 "f1_random": f1[i] - gap[i]}
            )  # fmt: skip
    return pd.DataFrame(rows), heads


def test_pick_heads_by_hand() -> None:
    metrics, heads = _tables()
    picks = pick_heads(metrics, heads, n=4, per_type=2)
    got = {(lay, hd): why for lay, hd, why in picks}
    # two Retrievers by gap (L0H0 0.5, L0H2 0.3; not L0H1 0.1), both Mixers, the Reset
    assert {(0, 0), (0, 2), (0, 3), (1, 2), (1, 0)} <= set(got)
    assert (0, 1) not in got
    assert got[(1, 3)] == "highest F1 at N = 4; highest F1 - random at N = 4"
    assert got[(0, 3)] == (
        "Mixer; lowest F1 at N = 4; lowest F1 - random at N = 4; highest sink mass; lowest entropy"
    )
    assert "highest entropy" in got[(1, 0)] and "highest rho0" in got[(0, 2)]
    assert [p[:2] for p in picks][:5] == [(0, 0), (0, 2), (1, 2), (0, 3), (1, 0)]  # by gap
    assert len(picks) == len(got)  # each head once
    # without a type column, only the extremes; a NaN is never an extreme
    plain = pick_heads(metrics, heads.drop(columns="type").assign(sink_mass=np.nan), n=4)
    assert all("sink mass" not in why and "Retriever" not in why for _, _, why in plain)
    assert picture_n([1, 2, 8]) == 2


@pytest.fixture(scope="module")
def run(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Analysis, Path]:
    model = load_model(str(tiny_dir))
    out = tmp_path_factory.mktemp("heads") / "run"
    res = analyze(model, text=TEXT, windows=2, ctx=20, n=[1, 2, 4, 8], out=out, progress=False)
    return model, res, out


def test_rows_are_window_zeros_final_query(run: tuple[Any, Analysis, Path]) -> None:
    model, res, out = run
    rows = res.head_rows
    assert rows is not None and rows.show == 4 and len(rows.layers) >= 3
    picks = pick_heads(res.metrics, res.heads, 4)
    assert list(zip(rows.layers, rows.heads, rows.reasons, strict=True)) == picks
    tokens = token_windows(model.tokenizer, TEXT, ctx=20, windows=2)
    cap = capture_attention(model, tokens[:1])
    for i, (lay, hd) in enumerate(zip(rows.layers, rows.heads, strict=True)):
        li = cap.layers.index(lay)
        np.testing.assert_array_equal(rows.alpha[i], cap.pattern[0, li, hd, 0].double().numpy())
        np.testing.assert_array_equal(rows.values[i], cap.values[0, li, hd].numpy())
    assert rows.tokens == list(cap.text or ())
    back = Analysis.load(out).head_rows
    assert back is not None and back.reasons == rows.reasons
    np.testing.assert_array_equal(back.values, rows.values)


@pytest.mark.parametrize("backend", ["hooks", "sdpa"])
def test_kept_rows_equal_a_second_forward(
    backend: str, tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Window 0 run here: its kept rows, no second forward; resumed, or rows over the
    budget: the second forward.

    Both give the same bits (the same forward on the same tokens), for either backend.
    """
    model = load_model(str(tiny_dir)) if backend == "hooks" else load_fused_model(str(tiny_dir))
    forwards: list[list[int]] = []
    real = head_rows_module.stream_rows

    def counting(model: Any, layers: list[int], fn: Any) -> Any:
        forwards.append(list(layers))
        return real(model, layers, fn)

    monkeypatch.setattr(head_rows_module, "stream_rows", counting)
    kw: dict[str, Any] = {"text": TEXT, "windows": 2, "ctx": 20, "n": [1, 2, 4, 8]}
    kw |= {"out": tmp_path / "run", "progress": False, "backend": backend}
    fresh = analyze(model, **kw)
    rows = fresh.head_rows
    assert rows is not None and forwards == []  # window 0 ran in this process
    assert fresh.run["backend"] == backend
    resumed = analyze(model, resume=True, **kw)  # every window from disk
    assert forwards == [sorted(set(rows.layers))]  # one forward, the picked layers only
    again = resumed.head_rows
    assert again is not None and again.reasons == rows.reasons
    np.testing.assert_array_equal(again.alpha, rows.alpha)
    np.testing.assert_array_equal(again.values, rows.values)
    assert again.values.dtype == rows.values.dtype == np.float32
    # rows beyond the budget are not kept: a second forward, the same rows
    monkeypatch.setattr(head_rows_module, "KEEP_BYTES", 0)
    kw["out"] = tmp_path / "over-budget"
    over = analyze(model, **kw).head_rows
    assert len(forwards) == 2 and over is not None
    np.testing.assert_array_equal(over.alpha, rows.alpha)
    np.testing.assert_array_equal(over.values, rows.values)


def test_panels_equal_inspect_head(run: tuple[Any, Analysis, Path], tmp_path: Path) -> None:
    model, res, _ = run
    rows = res.head_rows
    assert rows is not None
    page = write_report(res, tmp_path / "r.html").read_text()
    section = page.split('<section id="heads">')[1].split("</section>")[0]
    tokens = token_windows(model.tokenizer, TEXT, ctx=20, windows=2)
    cap = capture_attention(model, tokens[:1])
    for lay, hd, why in zip(rows.layers, rows.heads, rows.reasons, strict=True):
        assert f'id="head-L{lay}H{hd}"' in section and why in section
        ref = inspect_head(cap, lay, hd, n=[1, 2, 4, 8], show=4)
        assert repr(ref) in section  # F1 at 4 vs random: the same numbers
    assert section.count(MPL_SVG) == len(rows.layers)
    assert "r_min" in section and "PCA" in section
    assert_offline(page)
    assert len(parse(page).scripts) <= 1  # circuitsvis once, in the attention view


def test_report_without_rows_and_with_many_keys(tmp_path: Path) -> None:
    a = make_analysis()
    text = write_report(a, tmp_path / "a.html").read_text()
    assert "No heads to look at in this run" in text
    rng = np.random.default_rng(0)
    length = 600  # above the raster threshold: the grey points become one image
    alpha = rng.dirichlet(np.full(length, 0.1), size=2)
    rows = HeadRows(
        layers=[0, 2], heads=[1, 3], reasons=["Reset", "<b>x</b>"],
        tokens=[f"t{i}" for i in range(length)], alpha=alpha,
        values=rng.normal(size=(2, length, 8)).astype(np.float32), show=4,
    )  # fmt: skip
    b = Analysis(a.metrics, a.heads, a.envelope, a.profiles, a.view, a.run, head_rows=rows)
    text = write_report(b, tmp_path / "b.html").read_text()
    section = text.split('<section id="heads">')[1].split("</section>")[0]
    assert "&lt;b&gt;x&lt;/b&gt;" in section and "<b>x</b>" not in section
    assert "<image" in section  # rasterised scatter inside the SVG
    assert len(section.encode()) < 600_000
    assert_offline(text)


def test_view_keeps_the_measured_query_row(run: tuple[Any, Analysis, Path]) -> None:
    """view.json: the final query of window 0 over its heaviest keys, weights as measured."""
    model, _, out = run
    view = Analysis.load(out).view
    assert view is not None and view.query_weights is not None
    tokens = token_windows(model.tokenizer, TEXT, ctx=20, windows=2)
    cap = capture_attention(model, tokens[:1], layers=[view.layer])
    row = cap.pattern[0, 0, :, 0].double()  # [H, L]
    keys = view.query_positions
    assert keys == sorted(keys) and len(keys) == min(QUERY_KEYS, 20)
    np.testing.assert_allclose(view.query_weights, row[:, keys].numpy(), rtol=0, atol=1e-12)
    assert cap.text is not None and view.query_tokens[-1] == cap.text[-1]


def test_query_keys_are_the_heaviest_by_max_over_heads() -> None:
    """_attention_view on a synthetic window: top-K by the largest weight over heads."""
    from tl_geom.jobs.aggregate import _attention_view  # pyright: ignore[reportPrivateUsage]
    from tl_geom.jobs.window import WindowSpec

    gen = torch.Generator().manual_seed(3)
    length, heads = 60, 3
    profile = torch.rand(2, heads, length, generator=gen, dtype=torch.float64)
    profile /= profile.sum(-1, keepdim=True)
    first = {"view": torch.rand(2, heads, 8, 8), "profile": profile}
    stack = {"sink_mass": torch.tensor([[[0.1] * heads, [0.5] * heads]])}  # layer 1 wins
    spec = WindowSpec(n=(1, 2), queries="last", draws=0, seed=0, causal=True, layers=(4, 7))
    text = [f"w{i}" for i in range(length)]
    view = _attention_view(first, stack, spec, text)
    assert view is not None and view.layer == 7
    best = profile[1].amax(0)
    threshold = sorted(best.tolist(), reverse=True)[QUERY_KEYS - 1]
    want = [i for i in range(length) if best[i] >= threshold]
    assert view.query_positions == want
    assert view.query_tokens == [f"w{i}" for i in want] + ["w59"]
    assert view.query_weights is not None
    np.testing.assert_array_equal(view.query_weights, profile[1][:, want].numpy())
    back = AttentionView.from_json(view.to_json())
    assert back.query_positions == want
    np.testing.assert_array_equal(back.query_weights, view.query_weights)  # pyright: ignore
    old = AttentionView.from_json('{"layer": 1, "tokens": ["a"], "pattern": [[[1.0]]]}')
    assert old.query_weights is None and old.query_positions == []


def test_report_draws_the_measured_query(tmp_path: Path) -> None:
    a = make_analysis()
    assert a.view is not None
    plain = write_report(a, tmp_path / "a.html").read_text()
    assert "This run kept no measured query row" in plain
    w = np.array([[0.5, 0.1, 0.2], [0.05, 0.6, 0.1], [0.3, 0.3, 0.3], [0.2, 0.2, 0.5]])
    view = replace(
        a.view,
        query_positions=[0, 7, 30],
        query_tokens=["<s>", "$x$", "</script>", "end"],
        query_weights=w,
    )
    b = Analysis(a.metrics, a.heads, a.envelope, a.profiles, view, a.run)
    text = write_report(b, tmp_path / "b.html").read_text()
    section = text.split('<section id="attention">')[1].split("</section>")[0]
    assert "The measured query" in section and "3 heaviest keys" in section
    assert "0.750 to 0.900 of a head" in section  # row sums 0.8, 0.75, 0.9, 0.9
    assert "&#x27;end&#x27;" in section or "'end'" in section
    assert "$x$ (7)" in section  # drawn as text, not as mathtext
    assert section.count(MPL_SVG) == 1 and "The first 8 tokens" in section
    assert_offline(text)
    assert len(parse(text).scripts) == 1
