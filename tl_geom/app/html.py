"""The HTML kit of the self-contained pages (``report.html``, the sparsify page, ``claims.html``).

One stylesheet, escaping, number formatting, tables and the page around a body. Every
string that comes from data goes through :func:`esc` (or :func:`table`, which escapes
every cell); nothing here loads anything from the network.
"""

import html
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tl_geom.errors import TlGeomError
from tl_geom.jobs.results import atomic_write_text

__all__ = ["CSS", "esc", "fmt", "page", "page_path", "require_matplotlib", "table", "write_page"]

CSS = """
body{font:14px/1.45 system-ui,sans-serif;max-width:1200px;margin:0 auto;padding:0 1em 3em}
nav a{margin-right:1em} h2{border-bottom:1px solid #ccc;padding-top:.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
td,th{border:1px solid #ddd;padding:2px 8px;text-align:right} th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left} .yes{color:#1a7f37} .no{color:#b42318}
.plot svg{max-width:100%;height:auto} pre{background:#f6f6f6;padding:1em;overflow:auto}
.note{color:#666;font-size:13px}
"""
"""The stylesheet shared by every page (``.yes``/``.no`` colour the ✓/✗ cells)."""


def esc(x: object) -> str:
    """``str(x)`` escaped for HTML text and attribute values (quotes included)."""
    return html.escape(str(x), quote=True)


def fmt(x: object, spec: str = ".3f") -> str:
    """Numbers formatted, NaN and None as ``n/a``; anything else as text.

    >>> fmt(0.12345), fmt(float("nan")), fmt(3), fmt(True), fmt("x")
    ('0.123', 'n/a', '3', 'True', 'x')
    """
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, bool | np.bool_):
        return str(bool(x))
    if isinstance(x, int | np.integer):
        return str(int(x))
    if isinstance(x, float | np.floating):
        return format(float(x), spec)
    return str(x)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """An HTML table; every cell is formatted with :func:`fmt` and escaped.

    >>> table(("a",), [(0.5,), ("✓",)]).split("<tbody>")[1]
    '<tr><td>0.500</td></tr><tr><td class="yes">✓</td></tr></tbody></table>'
    """

    def cell(tag: str, x: object) -> str:
        cls = {"✓": ' class="yes"', "✗": ' class="no"'}.get(str(x), "")
        return f"<{tag}{cls}>{esc(fmt(x))}</{tag}>"

    head = "".join(cell("th", h) for h in header)
    body = "".join("<tr>" + "".join(cell("td", x) for x in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, body: str, *, css: str = "", viewport: bool = False) -> str:
    """The whole document: ``title`` escaped, :data:`CSS` plus ``css``, ``body`` as given."""
    meta = '<meta name="viewport" content="width=device-width, initial-scale=1">'
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"{meta if viewport else ''}"
        f"<title>{esc(title)}</title><style>{CSS}{css}</style></head>\n"
        f"<body>{body}</body></html>\n"
    )


def page_path(path: Path, name: str = "report.html") -> Path:
    """``path``, or ``name`` inside it if it is a directory."""
    path = Path(path)
    return path / name if path.is_dir() else path


def write_page(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (parents created); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path


def require_matplotlib(what: str) -> None:
    """Raise :class:`TlGeomError` naming ``what`` if matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise TlGeomError(f"{what} needs matplotlib: pip install 'tl-geom[viz]'") from None
