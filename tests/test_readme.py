"""The README's Python example runs as written (on the shipped SmolLM2)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _block(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split(f"## {heading}", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block under {heading!r}"
    return match.group(1)


@pytest.mark.slow
def test_ten_line_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    code = _block("Ten lines of Python")
    assert len(code.strip().splitlines()) <= 10
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "precision" in out and "sink mass per head:" in out
    res = namespace["res"]
    assert res.precision.shape == (9, 4)  # type: ignore[attr-defined]
