"""Input checks shared by the math layer: each failure is a TlGeomError naming the problem.

The public functions carry jaxtyping shape annotations, which the test suite enforces
with beartype at call time. Users' code runs without that instrumentation, so every
public math function calls these checks itself: a bad input is always a clear
error, never a silent wrong number.
"""

import math
from collections.abc import Sequence
from numbers import Integral, Real

import torch
from torch import Tensor

from tl_geom.errors import TlGeomError

__all__ = [
    "ROW_SUM_ATOL",
    "check_count",
    "check_finite",
    "check_n",
    "check_values",
    "check_weights",
    "row_sum_atol",
]

ROW_SUM_ATOL = 1e-3
"""Default tolerance on ``|sum(alpha) - 1|`` per row.

A float32 softmax row of length 8192 sums to 1 within about 1e-6; 1e-3 leaves room
for float16/bfloat16 patterns upcast before the call while still rejecting rows that
are not distributions (unnormalised scores, a masked row, a row of logits)."""


def row_sum_atol(dtype: torch.dtype, atol: float = ROW_SUM_ATOL) -> float:
    """The row-sum tolerance for weights computed in ``dtype``: ``max(atol, 4 eps)``.

    A softmax row rounded to a format with machine epsilon ``eps`` sums to 1 within
    ``eps / 2`` (each weight ``w_i`` is off by at most ``w_i eps / 2``); 4 eps leaves
    room for a softmax computed in that format [ours]. bfloat16: 0.03125, float16:
    0.0039, float32/float64: ``atol``.

    >>> row_sum_atol(torch.bfloat16), row_sum_atol(torch.float32)
    (0.03125, 0.001)
    """
    return max(atol, 4 * torch.finfo(dtype).eps) if dtype.is_floating_point else atol


def check_count(name: str, value: int) -> None:
    """Raise unless ``value`` is an int >= 1 (``draws``, ``chunk``, ``windows``, ...).

    >>> check_count("draws", 0)
    Traceback (most recent call last):
    tl_geom.errors.TlGeomError: draws must be an int >= 1, got 0
    """
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise TlGeomError(f"{name} must be an int >= 1, got {value!r}")


def check_finite(name: str, x: Tensor) -> None:
    """Raise if ``x`` holds NaN or inf, naming the argument and the count.

    A finite sum means every entry is finite (NaN and inf propagate through a sum), so
    one reduction clears the common case; the entrywise test (three passes over ``x``)
    runs only when the sum is not finite: a bad entry, or a sum that overflowed.
    """
    if x.numel() == 0 or bool(torch.isfinite(x.sum())):
        return
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        raise TlGeomError(
            f"{name} holds {int(bad.sum())} NaN/inf entries of {x.numel()}; "
            "pass finite tensors (cast the pattern to float32 before a bf16 overflow?)"
        )


def check_weights(
    alpha: Tensor, *, key_mask: Tensor | None = None, atol: float = ROW_SUM_ATOL
) -> None:
    """Check attention weights: floating, finite, non-negative, rows summing to 1.

    Args:
        alpha: ``[..., key]`` weights.
        key_mask: optional boolean ``[..., key]`` (broadcastable) marking the keys
            that exist for each row; rows are checked over those keys only.
        atol: tolerance on ``|sum - 1|`` (see ``ROW_SUM_ATOL``); at least
            :func:`row_sum_atol` of ``alpha``'s dtype, so bfloat16/float16 softmax rows
            pass. NaN, inf or a negative ``atol`` is an error (it would disable the check).
    """
    if isinstance(atol, bool) or not isinstance(atol, Real) or not math.isfinite(atol) or atol < 0:
        raise TlGeomError(f"atol={atol!r}; pass a finite row-sum tolerance >= 0")
    if alpha.ndim < 1:
        raise TlGeomError("alpha must have a key dimension, got a 0-d tensor")
    if not alpha.is_floating_point():
        raise TlGeomError(f"alpha must be a floating tensor, got dtype {alpha.dtype}")
    tol = row_sum_atol(alpha.dtype, float(atol))
    check_finite("alpha", alpha)
    if alpha.numel() == 0:
        raise TlGeomError(f"alpha is empty (shape {tuple(alpha.shape)})")
    low = float(alpha.min())
    if low < 0:
        raise TlGeomError(f"alpha has negative weights (min {low:.3g}); weights must be >= 0")
    a = alpha.double() if key_mask is None else alpha.double() * key_mask
    sums = a.sum(-1)
    err = (sums - 1.0).abs()
    worst = float(err.max())
    if worst > tol:
        at = int(err.argmax())
        raise TlGeomError(
            f"alpha rows must sum to 1 within {tol:g} ({alpha.dtype} input); measured: the "
            f"worst row (flat index {at}) sums to {float(sums.flatten()[at]):.6g}, off by "
            f"{worst:.3g}. Softmax weights (hook_pattern rows) pass; scores or logits do not"
        )


def check_values(alpha: Tensor, values: Tensor) -> None:
    """Check that ``values`` is ``[..., key, d]`` with the leading dims of ``alpha``."""
    if not values.is_floating_point():
        raise TlGeomError(f"values must be a floating tensor, got dtype {values.dtype}")
    if values.ndim != alpha.ndim + 1 or values.shape[:-1] != alpha.shape:
        raise TlGeomError(
            f"shapes disagree: alpha {tuple(alpha.shape)} needs values "
            f"{(*alpha.shape, 'd')}, got {tuple(values.shape)}"
        )
    if values.shape[-1] < 1:
        raise TlGeomError("values have an empty feature dimension d = 0")
    check_finite("values", values)
    # g = 2<s_N, y_k> - ||y_k||^2 must not overflow float64: |v|^2 d well below its max.
    limit = math.sqrt(torch.finfo(torch.float64).max / (4 * values.shape[-1]))
    # max |v| from the extremes: no |v| temporary (a fresh one faults its pages in)
    big = float(torch.stack(torch.aminmax(values)).abs().amax()) if values.numel() else 0.0
    if big > limit:
        raise TlGeomError(
            f"values reach {big:.3g}; the squared distances overflow float64 beyond "
            f"{limit:.3g} (d={values.shape[-1]}); rescale the values"
        )


def check_n(n: int | Sequence[int], length: int) -> tuple[int, ...]:
    """Normalise ``n`` to a tuple and check ``1 <= n < L`` for each entry.

    Args:
        n: one N or a sequence of them.
        length: the number of keys L.

    Returns:
        The N values as a tuple of ints, in the order given.
    """
    raw = list(n) if isinstance(n, Sequence) else [n]
    if len(raw) == 0:
        raise TlGeomError("n is an empty list; give at least one N")
    ns: list[int] = []
    for k in raw:
        if isinstance(k, bool) or not isinstance(k, Integral):
            raise TlGeomError(f"n must be ints, got {k!r} of type {type(k).__name__}")
        ns.append(int(k))
    for k in ns:
        if not 1 <= k < length:
            raise TlGeomError(f"n={k} out of range 1..{length - 1} for L={length}")
    return tuple(ns)
