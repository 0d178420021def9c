"""The windows of a run on disk: ``out/windows/w000123.pt``, written atomically, resumable.

Each window's results are written as soon as it is done, so a killed run continues
with ``resume=True`` without losing or repeating a window. Every window file carries
its own fingerprint (:mod:`tl_geom.jobs.window_files`); before anything is computed,
every finished window is checked against this run, and a bad one (truncated, garbage,
foreign, in the wrong slot) is named on stderr, moved to ``windows/rejected/`` and
recomputed, or refused with ``strict=True``. ``out/windows/config.json`` holds the
run's arguments, so a run with other arguments meets a clear error naming them; a
second live run on the same ``out`` meets the lock (:class:`~tl_geom.jobs.outdir.OutLock`).
Under torchrun rank r runs the windows ``w % world == r`` and every rank reads all of
them back.
"""

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tl_geom.errors import TlGeomError
from tl_geom.jobs.distributed import Ranks
from tl_geom.jobs.head_rows import FinalRows, keeps_final_rows
from tl_geom.jobs.outdir import OutLock, check_out
from tl_geom.jobs.results import atomic_write_text, make_dir
from tl_geom.jobs.window import WindowSpec, run_window
from tl_geom.jobs.window_files import BadWindow, WindowKeys, move_aside, read_window, write_window
from tl_geom.lens.hooks import model_dims

__all__ = ["WindowRun", "prepare_out", "run_windows"]


@dataclass
class WindowRun:
    """What :func:`run_windows` did.

    Attributes:
        results: every window's results by index.
        times: the seconds of the windows run here.
        todo: the indices of the windows run (not resumed).
        backends: per window, the backend its rows were read with.
        rejected: ``"file: reason"`` of each window file moved aside and recomputed.
        final_rows: window 0's final-query rows and values of every layer where this
            process ran window 0 and they fit :data:`~tl_geom.jobs.head_rows.KEEP_BYTES`
            (:func:`~tl_geom.jobs.head_rows.keep_final_row`), else empty; never written
            to disk.
    """

    results: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    times: list[float] = field(default_factory=list)
    todo: list[int] = field(default_factory=list)
    backends: dict[int, str] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)
    final_rows: FinalRows = field(default_factory=dict)


def prepare_out(out: Path, fingerprint: dict[str, Any], resume: bool) -> Path:
    """Create ``out/windows`` for this run, or check that it holds this run's windows.

    The caller has checked ``out`` itself (:func:`~tl_geom.jobs.outdir.check_out`) before
    taking its lock.

    Raises:
        TlGeomError: ``windows/config.json`` records other arguments (named) or cannot
            be read; finished windows exist and ``resume`` is off.
    """
    wdir = out / "windows"
    cfg_path = wdir / "config.json"
    if cfg_path.exists():
        try:
            old = json.loads(cfg_path.read_text())
        except (OSError, ValueError) as exc:
            raise TlGeomError(
                f"{cfg_path} cannot be read ({type(exc).__name__}); delete it to resume "
                "(each window file carries its own fingerprint) or use another --out"
            ) from None
        if old != fingerprint:
            keys = set(fingerprint) | set(old) if isinstance(old, dict) else set(fingerprint)
            diff = sorted(
                k for k in keys if not isinstance(old, dict) or old.get(k) != fingerprint.get(k)
            )
            raise TlGeomError(
                f"{out} holds a run with other arguments ({', '.join(diff)}; see {cfg_path}); "
                "use another --out or delete it"
            )
    if not resume and any(wdir.glob("w*.pt")):
        raise TlGeomError(
            f"{out} already holds windows of a run; pass --resume to continue it "
            "or use another --out"
        )
    make_dir(wdir)
    atomic_write_text(cfg_path, json.dumps(fingerprint, indent=2))
    return wdir


