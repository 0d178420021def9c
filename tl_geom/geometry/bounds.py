"""Provable bounds on top-N separability (spec: geometry.md, "Bounds").

Three statements, from strongest to weakest assumptions about the values:

1. Exact criterion (no assumption): with ``g_k = 2<s_N, y_k> - ||y_k||^2``,
   ``P = R = 1  iff  min_{i in I_N} g_i > max_{j not in I_N} g_j``.
2. Deterministic certificate from weights and three value statistics
   (``b <= ||v_k|| <= B``, ``|cos(v_i, v_k)| <= c``): :func:`certificate`.
3. Probabilistic envelope under a random-direction model: :func:`failure_envelope`.

The expected P/R curves under a fitted assumption model live in ``simulation.py``.
The paper's constants were not recoverable; every bound here is derived in its
docstring and checked numerically in ``tests/test_bounds.py`` [ours].
"""

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from tl_geom._checks import ROW_SUM_ATOL, check_count, check_n, check_values, check_weights
from tl_geom._shapes import Shape, unpack_n
from tl_geom.errors import TlGeomError
from tl_geom.geometry.top_n import g_scores, separability, top_n_rank

__all__ = [
    "Certificate",
    "Envelope",
    "certificate",
    "certificate_from_values",
    "failure_envelope",
    "separation_gap",
]

CERT_RTOL = 1e-9
"""Floating-point guard [ours]: certify only if ``lower - upper > CERT_RTOL * A_N^2 B^2``
(``A_N^2 B^2`` bounds every ``|g|``), so rounding in float64 never certifies a tie."""


@dataclass(frozen=True)
class Certificate:
    """Deterministic separation certificate; shapes ``[...]`` or ``[..., len(n)]``.

    Attributes:
        lower: ``min_{i in I_N} (alpha_i^2 b^2 - 2 alpha_i B^2 c (A_N - alpha_i))``.
        upper: ``max_{j not in I_N} (2 alpha_j B^2 c A_N - alpha_j^2 b^2)``.
        certified: ``lower > upper`` (with the ``CERT_RTOL`` guard): P = R = 1 is proved.
        c_star: the critical cosine, certified iff ``c < c_star`` (up to the guard).
        b: norm lower bound used.  B: norm upper bound used.  c: cosine bound used.
    """

    lower: Tensor
    upper: Tensor
    certified: Tensor
    c_star: Tensor
    b: Tensor
    B: Tensor
    c: Tensor


@dataclass(frozen=True)
class Envelope:
    """Random-direction failure envelope; shapes ``[...]`` or ``[..., len(n)]``.

    Attributes:
        bound: upper bound on ``1 - P(perfect separation)``, clipped to ``[0, 1]``.
        c_star: the margin ``gamma`` in the exponent (critical cosine of the certificate).
        pairs: ``N (L - N)``, the number of (selected, non-selected) pairs.
        kappa: the constant in ``exp(-kappa d gamma^2)`` (1/2).
    """

    bound: Tensor
    c_star: Tensor
    pairs: Tensor
    kappa: float


def _prep(
    alpha: Tensor, n: int | Sequence[int], atol: float
) -> tuple[Tensor, list[Shape], tuple[int, ...], bool]:
    check_weights(alpha, atol=atol)
    ns = check_n(n, alpha.shape[-1])
    a, packed = einops.pack([alpha.double()], "* key")
    return a, packed, ns, isinstance(n, Integral)


def _stat(name: str, x: float | Tensor, lead: tuple[int, ...]) -> Tensor:
    """A per-row statistic as float64 ``[rows, 1]``, broadcast from a float or ``[*lead]``."""
    t = torch.as_tensor(x, dtype=torch.float64)
    try:
        t = torch.broadcast_to(t, lead)
    except RuntimeError:
        raise TlGeomError(
            f"{name} of shape {tuple(t.shape)} does not broadcast to the leading dims {lead}"
        ) from None
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise TlGeomError(f"{name} must be finite and >= 0")
    return t.reshape(-1, 1)


