"""The main job: `tl-geom analyze` end to end, resume, tables, bad input."""

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TEXT

import tl_geom.jobs.config as config_mod
import tl_geom.jobs.resume as resume_mod
from tl_geom import TlGeomError
from tl_geom.app.cli import main
from tl_geom.geometry.taxonomy import classify_heads, head_curves
from tl_geom.geometry.top_n import separability
from tl_geom.jobs.analyze import analyze
from tl_geom.jobs.results import Analysis
from tl_geom.sinks.sink_math import sink_importance


def _args(tiny_dir: Path, corpus_file: Path, out: Path, *extra: str) -> list[str]:
    return [
        "analyze",
        "--model",
        str(tiny_dir),
        "--corpus",
        str(corpus_file),
        "--windows",
        "3",
        "--ctx",
        "24",
        "--out",
        str(out),
        "--no-report",
        *extra,
    ]


def test_cli_end_to_end(tiny_dir: Path, corpus_file: Path, tmp_path: Path, capsys: Any) -> None:
    assert main(_args(tiny_dir, corpus_file, tmp_path / "run")) == 0
    printed = capsys.readouterr().out
    assert "3 windows run" in printed
    # the headline leads with N = 2 and 4: gap, share of heads ahead, interval over windows
    assert "N = 2: top-N F1" in printed and "N = 4: top-N F1" in printed
    assert "heads (" in printed and "95% bootstrap interval over 3 windows" in printed
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    expected = ["layer", "head", "n", "precision", "recall", "f1"]
    expected += ["precision_random", "recall_random", "f1_random"]
    assert list(metrics.columns[:9]) == expected
    assert {"margin", "r_max", "r_min", "f1_std", "f1_gap_std_random", "windows"} <= set(
        metrics.columns
    )
    assert len(metrics) == 2 * 4 * 4  # layers x heads x N (1, 2, 4, 8 up to 24/2)
    # the margin in value space: r_min - r_max (mean over windows), positive exactly where
    # every window separates perfectly (P = R = 1 there)
    margin = metrics["value_margin"].to_numpy(float)
    np.testing.assert_allclose(margin, metrics["r_min"] - metrics["r_max"], rtol=1e-12)
    perfect = (metrics["precision"] == 1) & (metrics["recall"] == 1)
    assert perfect.any() and (margin[perfect.to_numpy()] > 0).all()
    assert sorted(metrics["n"].unique()) == [1, 2, 4, 8]
    assert metrics[["precision", "recall", "f1"]].stack().between(0, 1).all()
    heads = pd.read_csv(tmp_path / "run" / "heads.csv")
    assert len(heads) == 8
    assert set(heads["type"]) <= {"Retriever", "Mixer", "Reset", "unclear"}
    assert {"c_last_early", "share_sink", "mass_last", "last_token", "cluster"} <= set(heads)
    stable = heads["type_stability"].to_numpy(float)  # share of window resamples agreeing
    assert ((stable >= 0) & (stable <= 1)).all()
    assert {"sink_mass", "entropy", "norm_cv_tokens", "sink_lambda", "beta", "rho0"} <= set(heads)
    assert {"norm_cv_positions", "norm_cv_positions_raw", "c_inf"} <= set(heads)
    run = Analysis.load(tmp_path / "run").run
    assert run["config"]["windows"] == 3
    # the headline's unit: per window and N, the mean over heads of F1 - F1 random; the
    # mean over windows is metrics.csv's mean gap (no NaN here)
    per_window = np.asarray(run["window_gaps"]["gap"])
    assert per_window.shape == (3, 4) and run["window_gaps"]["n"] == [1, 2, 4, 8]
    at2 = metrics[metrics["n"] == 2]
    assert per_window[:, 1].mean() == pytest.approx((at2["f1"] - at2["f1_random"]).mean())
    assert len(run["config"]["corpus_sha256"]) == 64
    assert {"torch", "transformer-lens", "transformers"} <= set(run["versions"])


