import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tl_geom import claim
from tl_geom.app import reproduce as rp
from tl_geom.app.budget import QUICK, Budget
from tl_geom.app.cli import main
from tl_geom.app.reproduce import COLUMNS, _fit_context, reproduce
from tl_geom.errors import TlGeomError
from tl_geom.geometry import assumption_claims as gac
from tl_geom.geometry import claims as gc
from tl_geom.normalization import claims as nc
from tl_geom.sinks import claims as sc
from tl_geom.sinks import intervention_claims as sic
from tl_geom.sinks.headnorm import StudyConfig

R, P, N, INC = claim.REPRODUCED, claim.PARTLY, claim.NOT, claim.INCONCLUSIVE
SE = [0.01, 0.01, 0.01]
NAN = math.nan

# Each rule, fed synthetic numbers, must be able to give each verdict.
CASES = [
    (gc.top_beats_random_verdict, (260, 270), R),
    (gc.top_beats_random_verdict, (180, 270), P),
    (gc.top_beats_random_verdict, (40, 270), N),
    (gc.top_beats_random_verdict, (0, 0), INC),
    (gc.peak_small_n_verdict, ((2.0, 4.0),), R),
    (gc.peak_small_n_verdict, ((6.0, 8.0),), P),
    (gc.peak_small_n_verdict, ((16.0, 32.0),), N),
    (gc.peak_small_n_verdict, ((4.0, 6.0),), INC),
    (gc.peak_small_n_verdict, ((NAN, NAN),), INC),
    (gac.rho0_recall_verdict, ([2, 3, 6, 8], [0.1, 0.21, 0.3, 0.25], (0.1, 0.5)), R),
    (gac.rho0_recall_verdict, ([2, 3, 6, 8], [0.4, 0.21, 0.3, 0.25], (0.1, 0.6)), P),
    (gac.rho0_recall_verdict, ([1, 2, 4, 8], [0.9, 0.2, 0.2, 0.1], (-0.1, 0.2)), N),
    (gac.rho0_recall_verdict, ([2, 4, 8], [0.3, 0.2, 0.1], (-0.1, 0.6)), INC),
    (gac.value_norms_verdict, ((0.02, 0.1), 80, 90), R),
    (gac.value_norms_verdict, ((0.11, 0.2), 80, 90), P),
    (gac.value_norms_verdict, ((0.02, 0.05), 20, 90), P),
    (gac.value_norms_verdict, ((0.2, 0.3), 10, 90), N),
    (gac.value_norms_verdict, ((NAN, NAN), 80, 90), INC),
    (gac.cosine_decay_verdict, (80, 90), R),
    (gac.cosine_decay_verdict, (30, 90), P),
    (gac.cosine_decay_verdict, (0, 90), N),
    (gac.cosine_decay_verdict, (1, 2), INC),
    (gac.four_phase_verdict, (100, 100), R),
    (gac.four_phase_verdict, (30, 100), P),
    (gac.four_phase_verdict, (5, 100), N),
    (gac.four_phase_verdict, (0, 0), INC),
    (
        gac.head_regimes_verdict,
        ({"Retriever": (0.05, 0.1), "Reset": (0.2, 0.3), "Mixer": (0.2, 0.4)}, (0.01, 0.2)),
        R,
    ),
    (
        gac.head_regimes_verdict,
        ({"Retriever": (0.05, 0.1), "Reset": (0.2, 0.3), "Mixer": (0.2, 0.4)}, (-0.3, -0.01)),
        P,
    ),
    (
        gac.head_regimes_verdict,
        ({"Retriever": (0.0, 0.04), "Reset": (0.2, 0.3), "Mixer": (0.2, 0.4)}, (0.01, 0.2)),
        N,
    ),
    (
        gac.head_regimes_verdict,
        ({"Retriever": (0.03, 0.1), "Reset": (0.2, 0.3), "Mixer": (0.2, 0.4)}, (0.01, 0.2)),
        INC,
    ),
    (gc.sparsify_verdict, ([0.1, 0.2, 0.3, 0.4], [[1, 1, 1, 0.2]] * 3, {"e": [0.0, 1, 1, 1]}), R),
    (gc.sparsify_verdict, ([0.1, 0.2, 0.3, 0.4], [[1, 1, 0.2, 0.2]] * 3, {"e": [0.0, 1, 1, 1]}), P),
    (gc.sparsify_verdict, ([0.1, 0.2], [[1, 1]] * 3, {"e": [1, 1], "s": [0.5, 0.5]}), P),
    (gc.sparsify_verdict, ([0.1, 0.2], [[0.05, 0.1]] * 3, {"e": [0.0, 0.0]}), N),
    (gc.sparsify_verdict, ([0.1, 0.2], [[1, 1]] * 2, {"e": [0.0, 0.0]}), INC),
    (gc.sparsify_verdict, ([0.1, 0.2], [[1, 1], [1, 1], [0.05, 0.1]], {"e": [0.0, 0.0]}), INC),
    (nc.distance_length_verdict, ((0.85, 1.15), 0.95, 32), R),
    (nc.distance_length_verdict, ((0.85, 1.15), 0.85, 32), P),
    (nc.distance_length_verdict, ((0.35, 0.75), 0.95, 32), P),
    (nc.distance_length_verdict, ((1.25, 1.5), 0.95, 32), P),
    (nc.distance_length_verdict, ((-0.2, 0.29), 0.1, 32), N),
    (nc.distance_length_verdict, ((0.7, 0.9), 0.95, 32), INC),
    (nc.distance_length_verdict, ((0.85, 1.15), 0.95, 9), INC),
    (nc.distance_length_verdict, ((NAN, NAN), 0.95, 32), INC),
    (nc.distance_plateau_verdict, ((0.0, 0.1), 0.2, 30), R),
    (nc.distance_plateau_verdict, ((0.0, 0.1), 0.19, 30), P),
    (nc.distance_plateau_verdict, ((0.11, 0.25), 0.5, 30), P),
    (nc.distance_plateau_verdict, ((0.26, 0.5), 0.5, 30), N),
    (nc.distance_plateau_verdict, ((0.2, 0.3), 0.5, 30), INC),
    (nc.distance_plateau_verdict, ((0.0, 0.1), 0.5, 9), INC),
    (nc.critical_n_verdict, ([64, 256, 1024], [0.06, 0.0625, 0.06], 32), R),
    (nc.critical_n_verdict, ([64, 256, 1024], [0.2, 0.25, 0.2], 32), P),
    (nc.critical_n_verdict, ([64, 256, 1024], [0.0156, 0.004, 0.002], 32), N),
    (nc.critical_n_verdict, ([64, 256, 1024], [0.0156, 0.0156, 0.0156], 32), P),
    (nc.critical_n_verdict, ([64, 256, 1024], [0.06, 0.06, 0.06], 31), INC),
    (nc.critical_n_verdict, ([64, 256, 1024], [0.06, np.inf, 0.06], 64), P),
    (nc.critical_n_verdict, ([64, 256, 1024], [np.inf, np.inf, np.inf], 64), N),
    (nc.recall_saturation_verdict, ((0.7, 0.85), (0.0, 0.15), 10), R),
    (nc.recall_saturation_verdict, ((0.4, 0.5), (0.0, 0.15), 10), P),
    (nc.recall_saturation_verdict, ((0.86, 0.9), (0.0, 0.15), 10), P),
    (nc.recall_saturation_verdict, ((0.7, 0.85), (0.16, 0.3), 10), P),
    (nc.recall_saturation_verdict, ((0.4, 0.5), (0.16, 0.3), 10), N),
    (nc.recall_saturation_verdict, ((0.6, 0.8), (0.0, 0.1), 10), INC),
    (nc.recall_saturation_verdict, ((0.7, 0.8), (0.1, 0.2), 10), INC),
    (nc.recall_saturation_verdict, ((0.7, 0.8), (0.0, 0.1), 9), INC),
    (nc.gradient_sensitivity_verdict, ((-1.5, -0.5), (30.0, 300.0), 128), R),
    (nc.gradient_sensitivity_verdict, ((-0.4, -0.3), (1.0, 2.0), 128), P),
    (nc.gradient_sensitivity_verdict, ((-0.1, 0.0), (3.0, 5.0), 128), P),
    (nc.gradient_sensitivity_verdict, ((-1.2, -0.8), (5.0, 20.0), 128), P),
    (nc.gradient_sensitivity_verdict, ((-0.2, 0.1), (0.5, 2.9), 128), N),
    (nc.gradient_sensitivity_verdict, ((-0.3, 0.1), (0.5, 2.9), 128), INC),
    (nc.gradient_sensitivity_verdict, ((-1.2, -0.8), (20.0, 40.0), 128), INC),
    (nc.gradient_sensitivity_verdict, ((-1.2, -0.8), (50.0, 90.0), 9), INC),
    (sc.first_position_variance_verdict, (8, 0, 10, 16), R),
    (sc.first_position_variance_verdict, (2, 5, 10, 16), P),
    (sc.first_position_variance_verdict, (1, 0, 10, 16), N),
    (sc.first_position_variance_verdict, (7, 3, 10, 16), INC),
    (sc.first_position_variance_verdict, (1, 1, 10, 16), INC),
    (sc.first_position_variance_verdict, (10, 0, 10, 9), INC),
    (sc.massive_activation_verdict, (16, 16, 16), R),
    (sc.massive_activation_verdict, (0, 16, 16), P),
    (sc.massive_activation_verdict, (0, 1, 16), N),
    (sc.massive_activation_verdict, (3, 3, 4), INC),
    (sc.massive_activation_verdict, (0, 0, 0), INC),
    (sc.super_neuron_verdict, (16, 16, 16), R),
    (sc.super_neuron_verdict, (2, 16, 16), P),
    (sc.super_neuron_verdict, (0, 2, 16), N),
    (sc.super_neuron_verdict, (8, 8, 16), INC),
    (sic.self_only_verdict, ([0.01] * 16, [0.1] * 16), R),
    (sic.self_only_verdict, ([0.01] * 16, [0.021] * 16), P),
    (sic.self_only_verdict, ([0.01] * 16, [0.019] * 16), N),
    (sic.self_only_verdict, ([0.01] * 9, [0.5] * 9), INC),
    (sic.self_only_verdict, ([0.01, 0.01] * 8, [0.0, 0.2] * 8), INC),
    (
        sic.variance_amplification_verdict,
        (0.01, [0.02, 0.05, 0.2], SE, [0.01, 0.02, 0.04], SE, 100),
        R,
    ),
    (
        sic.variance_amplification_verdict,
        (0.01, [0.02, 0.05, 0.2], SE, [0.01, 0.05, 0.2], SE, 100),
        P,
    ),
    (
        sic.variance_amplification_verdict,
        (0.01, [0.02, 0.3, 0.2], SE, [0.01, 0.02, 0.02], SE, 100),
        P,
    ),
    (
        sic.variance_amplification_verdict,
        (0.01, [0.02, 0.05, 0.05], SE, [0.01, 0.02, 0.02], SE, 100),
        N,
    ),
    (
        sic.variance_amplification_verdict,
        (0.01, [0.02, 0.05, 0.2], SE, [0.01, 0.02, 0.04], SE, 5),
        INC,
    ),
    (
        sic.variance_amplification_verdict,
        (0.01, [0.02, 0.05, 0.11], SE, [0.01, 0.02, 0.04], SE, 100),
        INC,
    ),
    (
        sic.variance_amplification_verdict,
        (0.01, [0.02, 0.05, 0.2], SE, [0.01, 0.02, 0.09], SE, 100),
        INC,
    ),
    (sic.headnorm_verdict, (80.0, 72.0, 0.4, 0.2), R),
    (sic.headnorm_verdict, (80.0, 73.0, 0.4, 0.2), P),
    (sic.headnorm_verdict, (80.0, 30.0, 0.4, 0.3), P),
    (sic.headnorm_verdict, (3.0, 3.1, 0.4, 0.35), N),
    (sic.headnorm_verdict, (80.0, 30.0, 0.3, 0.0), INC),
    (sic.headnorm_verdict, (NAN, 3.1, 0.5, 0.0), INC),
]


