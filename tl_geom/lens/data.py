"""Corpora and token windows.

The public-domain texts ship inside the package (``tl_geom/corpora``), so the default
analysis needs no download: ``war_and_peace`` (Tolstoy, Maude translation; the corpus
of arXiv 2508.17821) and ``poe`` (Poe, collected works).

A window is ``[BOS] + ctx - 1`` consecutive tokens of the text [ours]: every window
starts with the model's own start token (BOS for decoders, ``[CLS]`` for BERT), the
position where the sink forms in real use. Windows do not overlap and are taken in
order from a start offset, so window ``i`` is the same whatever the number requested.
"""

import hashlib
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from tl_geom.errors import TlGeomError

__all__ = ["CORPORA", "corpus_hash", "load_corpus", "start_token", "token_windows"]

CORPORA = {"war_and_peace": "war_and_peace.txt", "poe": "poe_works.txt"}


def load_corpus(name_or_path: str = "war_and_peace") -> str:
    """Text of a shipped corpus (``war_and_peace``, ``poe``) or of a UTF-8 file."""
    if name_or_path in CORPORA:
        return (resources.files("tl_geom") / "corpora" / CORPORA[name_or_path]).read_text(
            encoding="utf-8"
        )
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        shipped = ", ".join(CORPORA)
        raise TlGeomError(f"corpus file {name_or_path!r} not found (shipped corpora: {shipped})")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TlGeomError(f"corpus file {path} is not UTF-8 text ({exc.reason})") from None


def corpus_hash(text: str) -> str:
    """SHA-256 of the text, for provenance records."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def start_token(tokenizer: Any) -> int | None:
    """The id that opens every window: [CLS] for BERT tokenizers, else BOS (None if neither)."""
    # [CLS] first: BERT tokenizers may report an unset BOS as [UNK].
    for attr in ("cls_token_id", "bos_token_id"):
        tid = getattr(tokenizer, attr, None)
        if tid is not None:
            return int(tid)
    return None


def token_windows(
    tokenizer: Any, text: str, ctx: int, windows: int, *, start: int = 0
) -> Int[Tensor, "window ctx"]:
    """``windows`` non-overlapping windows of ``ctx`` tokens, each opening with BOS/[CLS].

    Only as much text as needed is tokenized (about 8 characters per token, grown
    if the text is denser). Window ``i`` covers body tokens
    ``[start + i (ctx - 1), start + (i + 1)(ctx - 1))``.

    Raises:
        TlGeomError: ctx < 2, windows < 1, or a text too short for the request.
    """
    if ctx < 2:
        raise TlGeomError(f"ctx={ctx} too short; a window needs at least 2 tokens")
    if windows < 1:
        raise TlGeomError(f"windows={windows}; ask for at least one window")
    bos = start_token(tokenizer)
    body = ctx - 1 if bos is not None else ctx
    need = start + windows * body
    chars = max(need * 8, 4096)
    while True:
        ids = tokenizer(text[:chars], add_special_tokens=False)["input_ids"]
        if len(ids) > need or chars >= len(text):
            break
        chars *= 2
    # The last token of a cut may be a fragment of a longer word: drop it.
    usable = len(ids) - 1 if chars < len(text) else len(ids)
    if usable < need:
        have = max(usable - start, 0) // body
        raise TlGeomError(
            f"the corpus is too short: {windows} windows of ctx={ctx} need {need} tokens, "
            f"it has {usable} (enough for {have} windows)"
        )
    flat = torch.tensor(ids[start:need], dtype=torch.long).view(windows, body)
    if bos is None:
        return flat
    return torch.cat([torch.full((windows, 1), bos, dtype=torch.long), flat], dim=1)
