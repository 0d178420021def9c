"""Corpora and token windows."""

from typing import Any

import pytest

from tl_geom import TlGeomError
from tl_geom.lens.data import corpus_hash, load_corpus, token_windows


class CharTokenizer:
    """One token per character (ord), BOS = 0: windows can be checked by eye."""

    bos_token_id = 0

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, Any]:
        return {"input_ids": [ord(c) for c in text]}


def test_shipped_corpora_load() -> None:
    text = load_corpus()
    assert text.startswith("BOOK ONE: 1805")
    assert len(text) > 3_000_000
    assert "Raven" in load_corpus("poe")
    assert len(corpus_hash(text)) == 64


def test_windows_are_consecutive_and_start_with_bos() -> None:
    text = "abcdefghijklmnopqrstuvwxyz" * 400
    w = token_windows(CharTokenizer(), text, ctx=5, windows=3)
    assert w.tolist() == [
        [0, *map(ord, "abcd")],
        [0, *map(ord, "efgh")],
        [0, *map(ord, "ijkl")],
    ]
    # window i does not depend on how many windows are requested
    assert token_windows(CharTokenizer(), text, ctx=5, windows=1).tolist() == w[:1].tolist()
    assert (
        token_windows(CharTokenizer(), text, ctx=5, windows=1, start=4).tolist() == w[1:2].tolist()
    )


def test_corpus_too_short_is_a_clear_error() -> None:
    with pytest.raises(
        TlGeomError, match=r"too short: 3 windows of ctx=5 need 12 tokens, it has 10"
    ):
        token_windows(CharTokenizer(), "abcdefghij", ctx=5, windows=3)


def test_missing_corpus_and_bad_arguments(tmp_path: Any) -> None:
    with pytest.raises(TlGeomError, match="not found"):
        load_corpus(str(tmp_path / "nope.txt"))
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"caf\xe9")
    with pytest.raises(TlGeomError, match="not UTF-8"):
        load_corpus(str(bad))
    with pytest.raises(TlGeomError, match="ctx=1"):
        token_windows(CharTokenizer(), "abc", ctx=1, windows=1)
    with pytest.raises(TlGeomError, match="windows=0"):
        token_windows(CharTokenizer(), "abc", ctx=2, windows=0)
