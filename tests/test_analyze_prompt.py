"""analyze(model, tokens=...): a user's own prompt, one window of it by default."""

from pathlib import Path

import numpy as np
import pytest
import torch

from tl_geom import TlGeomError, analyze, capture_attention, load_model, separability, tiny_model
from tl_geom.jobs.analyze import prompt_windows

PROMPT = "The quick brown fox jumps over the lazy dog near the quiet river bank today."


def test_one_window_of_the_whole_prompt_equals_separability(tiny_dir: Path) -> None:
    model = load_model(str(tiny_dir))
    tokens = model.to_tokens(PROMPT)
    res = analyze(model, tokens=tokens, n=[2, 4], draws=2, progress=False)
    assert res.run["config"]["windows"] == 1
    assert res.run["config"]["ctx"] == tokens.shape[1]
    cap = capture_attention(model, tokens)
    direct = separability(cap.pattern[:, :, :, 0].double(), cap.values, [2, 4]).f1[0]
    got = res.metrics.sort_values(["layer", "head", "n"])["f1"].to_numpy()
    np.testing.assert_allclose(got, direct.flatten().numpy(), rtol=0, atol=1e-12)
    # a string prompt is tokenized by the model: the same tables
    again = analyze(model, tokens=PROMPT, n=[2, 4], draws=2, progress=False)
    assert again.metrics["f1"].equals(res.metrics["f1"])


def test_ctx_cuts_the_prompt_into_windows(tiny_dir: Path) -> None:
    model = load_model(str(tiny_dir))
    tokens = model.to_tokens(PROMPT)
    res = analyze(model, tokens=tokens, ctx=8, n=[2], draws=0, progress=False)
    assert res.run["config"]["windows"] == tokens.shape[1] // 8


def test_a_model_without_tokenizer_takes_token_ids() -> None:
    model = tiny_model(n_layers=2)
    res = analyze(model, tokens=torch.randint(0, 97, (2, 12)), n=[2], draws=0, progress=False)
    assert set(res.metrics["layer"]) == {0, 1} and res.run["config"]["windows"] == 2


def test_prompt_windows_reference() -> None:
    t = torch.arange(20).view(2, 10)
    assert prompt_windows(t, None, None).equal(t)
    want = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [10, 11, 12], [13, 14, 15], [16, 17, 18]]
    assert prompt_windows(t, 3, None).tolist() == want
    assert prompt_windows(t, 5, 3).shape == (3, 5)
    with pytest.raises(TlGeomError, match="longer than the prompt"):
        prompt_windows(t, 11, None)
    with pytest.raises(TlGeomError, match="holds 2"):
        prompt_windows(t, None, 3)


def test_prompt_run_resumes(tmp_path: Path) -> None:
    """analyze(model, tokens=..., out=..., resume=True) continues the run in out."""
    model = tiny_model(n_ctx=32)
    prompt = torch.randint(1, 90, (2, 16), generator=torch.Generator().manual_seed(0))
    first = analyze(model, tokens=prompt, n=[2, 4], draws=2, out=tmp_path / "run", progress=False)
    again = analyze(
        model, tokens=prompt, n=[2, 4], draws=2, out=tmp_path / "run", resume=True, progress=False
    )
    assert again.run["timings_s"]["windows_resumed"] == 2
    assert again.metrics["f1"].equals(first.metrics["f1"])
