"""Kept scratch buffers: reuse within a slot, separation across slots and threads."""

import threading
from typing import Any

import torch

from tl_geom.geometry.baseline import random_counts, random_ranks
from tl_geom.geometry.scratch import release_scratch, scratch


def test_a_slot_is_reused_and_slots_do_not_share_memory() -> None:
    cpu = torch.device("cpu")
    a = scratch("a", (4, 8), torch.float64, cpu)
    again = scratch("a", (2, 3), torch.float64, cpu)
    other = scratch("b", (4, 8), torch.float64, cpu)
    assert again.data_ptr() == a.data_ptr()  # smaller request: the same memory
    assert other.data_ptr() != a.data_ptr()
    assert scratch("a", (4, 8), torch.float32, cpu).data_ptr() != a.data_ptr()
    bigger = scratch("a", (100,), torch.float64, cpu)  # grows: a new buffer
    assert bigger.shape == (100,) and bigger.is_contiguous()
    release_scratch()
    # dropped: a new buffer (``bigger`` is still alive, so its memory cannot come back)
    assert scratch("a", (1,), torch.float64, cpu).data_ptr() != bigger.data_ptr()


def test_threads_get_their_own_buffers() -> None:
    cpu = torch.device("cpu")
    here = scratch("t", (16,), torch.float64, cpu).data_ptr()
    seen: list[int] = []
    thread = threading.Thread(
        target=lambda: seen.append(scratch("t", (16,), torch.float64, cpu).data_ptr())
    )
    thread.start()
    thread.join()
    assert seen and seen[0] != here


def test_counts_do_not_depend_on_what_the_buffers_held() -> None:
    """The same baseline twice, with a larger and a smaller call between: equal counts
    (every kept buffer is fully written before it is read)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.softmax(torch.randn(3, 40, generator=gen, dtype=torch.float64), -1)
    v = torch.randn(3, 40, 5, generator=gen, dtype=torch.float64)
    rank = random_ranks((3,), 40, draws=4, seed=1)
    n = torch.tensor([1, 5, 20])
    first = random_counts(a, v, rank, n)
    big_a = torch.softmax(torch.randn(5, 90, generator=gen, dtype=torch.float64), -1)
    random_counts(
        big_a,
        torch.randn(5, 90, 7, generator=gen, dtype=torch.float64) * 1e3,
        random_ranks((5,), 90, draws=6, seed=2),
        torch.tensor([3, 60]),
    )
    random_counts(
        a[:1, :10], v[:1, :10], random_ranks((1,), 10, draws=4, seed=3), torch.tensor([2])
    )
    for x, y in zip(random_counts(a, v, rank, n), first, strict=True):
        assert torch.equal(x, y)


def test_requests_over_the_cap_are_not_kept(monkeypatch: Any) -> None:
    from tl_geom.geometry import scratch as module

    cpu = torch.device("cpu")
    release_scratch()
    monkeypatch.setattr(module, "KEPT_BYTES", 1000)
    small = scratch("s", (50,), torch.float64, cpu)  # 400 bytes: kept
    assert scratch("s", (50,), torch.float64, cpu).data_ptr() == small.data_ptr()
    big = scratch("b", (100,), torch.float64, cpu)  # 400 + 800 > 1000: fresh, not kept
    assert big.shape == (100,)
    assert scratch("b", (100,), torch.float64, cpu).data_ptr() != big.data_ptr()
    release_scratch()