@pytest.mark.parametrize(("rule", "args", "expected"), CASES)
def test_verdict_rules(rule, args, expected):
    assert rule(*args) == expected


def test_every_rule_can_say_every_verdict():
    said: dict[str, set[str]] = {}
    for rule, args, _ in CASES:
        said.setdefault(rule.__name__, set()).add(rule(*args))
    rules = [n for m in (gc, gac, nc, sc, sic) for n in m.__all__ if n.endswith("_verdict")]
    assert sorted(said) == sorted(rules)
    calibrated = {"rho0_recall_verdict", "value_norms_verdict", "cosine_decay_verdict",
                  "four_phase_verdict", "variance_amplification_verdict", "headnorm_verdict",
                  "critical_n_verdict", "distance_length_verdict", "distance_plateau_verdict",
                  "recall_saturation_verdict", "gradient_sensitivity_verdict",
                  "first_position_variance_verdict", "massive_activation_verdict",
                  "super_neuron_verdict", "self_only_verdict", "top_beats_random_verdict",
                  "peak_small_n_verdict", "head_regimes_verdict",
                  "sparsify_verdict"}  # fmt: skip  # can say INC
    for name, verdicts in said.items():
        assert {R, P, N} <= verdicts <= set(claim.VERDICTS), name
        assert (INC in verdicts) == (name in calibrated), name