def test_tables_match_a_direct_computation(tiny_dir: Path) -> None:
    """metrics.csv means equal separability on captured final rows, window by window."""
    from tl_geom import capture_attention, load_model
    from tl_geom.lens.data import token_windows

    model = load_model(str(tiny_dir))
    res = analyze(model, text=TEXT, windows=2, ctx=20, n=[1, 3], progress=False)
    tokens = token_windows(model.tokenizer, TEXT, ctx=20, windows=2)
    cap = capture_attention(model, tokens)
    direct = separability(cap.pattern[:, :, :, 0].double(), cap.values, [1, 3])
    want = direct.f1.mean(0)  # [layer, head, N]
    got = res.metrics.sort_values(["layer", "head", "n"])["f1"].to_numpy()
    np.testing.assert_allclose(got, want.flatten().numpy(), rtol=0, atol=1e-12)
    sink = res.heads.sort_values(["layer", "head"])["sink_mass"].to_numpy()
    np.testing.assert_allclose(
        sink, cap.pattern[:, :, :, 0, 0].double().mean(0).flatten(), atol=1e-7
    )
    # taxonomy curves and types: window means of head_curves on the captured final rows
    curves = head_curves(cap.pattern[:, :, :, 0].double(), cap.values, [1, 3], query=19)
    got = res.metrics.sort_values(["layer", "head", "n"])["c_last"].to_numpy()
    np.testing.assert_allclose(got, curves.c_last.mean(0).flatten().numpy(), atol=1e-6)
    mass = torch.stack([curves.mass_sink, curves.mass_last, curves.mass_rest], -1).mean(0)
    types = classify_heads(curves.c_last.mean(0), curves.c_sink.mean(0), mass, n=[1, 3], length=20)
    assert res.heads.sort_values(["layer", "head"])["type"].tolist() == types.labels
    assert res.run["taxonomy"]["counts"] == dict(Counter(types.labels))
    # imp0 at T = min(64, L) = 20: sink_importance of every window's full causal pattern
    full = capture_attention(model, tokens, queries=None).pattern
    imp0 = sink_importance(full.double())[..., 0].mean(0)  # [layer, head]
    got = res.heads.sort_values(["layer", "head"])["imp0"].to_numpy()
    np.testing.assert_allclose(got, imp0.flatten().numpy(), atol=1e-7)


def test_resume_after_interruption_gives_the_same_tables(
    tiny_dir: Path, corpus_file: Path, tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    assert main(_args(tiny_dir, corpus_file, tmp_path / "clean")) == 0
    real = resume_mod.run_window
    calls: list[int] = []

    def dies_on_window_2(model: Any, tokens: Any, spec: Any, window: int, **kw: Any) -> Any:
        if window == 2:
            raise KeyboardInterrupt  # as if killed mid-run
        calls.append(window)
        return real(model, tokens, spec, window, **kw)

    monkeypatch.setattr(resume_mod, "run_window", dies_on_window_2)
    assert main(_args(tiny_dir, corpus_file, tmp_path / "resumed")) == 130  # as after Ctrl-C
    err = capsys.readouterr().err
    assert "interrupted; 2 finished windows are kept" in err and "--resume" in err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("tl-geom: interr")
    assert sorted(p.name for p in (tmp_path / "resumed" / "windows").glob("w*.pt")) == [
        "w000000.pt",
        "w000001.pt",
    ]
    assert not list((tmp_path / "resumed" / "windows").glob(".*tmp"))
    assert not (tmp_path / "resumed" / ".tl_geom.lock").exists()  # released on Ctrl-C
    monkeypatch.setattr(resume_mod, "run_window", real)
    # Without --resume the half-finished run is protected, not silently mixed.
    assert main(_args(tiny_dir, corpus_file, tmp_path / "resumed")) == 2
    resumed_calls: list[int] = []

    def counting(model: Any, tokens: Any, spec: Any, window: int, **kw: Any) -> Any:
        resumed_calls.append(window)
        return real(model, tokens, spec, window, **kw)

    monkeypatch.setattr(resume_mod, "run_window", counting)
    assert main(_args(tiny_dir, corpus_file, tmp_path / "resumed", "--resume")) == 0
    assert resumed_calls == [2]  # nothing lost, nothing done twice
    for name in ("metrics.csv", "heads.csv", "envelope.csv"):
        pd.testing.assert_frame_equal(
            pd.read_csv(tmp_path / "clean" / name), pd.read_csv(tmp_path / "resumed" / name)
        )


def test_resume_refuses_other_arguments(
    tiny_dir: Path, corpus_file: Path, tmp_path: Path, capsys: Any
) -> None:
    assert main(_args(tiny_dir, corpus_file, tmp_path / "run")) == 0
    assert main(_args(tiny_dir, corpus_file, tmp_path / "run", "--resume", "--seed", "1")) == 2
    assert "other arguments (seed; see" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--corpus", "/no/such/file.txt"], "not found"),
        (["--ctx", "4000"], "exceeds the model's context n_ctx=64"),
        (["--n", "0,2"], "n=0 out of range 1..23 for ctx=24"),
        (["--n", "24"], "n=24 out of range"),
        (["--windows", "500"], "the corpus is too short"),
        (["--model", "nobody/not-a-model-xyz"], "not available offline"),
        (["--windows", "0"], "windows=0"),
        (["--taxonomy", "retriever=0.9"], "key one of retriever_min"),
    ],
)
def test_user_errors_exit_2_with_one_line(
    tiny_dir: Path, corpus_file: Path, tmp_path: Path, capsys: Any, extra: list[str], message: str
) -> None:
    code = main(_args(tiny_dir, corpus_file, tmp_path / "run") + extra)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_cli_taxonomy_thresholds(tiny_dir: Path, corpus_file: Path, tmp_path: Path) -> None:
    """--taxonomy reaches the rules: recorded in run.json; a Retriever bar of 1.0 and a
    Reset bar above every c_sink leave no head of either type."""
    extra = ["--taxonomy", "retriever_min=1.0,sink_min=1.0,weak_max=0.1"]
    assert main(_args(tiny_dir, corpus_file, tmp_path / "run", *extra)) == 0
    res = Analysis.load(tmp_path / "run")
    assert res.run["taxonomy"]["config"]["retriever_min"] == 1.0
    assert res.run["taxonomy"]["config"]["weak_max"] == 0.1
    early = res.heads["c_sink_early"].to_numpy(float)
    assert (early < 1.0).all()  # so no head can pass the Reset rule
    assert not set(res.heads["type"]) & {"Retriever", "Reset"}


