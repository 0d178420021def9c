"""inspect_head: one head drilled down; its numbers are separability's."""

from typing import Any

import numpy as np
import pytest
import torch

import tl_geom
from tl_geom import TlGeomError, capture_attention, random_separability, tiny_model


@pytest.fixture(scope="module")
def cap() -> Any:
    model = tiny_model(n_layers=3, n_kv_heads=2)
    return capture_attention(model, torch.randint(0, 97, (2, 24)), layers=[1, 2], queries=[-1, 9])


def test_numbers_equal_separability(cap: Any) -> None:
    view = tl_geom.inspect_head(cap, layer=2, head=3, n=[2, 4, 8], batch=1)
    ref = cap.separability([2, 4, 8])
    for m in ("precision", "recall", "f1", "r_max", "r_min"):
        assert torch.equal(getattr(view.result, m), getattr(ref, m)[1, 1, 3, 0]), m
    assert view.layer == 2 and view.query == 23
    # a causal earlier query: its 10 visible keys
    early = tl_geom.inspect_head(cap, layer=1, head=0, n=[2, 4], query=9)
    assert len(early.alpha) == 10 and early.query == 9
    assert torch.equal(early.result.f1, ref.f1[0, 0, 0, 1, :2])
    rnd = random_separability(view.alpha, view.values, [2, 4, 8], draws=64, seed=0)
    assert torch.equal(view.random.f1, rnd.f1)


def test_table_and_distances_by_definition(cap: Any) -> None:
    view = tl_geom.inspect_head(cap, layer=1, head=2, n=[2, 4, 8])
    table = view.top_tokens()
    assert len(table) == 8 and table["weight"].is_monotonic_decreasing
    k = view.result.n.index(4)
    y = view.alpha[:, None] * view.values
    s = y[view.result.selected[k]].sum(0)  # s_N by its definition
    d = (y - s).norm(dim=-1)
    torch.testing.assert_close(view.distances(4), d, rtol=0, atol=1e-12)
    sel = view.result.selected[k]
    assert float(d[sel].max()) == pytest.approx(float(view.result.r_max[k]), abs=1e-12)
    assert float(d[~sel].min()) == pytest.approx(float(view.result.r_min[k]), abs=1e-12)
    assert table["in_top4"].sum() == 4
    np.testing.assert_allclose(table["D_to_s4"], d[table["position"].to_numpy().copy()].numpy())


def test_html_is_offline_and_shows_the_picture(cap: Any) -> None:
    view = tl_geom.inspect_head(cap, layer=2, head=1, n=[2, 4])
    page = view._repr_html_()
    assert "<svg" in page and "PCA" in page and "r_max" in page
    assert "ColoredTokens" in page  # the circuitsvis view, its bundle inline
    assert "<table" in page and "unpkg" not in page and "cdn." not in page
    assert "HeadInspection(layer=2" in repr(view) and len(repr(view)) < 200


def test_bad_arguments_are_clear(cap: Any) -> None:
    with pytest.raises(TlGeomError, match="layer 0 was not captured"):
        tl_geom.inspect_head(cap, layer=0, head=0)
    with pytest.raises(TlGeomError, match="head=9"):
        tl_geom.inspect_head(cap, layer=1, head=9)
    with pytest.raises(TlGeomError, match="query position 5 was not captured"):
        tl_geom.inspect_head(cap, layer=1, head=0, query=5)
    with pytest.raises(TlGeomError, match="show=3"):
        tl_geom.inspect_head(cap, layer=1, head=0, n=[2, 4], show=3)


def test_the_circuitsvis_patch_holds_on_the_installed_release() -> None:
    """_inline_circuitsvis's three edits find what they patch in this circuitsvis release
    (pinned below 2 in pyproject): a self-closed div, a source map, a render call."""
    cv = pytest.importorskip("circuitsvis.tokens")
    from tl_geom.app.attention_view import _inline_circuitsvis

    raw = cv.colored_tokens(tokens=["a", "</script>"], values=[0.5, 0.5]).local_src
    assert raw.lstrip().startswith("<div id=") and "/>" in raw.split("\n", 1)[0]
    assert "CircuitsVis.render(" in raw or "render(" in raw
    out = _inline_circuitsvis(raw)
    first = out.lstrip().split(">", 1)[0] + ">"
    assert not first.endswith("/>")  # the div is closed: it cannot swallow the page
    assert out.count("</script>") == raw.count("</script>") - 1  # the token's is escaped
    assert "sourceMappingURL" not in out