def test_loglog_slope_literal():
    x = np.array([2.0, 4.0, 8.0, 16.0])
    y = 3.0 * x**-0.7
    k, r2 = claim.loglog_slope(x, y)
    assert k == pytest.approx(-0.7) and r2 == pytest.approx(1.0)
    assert all(math.isnan(v) for v in claim.loglog_slope([1.0, 2.0], [0.0, -1.0]))


def test_rule_input_errors():
    with pytest.raises(TlGeomError, match="seeds"):
        gc.sparsify_verdict([0.1, 0.2], np.array([0.2, 0.3]), {"e": [0.0, 0.0]})
    with pytest.raises(TlGeomError, match="N grid"):
        nc.plateau_changes([1, 5, 10], [1.0, 1.0, 1.0])
    with pytest.raises(TlGeomError, match="T grid"):
        nc.sensitivity_stats([0.1, 1.0], [1.0, 1.0])
    with pytest.raises(TlGeomError, match="heuristic"):
        gc.sparsify_verdict([0.1], [[0.2]], {})


def _metrics(gap: float) -> pd.DataFrame:
    """Two layers x three heads; top-N F1 exceeds random by ``gap`` at every N."""
    rows = []
    for layer in range(2):
        for head in range(3):
            for n in (1, 2, 3, 4, 8):
                f1 = 1.0 if n == 1 else 0.9 / n
                up = head + 1 if n in (3, 4) else 3 - head  # rho0 ~ Recall only at N = 3, 4
                rec = 1.0 if n == 1 else up / (n + 3)
                rows.append(
                    {"layer": layer, "head": head, "n": n, "f1": f1, "f1_random": f1 - gap,
                     "recall": rec}
                )  # fmt: skip
    return pd.DataFrame(rows)


