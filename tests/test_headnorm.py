"""HeadNorm, the TinyLM (hook points, measures, interventions on it) and the study (a few steps)."""

import math
from typing import Any

import pandas as pd
import pytest
import torch

from tl_geom import TlGeomError
from tl_geom.app.cli import main
from tl_geom.lens.hooks import count_hooks
from tl_geom.lens.interventions import amplify_variance, self_only_mask
from tl_geom.lens.tiny_lm import BOS, HeadNorm, TinyLM, TinyLMConfig, encode_bytes
from tl_geom.sinks.headnorm import StudyConfig, headnorm_study, train_tiny_lm
from tl_geom.sinks.measures import sink_profile

SMALL = {"n_layers": 2, "n_heads": 2, "d_head": 8, "d_mlp": 32, "n_ctx": 16}


def test_headnorm_matches_literal_formula() -> None:
    norm = HeadNorm(4, eps=1e-6)
    with torch.no_grad():
        norm.g.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0]))
    z = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    got = norm.double()(z)
    for idx in [(0, 0, 0), (1, 2, 4)]:
        o = z[idx].tolist()
        rms = math.sqrt(sum(x * x for x in o) / 4 + 1e-6)
        ref = [x / rms * g for x, g in zip(o, [1.0, 2.0, 0.5, -1.0], strict=True)]
        assert got[idx].tolist() == pytest.approx(ref, rel=1e-12)
    # one gain for all heads: scaling a head's input leaves its output unchanged
    assert torch.allclose(norm(z * 7.0), got, atol=1e-6)


def test_tiny_lm_has_tl_hooks_and_headnorm_only_in_that_arm() -> None:
    tokens = torch.randint(0, BOS + 1, (2, 10))
    base = TinyLM(TinyLMConfig(**SMALL), seed=1)
    hn = TinyLM(TinyLMConfig(**SMALL, head_norm=True), seed=1)
    assert (
        sum(p.numel() for p in hn.parameters()) - sum(p.numel() for p in base.parameters()) == 2 * 8
    )  # one d_head gain per layer
    with torch.no_grad():
        _, cache = hn.run_with_cache(tokens)
    z, zn = cache["blocks.1.attn.hook_z"], cache["blocks.1.attn.hook_z_normed"]
    rms = zn.pow(2).mean(-1).sqrt()
    assert torch.allclose(rms, torch.ones_like(rms), atol=1e-3)  # g = 1 at init
    assert not torch.allclose(z.pow(2).mean(-1).sqrt(), torch.ones_like(rms), atol=1e-2)
    # the same seed gives the same shared weights
    assert torch.equal(base.blocks[0].attn.W_Q, hn.blocks[0].attn.W_Q)
    assert base.W_O.shape == (2, 2, 8, 16) and base.W_out.shape == (2, 32, 16)
    pat = cache["blocks.0.attn.hook_pattern"]
    assert torch.equal(torch.triu(pat[0, 0], 1), torch.zeros(10, 10))


def test_measures_and_interventions_run_on_tiny_lm() -> None:
    model = TinyLM(TinyLMConfig(**SMALL, head_norm=True))
    tokens = torch.randint(0, BOS + 1, (2, 12))
    with torch.no_grad():
        base = model(tokens)
    prof = sink_profile(model, tokens)
    assert prof.causal and prof.imp.shape == (2, 2, 2, 12)
    with self_only_mask(model, position=4), amplify_variance(model, position=4, lam=3.0):
        with torch.no_grad():
            assert not torch.equal(model(tokens), base)
        assert count_hooks(model) == 4
    assert count_hooks(model) == 0
    with torch.no_grad():
        assert torch.equal(model(tokens), base)


@pytest.fixture
def one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add overhead on a shared CPU
    yield
    torch.set_num_threads(threads)


def test_training_lowers_the_loss_and_is_seeded(one_thread: Any) -> None:
    ids = encode_bytes("the quick brown fox jumps over the lazy dog. " * 40)
    cfg = TinyLMConfig(**SMALL, head_norm=True)
    m1, l1 = train_tiny_lm(cfg, ids, steps=25, batch=8, lr=1e-2, seed=3)
    _, l2 = train_tiny_lm(cfg, ids, steps=25, batch=8, lr=1e-2, seed=3)
    assert l1 == l2
    assert sum(l1[-5:]) / 5 < l1[0] - 1.0
    assert not torch.equal(m1.blocks[0].attn.head_norm.g, torch.ones(8))  # the gain is trained


def test_study_a_few_steps_and_cli(tmp_path: Any, capsys: Any) -> None:
    threads = torch.get_num_threads()
    res = headnorm_study(steps=3, batch=4, val_windows=4, log_every=2, **SMALL)
    assert torch.get_num_threads() == threads  # restored
    s = res.to_frame()
    assert list(s["arm"]) == ["baseline", "headnorm"]
    cols = {"arm", "val_loss", "effective_rank", "dom_ratio", "sink_rate", "sink_step"}
    assert set(s.columns) == cols
    # the sink rate is logged at steps 2 and 3 (the last) in each arm; the last log is the
    # rate measured after training
    log = res.sink_log
    assert log is not None and list(log["step"]) == [2, 3, 2, 3]
    last = log[log["step"] == 3].set_index("arm")["sink_rate"]
    assert last.to_dict() == pytest.approx(s.set_index("arm")["sink_rate"].to_dict())
    hits = log[(log["arm"] == "baseline") & (log["sink_rate"] > 0.3)]["step"]
    want = float(hits.iloc[0]) if len(hits) else float("nan")
    assert s["sink_step"].iloc[0] == pytest.approx(want, nan_ok=True)
    assert (s["val_loss"] > 0).all() and (s["effective_rank"] >= 1).all()
    assert len(res.by_layer) == 2 * 2 and set(res.by_layer["layer"]) == {0, 1}
    # the first training loss is the same in both arms' data and init up to HeadNorm
    assert res.train_loss["baseline"][0] != res.train_loss["headnorm"][0]
    code = main(
        [
            "headnorm",
            "--steps",
            "2",
            "--batch",
            "4",
            "--val-windows",
            "4",
            "--layers",
            "1",
            "--heads",
            "2",
            "--d-head",
            "8",
            "--n-ctx",
            "16",
            "--log-every",
            "1",
            "--weight-decay",
            "0",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    assert (tmp_path / "headnorm_summary.csv").exists()
    assert (tmp_path / "headnorm_layers.csv").exists()
    logged = pd.read_csv(tmp_path / "headnorm_sink_log.csv")
    assert list(logged["step"]) == [1, 2, 1, 2] and set(logged["arm"]) == {"baseline", "headnorm"}
    captured = capsys.readouterr()
    assert "headnorm" in captured.out
    # a progress bar per arm over the training steps, on stderr
    assert "baseline" in captured.err and "2/2" in captured.err


def test_bad_settings_are_clear_errors() -> None:
    with pytest.raises(TlGeomError, match="steps"):
        StudyConfig(steps=0)
    with pytest.raises(TlGeomError, match="threads"):
        StudyConfig(threads=0)
    with pytest.raises(TlGeomError, match="weight_decay"):
        StudyConfig(weight_decay=-0.1)
    with pytest.raises(TlGeomError, match="unknown"):
        headnorm_study(stepz=3)
    with pytest.raises(TlGeomError, match="n_heads"):
        TinyLMConfig(n_heads=0)
    with pytest.raises(TlGeomError, match="n_ctx"):
        TinyLM(TinyLMConfig(**SMALL))(torch.zeros(1, 17, dtype=torch.long))