def _check_finished(wdir: Path, keys: WindowKeys, strict: bool, run: WindowRun) -> None:
    """Read every finished window of ``wdir``; a bad one is refused (strict) or moved aside."""
    for w in range(len(keys.tokens)):
        path = wdir / f"w{w:06d}.pt"
        if not path.exists():
            continue
        try:
            run.results[w], meta = read_window(path, keys, w)
            run.backends[w] = str(meta.get("backend"))
        except BadWindow as exc:
            if strict:
                raise TlGeomError(
                    f"window file {path} {exc}; move it away to recompute it (--strict)"
                ) from None
            dest = move_aside(path)
            run.rejected.append(f"{path}: {exc}")
            print(f"tl-geom: window file {path} {exc}; moved to {dest}, recomputing it",
                  file=sys.stderr)  # fmt: skip


def _prepare(
    out: Path | None,
    fingerprint: dict[str, Any],
    keys: WindowKeys,
    *,
    resume: bool,
    strict: bool,
    ranks: Ranks,
    lock: OutLock,
) -> tuple[Path | None, WindowRun]:
    """Rank 0 locks, prepares and checks ``out``; every rank learns the outcome."""
    run = WindowRun()
    if out is None:
        if ranks.world > 1:
            raise TlGeomError("under torchrun, pass --out: a directory every rank can read")
        return None, run
    error = None
    if ranks.rank == 0:
        try:
            check_out(out, "analyze")
            lock.acquire()
            wdir = prepare_out(out, fingerprint, resume)
            _check_finished(wdir, keys, strict, run)
        except TlGeomError as exc:
            error = str(exc)
    error = ranks.from_rank0(error)
    if error is not None:
        raise TlGeomError(error)
    return out / "windows", run


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
    backend: str = "hooks",
    strict: bool = False,
    lock: OutLock | None = None,
    layer_bar: float | None = None,
) -> WindowRun:
    """Run this rank's unfinished windows; return every window's results (all ranks').

    Alone, finished windows in ``out`` are checked and loaded and the rest run. Under
    torchrun the ranks first check they share the arguments, rank 0 locks, prepares and
    checks ``out``, each rank runs the windows ``w % world == rank`` that have no file
    yet, and after a barrier every rank reads all windows back from ``out``. Window 0
    keeps the attention view, and its final-query rows in ``final_rows``. ``lock`` is
    acquired here and left to the caller to release.
    ``layer_bar``: :func:`~tl_geom.jobs.window.run_window`'s per-layer bar (its delay).
    """
    ranks.agree("the arguments", fingerprint)
    keys = WindowKeys.of(fingerprint, tokens, backend)
    lock = lock if lock is not None else OutLock(None)
    wdir, run = _prepare(
        out, fingerprint, keys, resume=resume, strict=strict, ranks=ranks, lock=lock
    )
    paths = [wdir / f"w{w:06d}.pt" if wdir is not None else None for w in range(len(tokens))]
    run.todo = [w for w, path in enumerate(paths) if path is None or not path.exists()]
    keep = keeps_final_rows(model_dims(model), len(spec.layers), tokens.shape[1])
    ranks.barrier()  # every rank has listed the finished windows before any writes more
    for w in tqdm(ranks.mine(run.todo), desc="windows", disable=not progress, unit="window"):
        t0 = time.perf_counter()
        kept = run.final_rows if w == 0 and keep else None
        res = run_window(
            model, tokens[w : w + 1], spec, w, view=w == 0, layer_bar=layer_bar, final_rows=kept
        )
        run.times.append(time.perf_counter() - t0)
        path = paths[w]
        if path is not None:
            write_window(path, keys.meta(w), res)
        run.results[w] = res
        run.backends[w] = backend
    ranks.barrier()
    for w, path in enumerate(paths):
        if w not in run.results and path is not None:
            try:
                run.results[w], meta = read_window(path, keys, w)
            except BadWindow as exc:
                raise TlGeomError(f"window file {path} {exc} (changed during the run)") from None
            run.backends[w] = str(meta.get("backend"))
    return run