def test_claim_functions_on_synthetic_tables():
    f = gc.claim_top_beats_random(_metrics(0.1))
    assert f.numbers == {"share_heads": 1.0, "heads": 6} and f.n == 6
    assert f.verdict == INC  # 6 of 6 heads: the Wilson interval reaches below 0.8
    assert gc.claim_top_beats_random(_metrics(-0.1)).verdict == N  # 0 of 6: below 0.5
    peak = gc.claim_peak_small_n(_metrics(0.1))
    assert peak.numbers["n_star"] == 2 and peak.verdict == INC  # 6 heads: no interval
    heads = pd.DataFrame({"layer": [0, 0, 0, 1, 1, 1], "head": [0, 1, 2] * 2})
    heads["rho0"] = [0.1, 0.2, 0.3, 0.15, 0.25, 0.35]
    rho = gac.claim_rho0_recall(_metrics(0.1), heads).numbers["spearman_by_n"]
    assert rho[3.0] > 0.8 and rho[2.0] < -0.8
    assert gac.claim_rho0_recall(_metrics(0.1), heads).verdict == INC  # 6 KV heads: too few
    shift = pd.DataFrame(
        {"arm": ["amplify"] * 2 + ["control"] * 2, "site": "z", "k": 10, "lam": [4.0, 16.0] * 2,
         "edited_layer": 0, "imp_k_before": 0.01, "imp_k_after": [0.05, 0.3, 0.01, 0.02],
         "delta_k": 0.0, "delta_k_se": 0.01, "n": 100}
    )  # fmt: skip
    amp = sic.claim_variance_amplification(shift)
    assert amp.numbers["by_k"][0]["amplify"] == 0.3 and amp.verdict == R and amp.n == 100
    assert amp.interval == pytest.approx((0.28, 0.32))
    var = np.array([[4.0, 1.0, 1.0], [1.0, 2.0, 1.0]])
    f = sc.claim_first_position_variance(np.stack([var] * 12), var)
    assert f.numbers["share_layers"] == 0.5 and f.n == 12 and f.verdict == P  # 1 of 2, no noise
    assert f.interval == (0.5, 0.5)