def separation_gap(
    alpha: Float[Tensor, "*lead key"],
    values: Float[Tensor, "*lead key d"],
    n: int | Sequence[int],
    *,
    atol: float = ROW_SUM_ATOL,
) -> Tensor:
    """Exact criterion: ``gap_N = min_{i in I_N} g_i - max_{j not in I_N} g_j``.

    ``D_k^2 = ||s_N||^2 - g_k``, so ``r_min > r_max`` (P = R = 1) iff ``gap_N > 0``.
    Computed in float64. Spec: geometry.md, "Bounds".

    Returns:
        ``[...]`` for an int ``n``, ``[..., len(n)]`` for a list; perfect iff ``> 0``.

    >>> alpha = torch.tensor([0.5, 0.3, 0.1, 0.1])
    >>> values = torch.eye(4)
    >>> (separation_gap(alpha, values, [1, 2]) > 0).tolist()
    [True, True]
    """
    res = separability(alpha, values, n, atol=atol)
    scalar = isinstance(n, Integral)
    # Same s, y and g_scores call as separability, so the sign of the gap agrees bit for bit.
    a, packed = einops.pack([alpha.double()], "* key")
    v, _ = einops.pack([values.double()], "* key d")
    tail_s, tail_k = ("d", "key") if scalar else ("nn d", "nn key")
    s, _ = einops.pack([res.s.double()], f"* {tail_s}")
    selected, _ = einops.pack([res.selected], f"* {tail_k}")
    if scalar:
        s, selected = s.unsqueeze(1), selected.unsqueeze(1)
    g = g_scores(s, a.unsqueeze(-1) * v)
    inf = torch.tensor(float("inf"), dtype=g.dtype)
    gap = torch.where(selected, g, inf).amin(-1) - torch.where(~selected, g, -inf).amax(-1)
    return unpack_n(gap, packed, scalar)


