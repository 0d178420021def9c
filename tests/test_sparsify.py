"""Sparsification: exact restore, ablation against a weight-edit reference, rules, CLI, SmolLM2."""

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from jaxtyping import TypeCheckError

from tl_geom import TlGeomError
from tl_geom.app.cli import main
from tl_geom.jobs.sparsify import (
    RULES,
    TYPE_ORDER,
    next_token_loss,
    removal_order,
    score_heads,
    sparsify,
)
from tl_geom.lens.hooks import count_hooks
from tl_geom.lens.interventions import ablate_heads
from tl_geom.lens.models import tiny_model

TEXT = "The sea was calm that night, and the lamps along the harbour burned low. " * 80


@pytest.fixture(scope="module")
def model() -> Any:
    return tiny_model(n_layers=2, n_heads=4, d_head=8)


def _o_weight(model: Any, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    params = dict(model.named_parameters())
    base = f"layers.{layer}._original_component.attn._original_component.o._original_component"
    return params[f"{base}.weight"], params[f"{base}.bias"]


def test_ablation_restores_the_model_exactly(model: Any) -> None:
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 12))
    before, hooks = model(tokens), count_hooks(model)
    means = torch.randn(2, 4, 8)
    for mode in ("zero", "mean"):
        kw = {"means": means} if mode == "mean" else {}
        with ablate_heads(model, [(0, 1), (1, 3)], mode=mode, **kw):  # type: ignore[arg-type]
            changed = model(tokens)
            assert count_hooks(model) == hooks + 2
        assert not torch.equal(changed, before)
        assert torch.equal(model(tokens), before) and count_hooks(model) == hooks
    with pytest.raises(RuntimeError, match="boom"):
        with ablate_heads(model, [(0, 0)]):
            raise RuntimeError("boom")
    assert torch.equal(model(tokens), before) and count_hooks(model) == hooks


def test_zero_and_mean_ablation_match_a_weight_edit(model: Any) -> None:
    """Zeroing z of head h == zeroing W_O's columns of h; mean == those columns' output as bias."""
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 10))
    heads = [(0, 2), (1, 0), (1, 3)]
    means = torch.randn(2, 4, 8)
    with torch.no_grad():
        with ablate_heads(model, heads):
            zero_hook = model(tokens)
        with ablate_heads(model, heads, mode="mean", means=means):
            mean_hook = model(tokens)
        saved = {lay: [p.clone() for p in _o_weight(model, lay)] for lay in (0, 1)}
        try:
            for lay, h in heads:
                w, _ = _o_weight(model, lay)
                w[:, h * 8 : (h + 1) * 8] = 0
            zero_ref = model(tokens)
            for lay, h in heads:
                w_orig, _ = saved[lay]
                _, b = _o_weight(model, lay)
                b += w_orig[:, h * 8 : (h + 1) * 8] @ means[lay, h]
            mean_ref = model(tokens)
        finally:
            for lay, (w0, b0) in saved.items():
                w, b = _o_weight(model, lay)
                w.copy_(w0)
                b.copy_(b0)
    torch.testing.assert_close(zero_hook, zero_ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(mean_hook, mean_ref, rtol=0, atol=1e-5)


def test_ablation_bad_input(model: Any) -> None:
    with pytest.raises(TlGeomError, match="layer 2 out of range"):
        ablate_heads(model, [(2, 0)])
    with pytest.raises(TlGeomError, match="means must have shape"):
        ablate_heads(model, [(0, 0)], mode="mean", means=torch.zeros(1, 2, 3))
    with pytest.raises(TlGeomError, match="means must have shape"):
        ablate_heads(model, [(0, 0)], mode="zero", means=torch.zeros(2, 4, 8))
    with pytest.raises((TlGeomError, TypeCheckError)):  # beartype answers first in tests
        ablate_heads(model, [(0, 0)], mode="half")  # type: ignore[arg-type]


def test_next_token_loss_matches_a_loop(model: Any) -> None:
    tokens = torch.randint(0, model.cfg.d_vocab, (3, 9))
    logits = model(tokens).double()
    terms = []
    for b in range(3):
        for t in range(8):
            row = logits[b, t].tolist()
            top = max(row)
            lse = top + math.log(sum(math.exp(x - top) for x in row))
            terms.append(lse - row[int(tokens[b, t + 1])])
    assert next_token_loss(model, tokens, batch=2) == pytest.approx(
        sum(terms) / len(terms), rel=1e-6
    )  # float32 logits differ slightly between batch sizes


def test_score_heads_against_a_cache(model: Any) -> None:
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 16))
    scores = score_heads(model, tokens, n=[1, 2, 4])
    _, cache = model.run_with_cache(tokens)
    for lay in range(2):
        z = cache[f"blocks.{lay}.attn.hook_z"].double()  # [b, pos, head, d]
        torch.testing.assert_close(scores.z_mean[lay].double(), z.mean((0, 1)), atol=1e-6, rtol=0)
        alpha = cache[f"blocks.{lay}.attn.hook_pattern"][:, :, -1].double()  # [b, head, key]
        rows = scores.table[scores.table["layer"] == lay].sort_values("head")
        np.testing.assert_allclose(rows["sink_mass"], alpha[..., 0].mean(0), atol=1e-6)
        np.testing.assert_allclose(rows["last_token"], alpha[..., -1].mean(0), atol=1e-6)
        ent = -(alpha * alpha.clamp_min(1e-300).log()).sum(-1).mean(0)
        np.testing.assert_allclose(rows["entropy"], ent, atol=1e-5)
    assert set(scores.table["type"]) <= {*TYPE_ORDER}


