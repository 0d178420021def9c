"""The HTML report: one self-contained file, every section, offline, robust to odd inputs.

A synthetic :class:`Analysis` (3 layers x 4 heads, N in 1, 2, 4, 8, L = 32, an 8-token
view) stands in for a run. The page is parsed with ``html.parser``: no script, link or
img tag may point anywhere (the circuitsvis view carries its JavaScript inline).
"""

from html.parser import HTMLParser
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
import pytest
from conftest import Browser

from tl_geom.app.plotting import plot_style
from tl_geom.app.report import SECTIONS, write_report
from tl_geom.app.viz import layer_f1_svg
from tl_geom.jobs.results import Analysis, AttentionView

MPL_SVG = '<svg xmlns:xlink="http://www.w3.org/1999/xlink"'  # matplotlib's opening tag
REMOTE = ("http:", "https:", "//", "unpkg", "jsdelivr", "cdn")


def make_analysis(
    layers: int = 3,
    heads: int = 4,
    ns: tuple[int, ...] = (1, 2, 4, 8),
    length: int = 32,
    view_tokens: int = 8,
    seed: int = 0,
) -> Analysis:
    rng = np.random.default_rng(seed)
    rows = []
    for layer in range(layers):
        for head in range(heads):
            for n in ns:
                p, r = rng.uniform(0.3, 1, 2)
                pr, rr = rng.uniform(0.1, 0.8, 2)
                rows.append(
                    {
                        "layer": layer,
                        "head": head,
                        "n": n,
                        "precision": p,
                        "recall": r,
                        "f1": 2 * p * r / (p + r),
                        "precision_random": pr,
                        "recall_random": rr,
                        "f1_random": 2 * pr * rr / (pr + rr),
                        "margin": rng.uniform(0, 0.1),
                        "r_max": rng.uniform(0, 1),
                        "r_min": rng.uniform(0, 1),
                        "precision_std": rng.uniform(0, 0.1),
                        "recall_std": rng.uniform(0, 0.1),
                        "f1_std": rng.uniform(0, 0.1),
                        "windows": 4,
                    }
                )
    hh = layers * heads
    head_rows = pd.DataFrame(
        {
            "layer": np.repeat(np.arange(layers), heads),
            "head": np.tile(np.arange(heads), layers),
            "type": ["unclassified"] * hh,
            "sink_mass": rng.uniform(0.2, 0.9, hh),
            "entropy": rng.uniform(0.5, 3, hh),
            "norm_cv_tokens": rng.uniform(0.01, 0.2, hh),
            "norm_cv_holds": rng.uniform(size=hh) < 0.6,
            "sink_lambda": rng.uniform(0.05, 1, hh),
            "sink_compressed": rng.uniform(size=hh) < 0.7,
            "beta": rng.uniform(0, 0.3, hh),
            "beta_r2": rng.uniform(0, 1, hh),
            "decay_holds": rng.uniform(size=hh) < 0.5,
            "rho0": rng.uniform(-0.5, 0.8, hh),
            "profile_r2": rng.uniform(0, 1, hh),
            "profile_holds": rng.uniform(size=hh) < 0.5,
        }
    )
    env = [
        {"n": n, "precision": 0.9, "recall": 0.8, "f1": 0.85}
        | {f"{m}_std": 0.05 for m in ("precision", "recall", "f1")}
        for n in ns
    ]
    # sink spike, low plateau, a band, a recency ramp; then normalised per head
    base = np.full(length, 0.2)
    base[0] = 20.0
    base[length // 3 : 2 * length // 3] = 0.6
    base[-max(1, length // 8) :] = 3.0
    prof = base * rng.uniform(0.8, 1.2, (layers, heads, length))
    prof /= prof.sum(-1, keepdims=True)
    view = None
    if view_tokens:
        pat = np.tril(rng.uniform(size=(heads, view_tokens, view_tokens)))
        pat /= pat.sum(-1, keepdims=True)
        view = AttentionView(
            layer=layers - 1, tokens=[f"tok{i}" for i in range(view_tokens)], pattern=pat
        )
    run = {  # the shape tl_geom.jobs.analyze writes
        "config": {
            "model": "synthetic-model",
            "corpus": "war_and_peace",
            "windows": 4,
            "ctx": length,
            "n": list(ns),
            "queries": "last",
        },
        "model_dims": {"n_layers": layers, "n_heads": heads},
        "versions": {"tl_geom": "0.1.0"},
        "timings_s": {"load": 1.25, "windows_run": 4, "per_window_mean": None, "total": 3.5},
    }
    return Analysis(
        metrics=pd.DataFrame(rows),
        heads=head_rows,
        envelope=pd.DataFrame(env),
        profiles=prof,
        view=view,
        run=run,
    )


class _Tags(HTMLParser):
    """Collects script/link/img tags with their attributes and inline script text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self.ids: set[str] = set()
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        d = dict(attrs)
        if d.get("id"):
            self.ids.add(str(d["id"]))
        if tag in ("script", "link", "img", "iframe"):
            self.tags.append((tag, d))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


def parse(text: str) -> _Tags:
    p = _Tags()
    p.feed(text)
    p.close()
    return p


def assert_offline(text: str) -> None:
    tags = parse(text)
    for tag, attrs in tags.tags:
        for name in ("src", "href"):
            value = (attrs.get(name) or "").lower()
            assert not any(r in value for r in REMOTE), f"<{tag} {name}={value!r}>"
        assert tag != "link", "the page must not link stylesheets"
    for bad in ('src="http', "href='http", 'href="http', "unpkg", "jsdelivr", "//cdn"):
        assert bad not in text.lower()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, bool]:
    """The report of the synthetic run, and whether matplotlib's rcParams survived it."""
    path = tmp_path_factory.mktemp("report") / "report.html"
    before = dict(mpl.rcParams)
    assert write_report(make_analysis(), path) == path
    return path.read_text(encoding="utf-8"), dict(mpl.rcParams) == before


@pytest.fixture
def report(built: tuple[str, bool]) -> str:
    return built[0]


def test_every_section(report: str) -> None:
    ids = parse(report).ids
    for sid, title in SECTIONS:
        assert sid in ids
        assert f'<section id="{sid}"><h2>{title}</h2>' in report
    assert "synthetic-model" in report and "war_and_peace" in report
    assert "1.25 s" in report and "time: windows_run</td><td>4<" in report
    assert "unclassified" in report


def test_offline(report: str) -> None:
    assert_offline(report)


def test_circuitsvis_inlined(report: str) -> None:
    scripts = parse(report).scripts
    assert len(scripts) == 1
    assert len(scripts[0]) > 500_000  # the whole circuitsvis bundle, not an import
    assert "CircuitsVis.render(" in scripts[0] and "AttentionHeads" in scripts[0]
    assert "sourceMappingURL" not in scripts[0]
    # the mount point is closed, so it does not swallow the provenance section
    assert '<div id="circuits-vis-' in report and "></div>" in report.split("circuits-vis-")[1][:80]


def test_plots_are_inline_svg(report: str) -> None:
    assert report.count(MPL_SVG) >= 7  # curves, per layer, 3 heatmap rows, profile, histograms
    assert "<?xml" not in report and "<!DOCTYPE svg" not in report
    assert "4-phase fit" in report and "sink (start: mean)" in report


def test_page_size(report: str) -> None:
    assert len(report.encode()) < 2_500_000  # the circuitsvis bundle is ~1.3 MB of it


def test_does_not_touch_matplotlib_state(built: tuple[str, bool]) -> None:
    assert built[1]


def test_view_none(tmp_path: Path) -> None:
    a = make_analysis(layers=1, heads=2, ns=(1, 2), length=8, view_tokens=0)
    text = write_report(a, tmp_path / "r.html").read_text()
    assert "No attention view in this run" in text
    assert parse(text).scripts == []
    assert_offline(text)


def test_text_is_escaped(tmp_path: Path) -> None:
    a = make_analysis()
    assert a.view is not None
    evil = "</script><img src=x onerror=alert(1)>"
    view = AttentionView(a.view.layer, [evil, *a.view.tokens[1:]], a.view.pattern)
    heads = a.heads.assign(type=["<b>bold</b>"] * len(a.heads))
    run = a.run | {"config": a.run["config"] | {"model": "<i>m</i>"}, "note": evil}
    a = Analysis(a.metrics, heads, a.envelope, a.profiles, view, run)
    text = write_report(a, tmp_path / "r.html").read_text()
    tags = parse(text)
    assert [t for t, _ in tags.tags] == ["script"]  # no injected img, one script
    assert "<b>bold</b>" not in text and "&lt;b&gt;bold&lt;/b&gt;" in text
    assert "<i>m</i>" not in text
    assert "\\u003c/script>\\u003cimg" in tags.scripts[0]  # token kept, made inert


def test_nan_columns_through_files(tmp_path: Path) -> None:
    """NaN in every kind of column, saved to CSV and read back, then into a directory."""
    a = make_analysis()
    m = a.metrics.copy()
    m.loc[::3, "f1"] = np.nan
    m["f1_random"] = np.nan
    m.loc[m["n"] == 8, ["precision", "recall", "f1"]] = np.nan
    h = a.heads.copy()
    h["rho0"] = np.nan
    h["norm_cv_tokens"] = np.nan
    h["norm_cv_holds"] = h["norm_cv_holds"].astype(object)
    h.loc[0, "norm_cv_holds"] = np.nan
    h.loc[1, "entropy"] = np.nan
    prof = a.profiles.copy()
    prof[0, 0] = np.nan
    prof[1] = np.nan  # a layer with no profile at all
    env = a.envelope.iloc[0:0]
    Analysis(m, h, env, prof, a.view, a.run).save(tmp_path)
    out = write_report(Analysis.load(tmp_path), tmp_path)  # a directory: report.html in it
    assert out == tmp_path / "report.html"
    text = out.read_text()
    assert all(f'id="{sid}"' in text for sid, _ in SECTIONS)
    assert "no finite values" in text and "n/a" in text
    assert "✓" in text and "✗" in text and ">?<" in text  # holds columns read back from CSV
    assert_offline(text)


@pytest.mark.parametrize(
    ("layers", "heads", "ns", "length"),
    [(1, 1, (1,), 4), (1, 1, (2,), 3)],
    ids=["1x1-L4", "1x1-L3-nofit"],
)
def test_tiny_grids(
    tmp_path: Path, layers: int, heads: int, ns: tuple[int, ...], length: int
) -> None:
    a = make_analysis(layers=layers, heads=heads, ns=ns, length=length, view_tokens=3)
    text = write_report(a, tmp_path / "r.html").read_text()
    assert all(f'id="{sid}"' in text for sid, _ in SECTIONS)
    assert text.count(MPL_SVG) >= 6
    if length < 4:
        assert "no fit: need L &gt;= 4" in text


def test_many_layers_get_few_panels() -> None:
    metrics = make_analysis(layers=7, heads=1, ns=(1, 2), length=4, view_tokens=0).metrics
    with plot_style():
        svg, drawn = layer_f1_svg(metrics, max_panels=4)
    assert drawn == [0, 2, 4, 6] and svg.startswith("<svg")


@pytest.mark.browser
def test_browser_draws_the_page(tmp_path: Path, chromium: Browser) -> None:
    image, dom = chromium(write_report(make_analysis(), tmp_path / "report.html"))
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert np.ptp(image[..., :3].reshape(-1, 3), axis=0).max() > 0.1  # not a single colour
    mount = dom.split('<div id="circuits-vis-', 1)[1]
    assert not mount.split(">", 1)[1].startswith("</div>"), "circuitsvis rendered nothing"
    # The view drew: one canvas per head of the layer shown, inside the circuitsvis mount.
    view_dom = mount.split('id="provenance"', 1)[0]
    assert view_dom.count("<canvas") >= make_analysis().view.pattern.shape[0]  # type: ignore[union-attr]


def test_taxonomy_section(tmp_path: Path) -> None:
    a = make_analysis(layers=3, heads=4)
    rng = np.random.default_rng(1)
    m = a.metrics.copy()
    m["c_last"] = rng.uniform(-1, 1, len(m))
    m["c_sink"] = rng.uniform(-1, 1, len(m))
    h = a.heads.copy()
    h["type"] = ["Retriever", "Mixer", "Reset", "unclear"] * 3
    h.loc[1, "type"] = "Reset"  # layer 0, head 1
    run = a.run | {
        "taxonomy": {
            "config": {"retriever_min": 0.5, "shift_min": 0.2, "sink_min": 0.5, "weak_max": 0.3},
            "kmeans": {"accuracy": 0.875, "labelled_heads": 9, "adjusted_rand": 0.61},
        }
    }
    view = a.view
    assert view is not None and view.layer == 2
    page = write_report(Analysis(m, h, a.envelope, a.profiles, view, run), tmp_path / "r.html")
    text = page.read_text()
    section = text.split('<section id="taxonomy">')[1].split("</section>")[0]
    assert section.count(MPL_SVG) == 3  # map, depth bars, curves per type
    assert "0.875" in section and "0.610" in section and "9" in section
    assert "Reset (4 heads)" in section and "unclear (3 heads)" in section
    # depth table: layers 0-0 hold one Retriever, two Resets, one unclear
    assert "<td>layers 0-0</td><td>1</td><td>0</td><td>2</td><td>1</td>" in section
    # the attention view of layer 2 lists its heads grouped by type, with their names
    view_part = text.split('<section id="attention">')[1]
    order = [view_part.find(f"L2H{i} {t}") for i, t in enumerate(h["type"][8:])]
    assert all(o > 0 for o in order) and order == sorted(order)  # R, M, Reset, unclear
    assert_offline(text)
