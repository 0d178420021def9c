"""An Analysis in a notebook: short repr, HTML summary, matplotlib figures, report."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from tl_geom import TlGeomError, analyze, tiny_model


@pytest.fixture(scope="module")
def analysis() -> Any:
    model = tiny_model(n_layers=2)
    return analyze(model, tokens=torch.randint(0, 97, (3, 16)), n=[1, 2, 4], progress=False)


def test_repr_is_short_and_html_is_a_table(analysis: Any) -> None:
    text = repr(analysis)
    assert len(text) < 200 and "layers=2" in text and "n=[1, 2, 4]" in text
    page = analysis._repr_html_()
    assert "<table" in page and "f1_random" in page


def test_plots_are_figures_of_the_tables(analysis: Any, tmp_path: Path) -> None:
    assert isinstance(analysis.plot_curves(), Figure)
    fig = analysis.plot_heatmap("f1", n=2)
    image = fig.axes[0].images[0].get_array()
    m = analysis.metrics[analysis.metrics["n"] == 2].sort_values(["layer", "head"])
    np.testing.assert_allclose(np.asarray(image).ravel(), m["f1"].to_numpy())
    assert fig.axes[0].get_title() == "f1, N = 2"
    assert analysis.plot_heatmap("f1").axes[0].get_title() == "f1, N = 2"  # N = 1 skipped
    assert isinstance(analysis.plot_heatmap("sink_mass"), Figure)
    with pytest.raises(TlGeomError, match="neither"):
        analysis.plot_heatmap("nope")
    with pytest.raises(TlGeomError, match="n=3"):
        analysis.plot_heatmap("f1", n=3)
    path = analysis.report(tmp_path / "r.html")
    assert path.exists() and "<svg" in path.read_text()
