"""Scratch buffers kept between calls on the CPU (memory, not results).

The baseline's passes write ``[rows, draws, N, L]`` temporaries of a few MiB each.
Freshly allocated, each is first touched page by page: glibc hands such blocks back to
the OS when they are freed (its trim threshold follows the largest recent block), so
the next call faults the same pages in again. Measured at L = 1024 (one thread, 7.5 MiB
of float64): a comparison into a fresh tensor 4.4 ms, into a kept buffer 0.12 ms. The
buffers here live on, one per (slot, dtype) and thread, at the size of the largest
request: at most 8 MiB for each of the baseline's seven score-sized slots (its chunk bounds
them), ``[heads, L, d + 1]`` float64 for the value-sized ones (38 MiB at L = 8192), and
``[heads, rows, N, L]`` for an all-query chunk's four (47 MiB each at L = 1024, 64
rows).
``run_window`` drops them at the end of each window (:func:`release_scratch`).
Elsewhere (CUDA) the caching allocator already keeps freed blocks, so a plain
``torch.empty`` is returned.
"""

import threading

import torch
from torch import Tensor

__all__ = ["KEPT_BYTES", "release_scratch", "scratch"]

KEPT_BYTES = 512 * 2**20
"""At most this many bytes kept per thread: a request that would exceed it gets a fresh
tensor (and pays its page faults), so a notebook that calls the math on long inputs
does not hold gigabytes afterwards. 512 MiB holds every slot of a final-query window at
L = 8192 and of an all-query chunk at L = 1024 (four of 47 MiB)."""

_local = threading.local()


def scratch(slot: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """An uninitialised ``shape`` tensor from the kept buffer ``slot``.

    Two calls with the same slot (in one thread) share memory: a caller uses one slot
    per temporary that must outlive the others. Thread-local, so concurrent analyses in
    threads do not share buffers. Kept until :func:`release_scratch` (``run_window``
    calls it after each window), within :data:`KEPT_BYTES` per thread.
    """
    if device.type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    numel = 1
    for s in shape:
        numel *= int(s)
    bufs: dict[tuple[str, torch.dtype], Tensor] = _local.__dict__.setdefault("bufs", {})
    buf = bufs.get((slot, dtype))
    if buf is None or buf.numel() < numel:
        others = sum(b.nbytes for key, b in bufs.items() if key != (slot, dtype))
        buf = torch.empty(numel, dtype=dtype)
        if others + buf.nbytes > KEPT_BYTES:
            return buf.view(shape)  # not kept: over the cap
        bufs[(slot, dtype)] = buf
    return buf[:numel].view(shape)


def release_scratch() -> None:
    """Drop this thread's kept buffers (their memory returns at the next trim)."""
    _local.__dict__.pop("bufs", None)