def _tiny_budget() -> Budget:
    return Budget(
        windows=1, ctx=32, draws=2, norm_windows=1, norm_ctx=64, norm_draws=1, grad_rows=8,
        ks_windows=4, ks_chunk=2, sink_samples=2, sink_len=16, position=4, positions=(4, 6),
        shift_samples=2,
        lams=(4.0, 16.0), sparsify_windows=1,
        sparsify_ctx=16, heldout=1, seeds=1, fractions=(0.5,),
        headnorm=StudyConfig(
            steps=2, batch=2, n_layers=1, n_heads=2, d_head=4, d_mlp=8, n_ctx=16, val_windows=2
        ),
    )  # fmt: skip


def test_budget_checks():
    assert QUICK.n_grid[:6] == (1, 2, 3, 4, 5, 6) and QUICK.n_grid[-1] == QUICK.ctx // 2
    with pytest.raises(TlGeomError, match="temperatures"):
        Budget(temperatures=(0.1, 1.0))
    with pytest.raises(TlGeomError, match="position"):
        Budget(position=64)
    with pytest.raises(TlGeomError, match="windows"):
        Budget(windows=0)


def test_reproduce_end_to_end_tiny(tiny_dir: Path, tmp_path: Path):
    out = tmp_path / "rep"
    res = reproduce([str(tiny_dir)], budget=_tiny_budget(), out=out, progress=False)
    table = pd.read_csv(out / "claims.csv")
    assert tuple(table.columns) == COLUMNS
    assert set(table["verdict"]) <= set(claim.VERDICTS)
    assert len(table) == len(rp.CLAIMS)  # a decoder gets every claim, plus the HeadNorm study
    assert set(table["claim"]) == {c.claim for c in rp.CLAIMS.values()}
    assert set(table["model"]) == {str(tiny_dir), "tinylm-1x2"}
    assert table["measured"].str.len().min() > 10
    sampled = ["n", "interval"]  # empty where a claim has no sample size (NaN once read)
    pd.testing.assert_frame_equal(
        res.to_frame().drop(columns=sampled), table.drop(columns=sampled), check_dtype=False
    )
    amp = table[table["claim"] == rp.CLAIMS["variance_amplification"].claim]
    assert list(amp["n"]) == [2] and amp["interval"].str.contains(r"\.\.").all()
    assert list(amp["verdict"]) == [claim.INCONCLUSIVE]  # 2 samples decide nothing
    ids = (
        "distance_length",
        "distance_plateau",
        "recall_saturation",
        "gradient_sensitivity",
        "first_position_variance",
        "massive_activations",
        "super_neurons",
        "self_only_mask",
    )
    rows = table.set_index("claim").loc[[rp.CLAIMS[c].claim for c in ids]]
    assert rows["n"].notna().all()  # the sample size behind each verdict
    assert set(rows["verdict"]) == {claim.INCONCLUSIVE}  # tiny budget: too few units
    page = (out / "claims.html").read_text()
    assert page.count("<svg") == len(table)
    assert not re.search(r"<script[^>]*\bsrc=", page, re.I)
    assert not re.search(r"<link[^>]*stylesheet", page, re.I)
    assert not re.search(r"""\b(src|href)\s*=\s*["']?(https?:)?//""", page, re.I)
    doc = json.loads((out / "reproduce.json").read_text())
    assert {"geometry", "normalization", "sparsify", "sink_origins", "interventions"} <= {
        c["experiment"] for c in doc["claims"]
    }
    assert all(c["seconds"] >= 0 for c in doc["claims"])
    assert doc["timings_s"]["total"] > 0 and doc["budget"]["ctx"] == 32


