"""The docs site: every API page names an importable module, every cited spec ships.

The strict build itself needs mkdocs + mkdocstrings (the dev extra); it skips without them.
"""

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_api_pages_name_importable_modules() -> None:
    refs = [
        m.group(1)
        for page in sorted((DOCS / "api").glob("*.md"))
        for m in re.finditer(r"^::: ([\w.]+)", page.read_text(), re.MULTILINE)
    ]
    assert len(refs) >= 10
    for ref in refs:
        importlib.import_module(ref)


def test_every_spec_cited_in_a_docstring_ships_with_the_docs() -> None:
    cited = {
        name
        for path in (ROOT / "tl_geom").rglob("*.py")
        for name in re.findall(r"\b(geometry|normalization|sinks)\.md\b", path.read_text())
    }
    assert cited == {"geometry", "normalization", "sinks"}
    for name in cited:
        assert (DOCS / "spec" / f"{name}.md").read_text().strip()
    nav = (ROOT / "mkdocs.yml").read_text()
    for name in cited:
        assert f"spec/{name}.md" in nav


def test_strict_build(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "spec" / "geometry" / "index.html").exists()
