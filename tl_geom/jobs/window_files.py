"""One window's file, ``out/windows/w000123.pt``: its results and its own fingerprint.

A window file is ``{"meta": {...}, "result": {name: tensor}}``, written atomically and
read with ``torch.load(weights_only=True)`` (no code runs on loading). ``meta`` says
what the numbers belong to:

- ``run``: sha256 of the run's fingerprint (arguments, corpus hash, model identity:
  name, weights hash and active hooks; :func:`tl_geom.jobs.run_facts.model_identity`);
- ``window``: the window's index; ``tokens``: sha256 of its token ids;
- ``backend``: how the rows were read (``hooks`` or ``sdpa``), recorded, not compared.

A file whose ``meta`` does not match the slot it sits in, or that cannot be read, is
refused with a reason naming it (:func:`read_window`); the caller moves it aside.
"""

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tl_geom.jobs.results import atomic_write_bytes, make_dir

__all__ = ["FORMAT", "BadWindow", "WindowKeys", "move_aside", "read_window", "write_window"]

FORMAT = "tl_geom.window/1"


def sha256_json(value: Any) -> str:
    """sha256 of ``value`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class WindowKeys:
    """What every window file of this run must carry (see the module docstring)."""

    run: str
    tokens: tuple[str, ...]
    backend: str

    @classmethod
    def of(cls, fingerprint: dict[str, Any], tokens: torch.Tensor, backend: str) -> "WindowKeys":
        """Keys of a run with ``fingerprint`` over the ``[window, ctx]`` token ids."""
        ids = tokens.detach().to("cpu", torch.int64).contiguous()
        per = tuple(hashlib.sha256(row.numpy().tobytes()).hexdigest() for row in ids)
        return cls(run=sha256_json(fingerprint), tokens=per, backend=backend)

    def meta(self, w: int) -> dict[str, Any]:
        """The ``meta`` of window ``w``."""
        return {
            "format": FORMAT,
            "run": self.run,
            "window": w,
            "tokens": self.tokens[w],
            "backend": self.backend,
        }


class BadWindow(Exception):
    """A window file that cannot be used here; ``str`` is the reason (after the name)."""


def write_window(path: Path, meta: dict[str, Any], result: dict[str, torch.Tensor]) -> None:
    """Save ``{"meta", "result"}`` to ``path`` atomically."""
    buf = io.BytesIO()
    torch.save({"meta": meta, "result": result}, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_window(
    path: Path, keys: WindowKeys, w: int
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The results and ``meta`` of window ``w`` from ``path``, checked against ``keys``.

    Raises:
        BadWindow: unreadable (truncated, garbage, empty, a pickle that is not plain
            data), not a window file, or written for another run, slot or tokens.
    """
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # any failure to read is a bad file, named by the caller
        first = (str(exc).strip().splitlines() or [""])[0][:120]
        raise BadWindow(f"cannot be read ({type(exc).__name__}: {first})") from None
    meta = obj.get("meta") if isinstance(obj, dict) else None
    result = obj.get("result") if isinstance(obj, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(result, dict):
        raise BadWindow("is not a tl-geom window file (no fingerprint)")
    if any(not isinstance(v, torch.Tensor) for v in result.values()):
        raise BadWindow("is not a tl-geom window file (non-tensor results)")
    if meta.get("run") != keys.run:
        raise BadWindow("belongs to another run (other arguments, corpus or model)")
    if meta.get("window") != w:
        raise BadWindow(f"holds window {meta.get('window')!r}, not window {w}")
    if meta.get("tokens") != keys.tokens[w]:
        raise BadWindow(f"was computed on other tokens than window {w}")
    return result, meta


def move_aside(path: Path) -> Path:
    """Move a bad window file to ``windows/rejected/`` (never deleted); return where."""
    dest_dir = path.parent / "rejected"
    make_dir(dest_dir)
    dest = dest_dir / path.name
    k = 1
    while dest.exists():
        dest = dest_dir / f"{path.name}.{k}"
        k += 1
    path.replace(dest)
    return dest