def test_all_queries_mode(tiny_dir: Path) -> None:
    res = analyze(
        str(tiny_dir), text=TEXT, windows=2, ctx=20, n=[1, 4], queries="all", progress=False
    )
    assert res.metrics[["precision", "recall", "f1"]].notna().all().all()
    assert res.metrics[["precision_random", "f1_random"]].notna().all().all()
    assert res.run["config"]["queries"] == "all"


@pytest.mark.parametrize("queries", ["last", "all"])
def test_draws_zero_skips_only_the_baseline(
    tiny_dir: Path, corpus_file: Path, tmp_path: Path, capsys: Any, queries: str
) -> None:
    """--draws 0: NaN random columns, every other number as in a run with the baseline."""
    args = _args(tiny_dir, corpus_file, tmp_path / "with", "--queries", queries)
    assert main(args) == 0
    capsys.readouterr()
    args = _args(tiny_dir, corpus_file, tmp_path / "without", "--queries", queries, "--draws", "0")
    args.remove("--no-report")
    assert main(args) == 0
    assert "no random baseline" in capsys.readouterr().out
    full, bare = (Analysis.load(tmp_path / d) for d in ("with", "without"))
    random_cols = [c for c in full.metrics.columns if "_random" in c]
    assert len(random_cols) >= 3 and bare.metrics[random_cols].isna().all().all()
    assert full.metrics[random_cols].notna().all().all()
    rest = full.metrics.columns.difference(random_cols)
    pd.testing.assert_frame_equal(full.metrics[rest], bare.metrics[rest])
    pd.testing.assert_frame_equal(full.heads, bare.heads)
    page = (tmp_path / "without" / "report.html").read_text(encoding="utf-8")
    assert "No random baseline in this run" in page and "F1 - random" not in page


