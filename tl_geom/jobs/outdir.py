"""The ``--out`` directory of a run: whose it is, and one live run at a time.

:func:`check_out` refuses a directory that holds anything but a run of the same command
(the user's own files are never overwritten), and :class:`OutLock` is a lock file,
``out/.tl_geom.lock``, holding the pid and host of the live run: a second run on the
same ``--out`` meets a clear error, and the lock of a dead process is taken over.
"""

import contextlib
import os
import socket
from pathlib import Path
from types import TracebackType

from tl_geom.errors import TlGeomError
from tl_geom.jobs.results import make_dir

__all__ = ["COMMAND_FILES", "LOCK_NAME", "OutLock", "check_out"]

LOCK_NAME = ".tl_geom.lock"
COMMAND_FILES = {
    "analyze": frozenset(
        {"metrics.csv", "heads.csv", "envelope.csv", "profiles.npy", "view.json", "run.json"}
        | {"inspect.npz", "report.html", "windows"}
    ),
    "sparsify": frozenset(
        {"sparsify.csv", "sparsify_heads.csv", "sparsify.json", "sparsify_report.html"}
    ),
}
"""What each command writes into ``--out`` (besides the lock and temporary files)."""


def check_out(out: Path, command: str) -> None:
    """Raise unless ``out`` is absent, empty, or holds only files of a ``command`` run.

    Leftover temporary files of a killed write (``.NAME.*.tmp``) and the lock are ignored.

    Raises:
        TlGeomError: ``out`` is a file, or holds other files (the first few are named).
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise TlGeomError(f"--out {out} is an existing file, not a directory; use another --out")
    try:
        names = {p.name for p in out.iterdir()}
    except OSError as exc:
        raise TlGeomError(f"cannot read --out {out}: {exc.strerror or exc}") from None
    names = {n for n in names if n != LOCK_NAME and not (n.startswith(".") and n.endswith(".tmp"))}
    foreign = sorted(names - COMMAND_FILES[command])
    if foreign:
        shown = ", ".join(foreign[:5]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        raise TlGeomError(
            f"--out {out} is not empty and not a tl-geom {command} run (it holds {shown}); "
            "use a new or empty directory"
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


class OutLock:
    """``out/.tl_geom.lock`` for the duration of a run (``acquire`` ... ``release``).

    The file is created with ``O_EXCL`` and holds ``pid host``. A lock whose process is
    gone (same host, pid not alive) is stale and taken over; a lock of a live process, or
    of another host, is an error. ``release`` removes the file only while it is ours.
    """

    def __init__(self, out: Path | None) -> None:
        self.path = out / LOCK_NAME if out is not None else None
        self.held = False
        self._mine = f"{os.getpid()} {socket.gethostname()}"

    def acquire(self) -> None:
        """Take the lock (creating ``out``); idempotent.

        Raises:
            TlGeomError: another live run holds it, or ``out`` cannot be written.
        """
        if self.path is None or self.held:
            return
        make_dir(self.path.parent)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_stale()
                continue
            except OSError as exc:
                raise TlGeomError(
                    f"cannot write to --out {self.path.parent}: {exc.strerror or exc}"
                ) from None
            with os.fdopen(fd, "w") as fh:
                fh.write(self._mine)
            self.held = True
            return
        raise TlGeomError(f"{self.path} was taken by another run just now; try again")

    def _take_over_stale(self) -> None:
        assert self.path is not None
        try:
            pid_text, _, host = self.path.read_text().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            pid, host = -1, ""  # empty or garbage: a run that died while writing it
        if pid > 0 and (host != socket.gethostname() or _alive(pid)):
            raise TlGeomError(
                f"--out {self.path.parent} is in use by another live run (pid {pid} on "
                f"{host or 'this host'}, lock file {self.path}); wait for it to finish or "
                "use another --out"
            )
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def release(self) -> None:
        """Remove the lock file if this process holds it."""
        if self.path is None or not self.held:
            return
        self.held = False
        with contextlib.suppress(OSError):
            if self.path.read_text() == self._mine:
                self.path.unlink()

    def __enter__(self) -> "OutLock":
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
