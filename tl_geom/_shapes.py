"""Leading dimensions in and out of the math layer: the one unpack of per-N results.

The math functions flatten their leading dims with ``einops.pack(..., "* key")``,
compute ``[rows, N, ...]`` results and give them back with :func:`unpack_n`.
"""

import einops
from einops.packing import Shape
from torch import Tensor

__all__ = ["Shape", "unpack_n"]


def unpack_n(x: Tensor, packed: list[Shape], scalar: bool, tail: str = "") -> Tensor:
    """``[rows, N, *tail]`` back to ``[*lead, N, *tail]``, or ``[*lead, *tail]`` for a scalar N.

    >>> import torch
    >>> x, packed = einops.pack([torch.zeros(2, 3, 5)], "* key")
    >>> unpack_n(torch.ones(6, 1), packed, scalar=True).shape
    torch.Size([2, 3])
    """
    (x,) = einops.unpack(x, packed, f"* nn {tail}".strip())
    if not scalar:
        return x
    return x[..., 0, :] if tail else x[..., 0]
