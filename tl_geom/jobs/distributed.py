"""Windows split across the ranks of a ``torchrun`` job (``torch.distributed``).

``torchrun --nproc-per-node K -m tl_geom analyze ...`` starts K processes with ``RANK``
and ``WORLD_SIZE`` set; :func:`join` opens the process group (gloo on CPU, nccl on
CUDA) unless the caller already did. Rank r runs the windows ``w`` with
``w % K == r`` and writes each atomically to the shared ``--out`` directory, exactly as
a single process would; after a barrier every rank reads all windows back and rank 0
writes the tables. So the tables are those of a one-process run, and ``--resume``
works across ranks (a window file is a window done, whichever rank made it). No
process pool of our own: torchrun launches, torch.distributed synchronises.
"""

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from tl_geom.errors import TlGeomError

__all__ = ["Ranks", "join"]


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job: ``rank`` of ``world`` (0 of 1 when alone).

    Attributes:
        rank: this process's rank.
        world: number of processes.
        owned: whether :func:`join` opened the process group (and :meth:`leave` closes it).
    """

    rank: int = 0
    world: int = 1
    owned: bool = False

    def mine(self, windows: list[int]) -> list[int]:
        """The windows this rank runs: ``w % world == rank``."""
        return [w for w in windows if w % self.world == self.rank]

    def barrier(self) -> None:
        """Wait for every rank (a no-op when alone)."""
        if self.world > 1:
            dist.barrier()

    def agree(self, what: str, value: Any) -> None:
        """Raise on every rank unless all ranks hold the same ``value`` (e.g. the arguments)."""
        if self.world == 1:
            return
        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, value)
        differ = [r for r, v in enumerate(values) if v != values[0]]
        if differ:
            raise TlGeomError(
                f"the ranks of this torchrun job disagree on {what}: rank(s) {differ} differ "
                "from rank 0; start every rank with the same arguments"
            )

    def from_rank0(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (e.g. an error only rank 0 could detect)."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def leave(self) -> None:
        """Close the process group if :func:`join` opened it."""
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()


def join(device: torch.device | str = "cpu") -> Ranks:
    """This process's :class:`Ranks`; opens the process group under torchrun if needed.

    Alone (no ``WORLD_SIZE`` above 1 and no group open): rank 0 of 1. Under torchrun:
    gloo for a CPU model, nccl for a CUDA one.
    """
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), owned=False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    if not dist.is_available():
        raise TlGeomError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return Ranks(dist.get_rank(), dist.get_world_size(), owned=True)