def test_config_validation() -> None:
    with pytest.raises(TlGeomError, match="draws=-1"):
        config_mod.AnalyzeConfig(draws=-1)
    with pytest.raises(TlGeomError, match="ctx=3 too short"):
        config_mod.AnalyzeConfig(ctx=3)
    assert config_mod.AnalyzeConfig(ctx=1024).n_grid == (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@pytest.mark.slow
def test_smollm2_two_windows(tmp_path: Path) -> None:
    args = ["analyze", "--windows", "2", "--ctx", "128", "--out", str(tmp_path), "--no-report"]
    assert main(args) == 0
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert len(metrics) == 30 * 9 * 7
    heads = pd.read_csv(tmp_path / "heads.csv")
    # SmolLM2 has a real sink: most heads of the later layers put > 0.3 on position 0.
    late = heads[heads["layer"] >= 12]
    assert (late["sink_mass"] > 0.3).mean() > 0.5
    # top-N beats random subsets on average at small N > 1
    n2 = metrics[metrics["n"] == 2]
    assert n2["f1"].mean() > n2["f1_random"].mean()


def test_cli_writes_the_report(tiny_dir: Path, corpus_file: Path, tmp_path: Path) -> None:
    args = [a for a in _args(tiny_dir, corpus_file, tmp_path / "run") if a != "--no-report"]
    assert main(args) == 0
    page = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    for section in ("summary", "curves", "heatmaps", "profile", "diagnostics", "attention"):
        assert f'id="{section}"' in page
    assert "cdn" not in page.lower() and 'src="http' not in page


def test_layer_bar_only_when_asked_or_late(capsys: Any) -> None:
    """run_window's per-layer bar: at once with delay 0, never with None or a long delay."""
    from tl_geom import tiny_model
    from tl_geom.jobs.analyze import LAYER_BAR_DELAY, _layer_bar  # pyright: ignore
    from tl_geom.jobs.window import WindowSpec, run_window

    model = tiny_model(n_layers=3)
    spec = WindowSpec(n=(1, 2), queries="last", draws=0, seed=0, causal=True, layers=(0, 1, 2))
    tokens = torch.randint(0, 97, (1, 12))
    quiet = run_window(model, tokens, spec, 7)
    assert "layer" not in capsys.readouterr().err
    shown = run_window(model, tokens, spec, 7, layer_bar=0.0)
    err = capsys.readouterr().err
    # tqdm redraws at most every 0.1 s, so the last count shown depends on the machine
    assert "window 7" in err and "/3" in err and "layer" in err
    run_window(model, tokens, spec, 7, layer_bar=1e6)
    assert "window 7" not in capsys.readouterr().err
    for key in quiet:  # the bar changes nothing else
        torch.testing.assert_close(quiet[key], shown[key], rtol=0, atol=0, equal_nan=True)
    assert (_layer_bar("layers"), _layer_bar(True), _layer_bar(False)) == (
        0.0,
        LAYER_BAR_DELAY,
        None,
    )


@pytest.mark.parametrize("queries", ["last", "all"])
def test_float32_baseline_scores_give_the_float64_tables(
    tiny_dir: Path, corpus_file: Path, tmp_path: Path, queries: str
) -> None:
    """--baseline-scores float32 (the GPU default, run here on the CPU) gives the same
    tables as float64; run.json records which ran; auto is float64 on the CPU; a run
    resumes across the two (the counts do not depend on it)."""
    runs = {}
    for scores in ("float32", "float64", "auto"):
        out = tmp_path / scores
        extra = ("--queries", queries, "--baseline-scores", scores)
        assert main(_args(tiny_dir, corpus_file, out, *extra)) == 0
        runs[scores] = Analysis.load(out)
    assert runs["float32"].run["facts"]["baseline_scores"] == "float32"
    assert runs["auto"].run["facts"]["baseline_scores"] == "float64"
    for scores in ("float32", "auto"):
        pd.testing.assert_frame_equal(runs[scores].metrics, runs["float64"].metrics)
        pd.testing.assert_frame_equal(runs[scores].heads, runs["float64"].heads)
    resumed = (*("--queries", queries), "--baseline-scores", "float32", "--resume")
    assert main(_args(tiny_dir, corpus_file, tmp_path / "float64", *resumed)) == 0
    with pytest.raises(TlGeomError, match="baseline_scores='bf16'; use one of auto"):
        config_mod.AnalyzeConfig(baseline_scores="bf16")


@pytest.mark.slow
def test_smollm2_float32_baseline_scores_equal_float64(tmp_path: Path) -> None:
    """On SmolLM2 (L = 512, every layer) the certified float32 scores of the baseline
    give the float64 baseline bit for bit."""
    opts: dict[str, Any] = {"windows": 1, "ctx": 512, "backend": "sdpa", "progress": False}
    got = {s: analyze("smollm2-135m", baseline_scores=s, **opts) for s in ("float32", "float64")}
    cols = ["precision_random", "recall_random", "f1_random"]
    assert got["float64"].metrics[cols].notna().all().all()
    pd.testing.assert_frame_equal(got["float32"].metrics, got["float64"].metrics)