def _sorted_terms(a: Tensor, ns: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """Weights sorted descending ``[rows, L]``, ``A_N`` ``[rows, nn, 1]``, selected-rank mask."""
    a_sorted = torch.sort(a, dim=-1, descending=True).values
    n_t = torch.tensor(ns, device=a.device)
    big_a = a_sorted.cumsum(-1)[:, n_t - 1].unsqueeze(-1)
    sel = torch.arange(a.shape[-1], device=a.device).view(1, 1, -1) < n_t.view(1, -1, 1)
    return a_sorted, big_a, sel


def _c_star(a_sorted: Tensor, big_a: Tensor, sel: Tensor, b: Tensor, big_b: Tensor) -> Tensor:
    """``min_{i in I, j not in I} b^2 (a_i^2 + a_j^2) / (2 B^2 (a_i (A - a_i) + a_j A))``.

    For fixed ``i`` the ratio ``h(x) = (a_i^2 + x^2) / (q + A x)``, ``q = a_i (A - a_i)``,
    is decreasing then increasing on ``x >= 0`` (``h'`` has the sign of
    ``A x^2 + 2 q x - A a_i^2``, whose roots have opposite signs), with its minimum at
    ``x0 = (sqrt(q^2 + A^2 a_i^2) - q) / A``. So the minimum over the non-selected
    weights is at one of the two weights bracketing ``x0``: a searchsorted, not an
    ``N x (L - N)`` grid.
    """
    rows, length = a_sorted.shape
    nn = sel.shape[1]
    n_rest = (~sel).sum(-1, keepdim=True)  # L - N, [1, nn, 1]
    ai = a_sorted.unsqueeze(1).expand(rows, nn, length)  # candidate selected weights
    q = ai * (big_a - ai)
    x0 = ((q * q + big_a**2 * ai**2).sqrt() - q) / big_a
    asc = a_sorted.flip(-1).unsqueeze(1).expand(rows, nn, length).contiguous()
    idx = torch.searchsorted(asc, x0.contiguous())
    best = torch.full_like(ai, float("inf"))
    for cand in (idx - 1, idx):
        # ascending positions 0..L-N-1 are exactly the non-selected weights
        xj = torch.gather(asc, -1, torch.minimum(cand.clamp_min(0), n_rest - 1))
        num = ai**2 + xj**2
        den = q + big_a * xj
        inf = torch.full_like(num, float("inf"))
        h = torch.where(den > 0, num / den.clamp_min(1e-300), torch.where(num > 0, inf, 0 * num))
        best = torch.minimum(best, h)
    best = torch.where(sel, best, torch.full_like(best, float("inf"))).amin(-1)
    scale = (b / big_b.clamp_min(1e-300)) ** 2 / 2
    return torch.where(scale > 0, scale * best, torch.zeros_like(best))


def _certify(
    a: Tensor, ns: tuple[int, ...], b: Tensor, big_b: Tensor, c: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    a_sorted, big_a, sel = _sorted_terms(a, ns)
    ai = a_sorted.unsqueeze(1)
    b3, big_b3, c3 = b.unsqueeze(-1), big_b.unsqueeze(-1), c.unsqueeze(-1)
    low = ai**2 * b3**2 - 2 * ai * big_b3**2 * c3 * (big_a - ai)
    up = 2 * ai * big_b3**2 * c3 * big_a - ai**2 * b3**2
    inf = torch.tensor(float("inf"), dtype=a.dtype)
    lower = torch.where(sel, low, inf).amin(-1)
    upper = torch.where(~sel, up, -inf).amax(-1)
    guard = CERT_RTOL * (big_a.squeeze(-1) * big_b) ** 2
    certified = lower - upper > guard
    return lower, upper, certified, _c_star(a_sorted, big_a, sel, b, big_b)


def certificate(
    alpha: Float[Tensor, "*lead key"],
    n: int | Sequence[int],
    *,
    b: float | Tensor,
    B: float | Tensor,
    c: float | Tensor,
    atol: float = ROW_SUM_ATOL,
) -> Certificate:
    """Certify P = R = 1 from the weights and bounds ``b <= ||v_k|| <= B``, ``|cos| <= c``.

    Derivation (spec: geometry.md, "Bounds"). With ``s = sum_{k in I} alpha_k v_k`` and
    ``g_k = 2<s, y_k> - ||y_k||^2``:
      selected i:  ``g_i = alpha_i^2 ||v_i||^2 + 2 alpha_i sum_{k in I, k != i} alpha_k <v_i, v_k>``
                   ``>= alpha_i^2 b^2 - 2 alpha_i B^2 c (A_N - alpha_i)``,
      other j:     ``g_j = 2 alpha_j sum_{k in I} alpha_k <v_j, v_k> - alpha_j^2 ||v_j||^2``
                   ``<= 2 alpha_j B^2 c A_N - alpha_j^2 b^2``,
    using ``|<v_i, v_k>| <= B^2 c`` and ``A_N = sum_{I_N} alpha``. If the smallest
    lower bound exceeds the largest upper bound, ``min_I g > max_{not I} g``: perfect.
    Pairwise, that is ``c < c_ij = b^2 (alpha_i^2 + alpha_j^2) / (2 B^2 (alpha_i (A_N -
    alpha_i) + alpha_j A_N))`` for all pairs; ``c_star = min c_ij``. The cosine bound
    is only needed for pairs with at least one selected key.

    Args:
        alpha: weights ``[..., L]``.
        n: one N or a list.
        b: lower bound on every ``||v_k||`` (float or ``[...]``).
        B: upper bound on every ``||v_k||`` (float or ``[...]``), ``B >= b``.
        c: bound on ``|cos(v_i, v_k)|`` for pairs with a selected key: a float, or a
            tensor broadcastable to the result shape ``[...]`` / ``[..., len(n)]``.
        atol: tolerance on row sums.

    Returns:
        A :class:`Certificate`.

    Raises:
        TlGeomError: bad weights or N, negative or non-finite statistics, ``b > B``.

    >>> alpha = torch.tensor([0.5, 0.3, 0.1, 0.1])
    >>> certificate(alpha, [1, 2], b=1.0, B=1.0, c=0.05).certified.tolist()
    [True, True]
    >>> certificate(alpha, [1, 2], b=1.0, B=1.0, c=0.5).certified.tolist()
    [True, False]
    """
    a, packed, ns, scalar = _prep(alpha, n, atol)
    lead = tuple(alpha.shape[:-1])
    bt, big_bt = _stat("b", b, lead), _stat("B", B, lead)
    if bool((bt > big_bt).any()):
        raise TlGeomError("b must be <= B (b bounds the norms from below, B from above)")
    ct = torch.as_tensor(c, dtype=torch.float64)
    shape = lead if scalar else (*lead, len(ns))
    try:
        ct = torch.broadcast_to(ct, shape).reshape(a.shape[0], len(ns))
    except RuntimeError:
        raise TlGeomError(f"c of shape {tuple(ct.shape)} does not broadcast to {shape}") from None
    if not bool(torch.isfinite(ct).all()) or bool((ct < 0).any()):
        raise TlGeomError("c must be finite and >= 0")
    lower, upper, cert, cs = _certify(a, ns, bt, big_bt, ct)
    nn = len(ns)
    return Certificate(
        *(unpack_n(x, packed, scalar) for x in (lower, upper, cert, cs)),
        b=unpack_n(bt.expand(-1, nn), packed, scalar),
        B=unpack_n(big_bt.expand(-1, nn), packed, scalar),
        c=unpack_n(ct, packed, scalar),
    )


def certificate_from_values(
    alpha: Float[Tensor, "*lead key"],
    values: Float[Tensor, "*lead key d"],
    n: int | Sequence[int],
    *,
    atol: float = ROW_SUM_ATOL,
) -> Certificate:
    """:func:`certificate` with ``b``, ``B``, ``c`` measured on ``values``.

    ``b = min_k ||v_k||``, ``B = max_k ||v_k||`` over all keys, and for each N
    ``c = max |cos(v_a, v_k)|`` over ``k in I_N``, ``a != k`` (cosine with a zero vector
    taken as 0, which bounds ``|<v_a, v_k>| = 0``). Cost ``O(L max(n) d)`` per row.
    The result depends on the values only through these three numbers.
    """
    a, packed, ns, scalar = _prep(alpha, n, atol)
    check_values(alpha, values)
    v, _ = einops.pack([values.double()], "* key d")
    norms = v.norm(dim=-1)
    u = v / norms.clamp_min(1e-300).unsqueeze(-1)
    top = torch.argsort(top_n_rank(a), dim=-1)[:, : max(ns)]
    u_top = torch.gather(u, 1, einops.repeat(top, "b r -> b r d", d=v.shape[-1]))
    cos = torch.einsum("bkd,brd->bkr", u, u_top).abs()
    keys = torch.arange(a.shape[-1], device=a.device)
    cos = cos.masked_fill(keys.view(1, -1, 1) == top.unsqueeze(1), 0.0)
    c = cos.amax(1).cummax(-1).values[:, torch.tensor(ns, device=a.device) - 1]
    b, big_b = norms.amin(-1, keepdim=True), norms.amax(-1, keepdim=True)
    lower, upper, cert, cs = _certify(a, ns, b, big_b, c)
    nn = len(ns)
    return Certificate(
        *(unpack_n(x, packed, scalar) for x in (lower, upper, cert, cs)),
        b=unpack_n(b.expand(-1, nn), packed, scalar),
        B=unpack_n(big_b.expand(-1, nn), packed, scalar),
        c=unpack_n(c, packed, scalar),
    )


def failure_envelope(
    alpha: Float[Tensor, "*lead key"],
    n: int | Sequence[int],
    *,
    d: int,
    b: float | Tensor,
    B: float | Tensor,
    atol: float = ROW_SUM_ATOL,
) -> Envelope:
    r"""``1 - P(perfect) <= min(1, 2 N (L - N) exp(-kappa d gamma^2))``, ``kappa = 1/2``.

    Model: ``v_k = r_k u_k`` with directions ``u_k`` i.i.d. uniform on ``S^{d-1}``,
    independent of the norms ``r_k in [b, B]`` (norms otherwise arbitrary); weights fixed.
    ``gamma = c_star`` of :func:`certificate`: the dimensionless margin
    ``min_{i in I, j not in I} b^2 (alpha_i^2 + alpha_j^2) / (2 B^2 (alpha_i (A_N - alpha_i)
    + alpha_j A_N))``. The weight gap ``Delta_N`` does not control this model (tied
    weights separate with high probability when d is large), so it is not used [ours].

    Derivation. Fact (Ball 1997, Lemma 2.2): for ``u`` uniform on ``S^{d-1}`` and a
    fixed unit ``e``, ``P(<u, e> >= t) <= exp(-d t^2 / 2)``; by symmetry the same for
    ``<= -t``. Failure is ``g_i <= g_j`` for some pair ``i in I``, ``j not in I``, so
    ``P(fail) <= sum_{pairs} P(g_i - g_j <= 0)``. Write ``S = sum_{k in I} alpha_k r_k u_k``
    and ``S_i = S - alpha_i r_i u_i``; then
      ``g_i - g_j = D + T1 + T2``,
      ``D = alpha_i^2 r_i^2 + alpha_j^2 r_j^2 >= b^2 (alpha_i^2 + alpha_j^2)``,
      ``T1 = 2 alpha_i r_i <u_i, S_i>``,  ``T2 = -2 alpha_j r_j <u_j, S>``.
    Given the norms and ``u_k, k in I \ {i}``, ``u_i`` is uniform and independent of
    ``S_i``, ``||S_i|| <= B (A_N - alpha_i)``: ``P(T1 <= -t) <= exp(-d t^2 / (2 s1^2))``,
    ``s1 = 2 alpha_i B^2 (A_N - alpha_i)``. Given everything but ``u_j`` (``j`` is not
    in ``I``, so ``u_j`` is independent of ``S``), ``||S|| <= B A_N``:
    ``P(T2 <= -t) <= exp(-d t^2 / (2 s2^2))``, ``s2 = 2 alpha_j B^2 A_N``. For any split
    ``D = t1 + t2``, ``P(T1 + T2 <= -D) <= P(T1 <= -t1) + P(T2 <= -t2)``; with
    ``t1 = D s1 / (s1 + s2)`` both exponents equal ``d D^2 / (2 (s1 + s2)^2)``, and
    ``D / (s1 + s2) >= c_ij``. Hence ``P(g_i <= g_j) <= 2 exp(-d c_ij^2 / 2)`` and the sum
    over ``N (L - N)`` pairs gives the bound. It is the certificate's margin because
    ``g_i - g_j`` is exactly the pairwise certificate inequality with the cosines random.

    Args:
        alpha: weights ``[..., L]``.
        n: one N or a list.
        d: value dimension (``d_head``), ``>= 1``.
        b: lower bound on the value norms (float or ``[...]``).
        B: upper bound on the value norms (float or ``[...]``), ``B >= b``.
        atol: tolerance on row sums.

    Returns:
        An :class:`Envelope`.

    >>> alpha = torch.full((8,), 1 / 8)
    >>> round(float(failure_envelope(alpha, 2, d=128, b=1.0, B=1.0).bound), 4)
    0.0196
    """
    check_count("d", d)
    cert = certificate(alpha, n, b=b, B=B, c=0.0, atol=atol)
    ns = check_n(n, alpha.shape[-1])
    length = alpha.shape[-1]
    pairs = torch.tensor([k * (length - k) for k in ns], dtype=torch.float64, device=alpha.device)
    if isinstance(n, Integral):
        pairs = pairs[0]
    gamma = cert.c_star
    bound = (2 * pairs * torch.exp(-0.5 * d * gamma**2)).clamp(0.0, 1.0)
    return Envelope(bound=bound, c_star=gamma, pairs=pairs.expand_as(bound), kappa=0.5)