def _scores() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "layer": np.repeat(np.arange(3), 4),
            "head": np.tile(np.arange(4), 3),
            "type": rng.choice(list(TYPE_ORDER), 12),
            "entropy": rng.integers(0, 4, 12).astype(float),  # ties
            "sink_mass": rng.uniform(size=12),
            "last_token": rng.uniform(size=12),
        }
    )


def test_removal_orders() -> None:
    df = _scores()
    pairs = list(zip(df["layer"], df["head"], strict=True))
    for rule in RULES:
        order = removal_order(df, rule, seed=1)
        assert sorted(order) == sorted(pairs)  # a permutation of every head
    for metric in ("entropy", "sink_mass", "last_token"):
        literal = sorted(range(12), key=lambda i: (-df[metric][i], i))  # ties: table order
        assert removal_order(df, metric) == [pairs[i] for i in literal]
    typed = removal_order(df, "type+sink_mass")
    rank = {t: k for k, t in enumerate(TYPE_ORDER)}
    key = {p: (rank[t], -s) for p, t, s in zip(pairs, df["type"], df["sink_mass"], strict=True)}
    assert typed == sorted(pairs, key=lambda p: key[p])
    groups = [rank[df["type"][pairs.index(p)]] for p in removal_order(df, "type", seed=5)]
    assert groups == sorted(groups)
    assert removal_order(df, "random", 0) != removal_order(df, "random", 1)
    with pytest.raises(TlGeomError, match="unknown rule 'loudest'"):
        removal_order(df, "loudest")


def test_cli_sparsify(tiny_dir: Path, tmp_path: Path, capsys: Any) -> None:
    corpus = tmp_path / "text.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    args = ["sparsify", "--model", str(tiny_dir), "--corpus", str(corpus), "--windows", "2"]
    args += ["--ctx", "24", "--heldout", "2", "--seeds", "2", "--fractions", "0,0.25,0.5"]
    args += ["--out", str(tmp_path / "run")]
    assert main(args) == 0
    assert "Least harmful rule" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "run" / "sparsify.csv")
    assert list(table.columns[:5]) == ["rule", "fraction", "seed", "loss", "delta_loss"]
    # 5 non-random rules + 2 random seeds, 3 fractions, 2 ablations
    assert len(table) == (5 + 2) * 3 * 2
    assert set(table["rule"]) == set(RULES)
    base = table[table["fraction"] == 0]
    assert (base["delta_loss"] == 0).all() and base["loss"].nunique() == 1
    assert sorted(table["heads"].unique()) == [0, 2, 4]  # round(f * 8)
    assert table["seed"].notna().sum() == 2 * 3 * 2
    page = (tmp_path / "run" / "sparsify_report.html").read_text(encoding="utf-8")
    assert "<svg" in page and "held-out" in page
    assert "<script" not in page and 'src="http' not in page and 'href="http' not in page
    assert main([*args[:-2], "--out", str(tmp_path / "x"), "--ablation", "half"]) == 2
    assert main([*args[:-2], "--out", str(tmp_path / "y"), "--taxonomy", "nope=1"]) == 2
    assert "key one of retriever_min" in capsys.readouterr().err
    run = json.loads((tmp_path / "run" / "sparsify.json").read_text(encoding="utf-8"))
    assert run["taxonomy"]["retriever_min"] == 0.5  # the defaults, recorded


def test_sparsify_rejects_bad_arguments(tiny_dir: Path) -> None:
    with pytest.raises(TlGeomError, match="fractions must lie"):
        sparsify(str(tiny_dir), text=TEXT, fractions=[0.0, 1.5], progress=False)
    with pytest.raises(TlGeomError, match="unknown rule"):
        sparsify(str(tiny_dir), text=TEXT, rules=["loudest"], progress=False)


@pytest.mark.slow
def test_smollm2_sparsify_all_rules() -> None:
    # Kept small (one held-out window, 3 fractions, 1 random seed): every ablated
    # forward of the bridge costs ~1 s on 2 CPU cores. docs/taxonomy-sparsify.md has the full run.
    res = sparsify(
        "smollm2-135m",
        windows=2,
        ctx=128,
        heldout=1,
        fractions=(0.0, 0.1, 0.5),
        ablations=("zero",),
        seeds=1,
        progress=False,
    )
    t = res.table
    assert set(t["rule"]) == set(RULES)
    print(res.summary().to_string())
    print(t.to_string())
    for (rule, seed), part in t.groupby(["rule", "seed"], dropna=False):
        loss = part.sort_values("fraction")["delta_loss"].to_numpy()
        # Removing half of all heads must hurt, whatever the rule.
        assert loss[-1] > 0.05, (rule, seed, loss)
        # Monotone up to small dips (a removed head can help on 127 tokens): any drop
        # larger than 0.05 nats would need an explanation, so it fails the test.
        assert np.all(np.diff(loss) > -0.05), (rule, seed, loss)
