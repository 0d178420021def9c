"""A notebook's exported HTML, opened in headless Chromium, shows the value-space picture.

A one-cell notebook runs ``tl_geom.inspect_head`` on a tiny model in a real kernel
(nbclient); its outputs are exported to one HTML page (nbconvert's ``HTMLExporter``
where installed, else the outputs as a notebook export writes them: ``text/html`` as is,
images inline) and drawn offline by Chromium (the ``chromium`` fixture of conftest).
"""

import html
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import Browser

ROOT = Path(__file__).resolve().parents[1]
SOURCE = """\
import torch
import tl_geom

torch.manual_seed(0)
model = tl_geom.tiny_model(n_layers=2, n_kv_heads=2)
cap = tl_geom.capture_attention(model, torch.randint(0, 97, (1, 40)), layers=[1])
tl_geom.inspect_head(cap, layer=1, head=0, n=[2, 4, 8])
"""
RED = np.array([0xD6, 0x27, 0x28]) / 255  # matplotlib's C3: the top-N points, r_max


def _export(nb: Any) -> str:
    """The executed notebook as one HTML page."""
    try:
        from nbconvert import HTMLExporter  # pyright: ignore[reportMissingImports]
    except ImportError:
        parts = []
        for cell in nb.cells:
            parts.append(f"<pre>{html.escape(cell.source)}</pre>")
            for out in cell.get("outputs", []):
                data = out.get("data", {})
                if "text/html" in data:
                    parts.append(data["text/html"])
                elif "image/png" in data:
                    parts.append(f'<img src="data:image/png;base64,{data["image/png"]}">')
                elif "text/plain" in data or "text" in out:
                    plain = data.get("text/plain", out.get("text"))
                    parts.append(f"<pre>{html.escape(plain)}</pre>")
        body = "\n".join(parts)
        return f'<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>{body}</body></html>'
    text, _ = HTMLExporter().from_notebook_node(nb)  # pyright: ignore
    return str(text)


@pytest.mark.browser
def test_exported_notebook_shows_the_value_space_picture(tmp_path: Path, chromium: Browser) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SOURCE)])
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    outputs = nb.cells[0].outputs
    assert any("text/html" in o.get("data", {}) for o in outputs), outputs
    page = tmp_path / "notebook.html"
    page.write_text(_export(nb), encoding="utf-8")
    image, dom = chromium(page)
    # the picture is in the page as drawn SVG text, not only in the notebook JSON
    svg = dom.split("<svg", 1)[1]
    assert "y_i = alpha_i v_i (PCA, 2-D)" in svg and "r_max" in svg and "s_4" in svg
    # and Chromium painted it: the top-N points (matplotlib C3 red) are on the screen
    rgb = image[..., :3]
    red = np.abs(rgb - RED).max(-1) < 0.08
    assert red.sum() > 40, red.sum()
    rows = np.flatnonzero(red.any(1))
    assert rows.min() < 1500  # near the top: the cell's output, not some later element