def test_experiment_subset_and_errors(tiny_dir: Path):
    b = _tiny_budget()
    res = reproduce([str(tiny_dir)], budget=b, experiments=["headnorm"], progress=False)
    assert list(res.to_frame()["model"]) == ["tinylm-1x2"]
    assert res.run["experiments"] == ["headnorm"]
    with pytest.raises(TlGeomError, match="unknown experiments"):
        reproduce([str(tiny_dir)], budget=b, experiments=["geometri"])
    with pytest.raises(TlGeomError, match="nothing to run"):
        reproduce([], budget=b, experiments=["geometry"])


def test_context_fitted_to_the_model():
    assert _fit_context(QUICK, None) is QUICK and _fit_context(QUICK, 4096) is QUICK
    small = _fit_context(QUICK, 128)
    assert (small.ctx, small.norm_ctx, small.sink_len) == (128, 128, QUICK.sink_len)


def test_a_failing_experiment_keeps_the_finished_claims(
    tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    def broken(*args: object) -> None:
        raise TlGeomError("boom")

    monkeypatch.setitem(rp._FAST, "normalization", broken)
    with pytest.raises(TlGeomError, match="boom"):
        reproduce(
            [str(tiny_dir)], budget=_tiny_budget(), out=tmp_path,
            experiments=["geometry", "normalization"], progress=False,
        )  # fmt: skip
    table = pd.read_csv(tmp_path / "claims.csv")
    assert len(table) == 7 and set(table["verdict"]) <= set(claim.VERDICTS)
    assert json.loads((tmp_path / "reproduce.json").read_text())["error"] == "TlGeomError: boom"


def test_cli_reproduce_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    argv = ["reproduce", "--quick", "--no-headnorm", "--models", "no-such-model", "--out"]
    assert main([*argv, str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tl-geom: error:") and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_reproduce_smollm2_sink_origins():
    b = Budget(sink_samples=4, sink_len=32, headnorm=None)  # 4 of 4: Wilson lower bound > 0.5
    res = reproduce(["smollm2-135m"], budget=b, experiments=["sink_origins"], progress=False)
    table = res.to_frame().set_index("claim")
    assert len(table) == 3 and set(table["model"]) == {"smollm2-135m"}
    # SmolLM2's massive dimension (docs/sinks.md: |h| ~ 24,900 at dim 507, neuron 1229 of
    # layer 11) is strong enough to show in each of four windows of 32 tokens.
    for cid in ("massive_activations", "super_neurons"):
        row = table.loc[rp.CLAIMS[cid].claim]
        assert row["verdict"] == R and row["n"] == 4, row["measured"]
    assert "dim 507" in table.loc[rp.CLAIMS["super_neurons"].claim]["measured"]
