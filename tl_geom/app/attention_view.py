"""The circuitsvis attention view, made safe to embed in an offline page.

``str()`` of a circuitsvis render is ``cdn_src``, which imports from unpkg and renders
blank offline; the view here carries the bundle inline (``RenderedHTML.local_src``).
"""

import re
from collections.abc import Sequence

import numpy as np

__all__ = ["attention_view_html", "colored_tokens_html"]


def attention_view_html(pattern: np.ndarray, tokens: Sequence[str], names: Sequence[str]) -> str:
    """The circuitsvis ``attention_heads`` view of ``[head, T, T]`` weights, for an offline page.

    Uses ``RenderedHTML.local_src`` (the ~1.3 MB circuitsvis bundle inline); ``str()`` of
    the rendered object is ``cdn_src``, which imports from unpkg and is blank offline.

    Raises:
        ImportError: circuitsvis is not installed.
    """
    from circuitsvis.attention import attention_heads

    rendered = attention_heads(
        attention=pattern, tokens=list(tokens), attention_head_names=list(names)
    )
    return _inline_circuitsvis(rendered.local_src)


def colored_tokens_html(tokens: Sequence[str], values: Sequence[float]) -> str:
    """The circuitsvis ``colored_tokens`` view of one row of weights, inline (offline).

    A plain escaped list of the tokens where circuitsvis is not installed.
    """
    try:
        from circuitsvis.tokens import colored_tokens
    except ImportError:
        import html

        return "<p>" + " ".join(html.escape(t) for t in tokens) + "</p>"
    return _inline_circuitsvis(colored_tokens(tokens=list(tokens), values=list(values)).local_src)


def _inline_circuitsvis(src: str) -> str:
    r"""Make circuitsvis's ``local_src`` safe to embed in a larger page.

    It opens with ``<div id=.../>``, which HTML parses as an unclosed div that would
    swallow the rest of the page; its props are JSON inside the script, where a token
    ``</script>`` would end the script: ``<`` there becomes ``\u003c`` (same string in JS).
    The source-map comment is dropped (nothing to fetch).
    """
    src = re.sub(r'^\s*<div id="([\w-]+)"([^>]*?)\s*/>', r'<div id="\1"\2></div>', src, count=1)
    src = re.sub(r"^//# sourceMappingURL=\S*\s*$", "", src, flags=re.MULTILINE)
    cut, end = src.rfind("CircuitsVis.render("), src.rfind("</script>")
    if 0 <= cut < end:
        src = src[:cut] + src[cut:end].replace("<", "\\u003c") + src[end:]
    return src
