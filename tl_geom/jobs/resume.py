"""The windows of a run on disk: ``out/windows/w000123.pt``, written atomically, resumable.

Each window's results are written as soon as it is done, so a killed run continues
with ``resume=True`` without losing or repeating a window; ``out/windows/config.json``
holds the run's fingerprint, and a run with other arguments is refused. Under torchrun
rank r runs the windows ``w % world == r`` and every rank reads all of them back.
"""

import io
import json
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tl_geom.errors import TlGeomError
from tl_geom.jobs.distributed import Ranks
from tl_geom.jobs.results import atomic_write_bytes, atomic_write_text
from tl_geom.jobs.window import WindowSpec, run_window

__all__ = ["WindowRun", "prepare_out", "run_windows"]

WindowRun = tuple[dict[int, dict[str, torch.Tensor]], list[float], list[int]]
"""Every window's results by index, the seconds of the windows run here, their indices."""


def prepare_out(out: Path, fingerprint: dict[str, Any], resume: bool) -> Path:
    """Create ``out/windows`` for this run, or check that it holds this run's windows."""
    wdir = out / "windows"
    cfg_path = wdir / "config.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        if old != fingerprint:
            diff = sorted(k for k in fingerprint if old.get(k) != fingerprint[k])
            raise TlGeomError(
                f"{out} holds a run with other arguments ({', '.join(diff)}); "
                "use another --out or delete it"
            )
        if not resume and any(wdir.glob("w*.pt")):
            raise TlGeomError(
                f"{out} already holds results of this run; pass --resume to continue it "
                "or use another --out"
            )
    wdir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cfg_path, json.dumps(fingerprint, indent=2))
    return wdir


def _save_window(path: Path, result: dict[str, torch.Tensor]) -> None:
    buf = io.BytesIO()
    torch.save(result, buf)
    atomic_write_bytes(path, buf.getvalue())


def _windows_dir(out: Path | None, fingerprint: dict[str, Any], resume: bool, ranks: Ranks):
    """Rank 0 prepares ``out``; every rank learns the outcome (an error fails them all)."""
    if out is None:
        if ranks.world > 1:
            raise TlGeomError("under torchrun, pass --out: a directory every rank can read")
        return None
    error = None
    if ranks.rank == 0:
        try:
            prepare_out(out, fingerprint, resume)
        except TlGeomError as exc:
            error = str(exc)
    error = ranks.from_rank0(error)
    if error is not None:
        raise TlGeomError(error)
    return out / "windows"


def run_windows(
    model: Any,
    tokens: torch.Tensor,
    spec: WindowSpec,
    out: Path | None,
    fingerprint: dict[str, Any],
    *,
    resume: bool,
    ranks: Ranks,
    progress: bool,
) -> WindowRun:
    """Run this rank's unfinished windows; return every window's results (all ranks').

    Alone, finished windows in ``out`` are loaded and the rest run. Under torchrun the
    ranks first check they share the arguments, rank 0 prepares ``out``, each rank runs
    the windows ``w % world == rank`` that have no file yet, and after a barrier every
    rank reads all windows back from ``out``. Window 0 keeps the attention view.
    """
    ranks.agree("the arguments", fingerprint)
    wdir = _windows_dir(out, fingerprint, resume, ranks)
    paths = [wdir / f"w{w:06d}.pt" if wdir is not None else None for w in range(len(tokens))]
    todo = [w for w, path in enumerate(paths) if path is None or not path.exists()]
    ranks.barrier()  # every rank has listed the finished windows before any writes more
    results: dict[int, dict[str, torch.Tensor]] = {}
    window_times = []
    for w in tqdm(ranks.mine(todo), desc="windows", disable=not progress, unit="window"):
        t0 = time.perf_counter()
        res = run_window(model, tokens[w : w + 1], spec, w, view=w == 0)
        window_times.append(time.perf_counter() - t0)
        path = paths[w]
        if path is not None:
            _save_window(path, res)
        results[w] = res
    ranks.barrier()
    for w, path in enumerate(paths):
        if w not in results and path is not None:
            results[w] = torch.load(path, weights_only=True)
    return results, window_times, todo
