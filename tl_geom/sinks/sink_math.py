"""Attention-sink measures as batched tensor math (spec: sinks.md, "Measures").

No TransformerLens here: each function takes the tensors a hook would see and is
vectorised over any leading dims (batch, layer, head). ``tl_geom.sinks.measures`` runs a model
and feeds them in. Everything is computed in float64.

    imp(k)     = sum_i A[i, k] / (T - k)            causal (encoders: / T  [ours])
    sink rate  = mean over (layer, head) of 1[imp(0) > eps],  eps = 0.3
    DomRatio   = max_d |h_d| / mean_d |h_d|
    var(o)     = mean_d (o_d - mean_d o)^2           per head output vector
    tau_b      = Kendall's tau-b (ties corrected)
    c_n        = act[n] * W_down[dim, n]             super-neuron attribution
    lock-in    = share of queries with q_i . k_0 > 0
    erank(X)   = exp(-sum_j p_j log p_j),  p_j = sigma_j / sum sigma   (Roy & Vetterli)
"""

from dataclasses import dataclass

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from tl_geom._checks import check_finite
from tl_geom.errors import TlGeomError

__all__ = [
    "LockIn",
    "MassiveTop",
    "dom_ratio",
    "effective_rank",
    "first_key_importance",
    "kendall_tau",
    "massive_activations",
    "neuron_contributions",
    "qk_lock_in",
    "sink_importance",
    "sink_rate",
    "variance_over_dims",
]


def _floating(name: str, x: Tensor, min_ndim: int) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < min_ndim:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise TlGeomError(
            f"{name} must be a floating tensor with at least {min_ndim} dims, got {shape}"
        )
    if x.numel() == 0:
        raise TlGeomError(f"{name} is empty (shape {tuple(x.shape)})")
    check_finite(name, x)
    return x.double()


def sink_importance(
    pattern: Float[Tensor, "*lead query key"], *, causal: bool = True
) -> Float[Tensor, "*lead key"]:
    """Mean attention each key receives from the queries that can see it.

    Causal: ``imp(k) = sum_{i >= k} A[i, k] / (T - k)``; the pattern must be square.
    Encoder (``causal=False``): every query sees every key, ``imp(k) = sum_i A[i, k] / T``
    [ours: the same "mean over the queries that see k"]. Spec: sinks.md, "Measures".

    >>> a = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.25, 0.25]])
    >>> sink_importance(a).tolist()
    [0.6666666666666666, 0.375, 0.25]
    """
    a = _floating("pattern", pattern, 2)
    n_query, n_key = a.shape[-2:]
    if causal and n_query != n_key:
        raise TlGeomError(
            f"a causal pattern must be square [.., T, T], got query={n_query}, key={n_key}; "
            "pass every query row (queries=None) or causal=False"
        )
    counts = (
        torch.arange(n_key, 0, -1, dtype=torch.float64, device=a.device)
        if causal
        else torch.full((n_key,), float(n_query), dtype=torch.float64, device=a.device)
    )
    return a.sum(-2) / counts


def first_key_importance(rows: Float[Tensor, "*lead query key"]) -> Float[Tensor, "*lead"]:
    """``imp(0) = mean_{i < T} A[i, 0]`` from the first T query rows of a pattern.

    For a causal model this is exactly :func:`sink_importance` at key 0 of the T-token
    prefix (every row sees key 0, and a row does not depend on later tokens), so it
    needs only those T rows, not the square pattern; for an encoder it is the mean over
    the T rows of their weight on position 0 [ours]. Spec: sinks.md, "Measures".

    >>> first_key_importance(torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])).item()
    0.75
    """
    return _floating("rows", rows, 2)[..., 0].double().mean(-1)


def sink_rate(imp0: Float[Tensor, "*lead layer head"], *, eps: float = 0.3) -> Tensor:
    """Share of (layer, head) pairs whose sink importance exceeds ``eps``: ``[...]``.

    ``rate = mean_{l, h} 1[imp_{l,h}(0) > eps]``; ``eps = 0.3`` by default (Gu et al.).
    Average the result over samples for the standard protocol (T = 64, 100 samples).

    >>> sink_rate(torch.tensor([[0.9, 0.1], [0.31, 0.2]])).item()
    0.5
    """
    x = _floating("imp0", imp0, 2)
    if not 0 < eps < 1:
        raise TlGeomError(f"eps={eps} out of range (0, 1)")
    return (x > eps).double().mean((-2, -1))


@dataclass(frozen=True)
class MassiveTop:
    """The largest hidden-state magnitudes per leading index. Shapes ``[..., top]`` / ``[...]``.

    Attributes:
        values: the top ``|x|``, descending.
        positions, dims: where they sit (token position, hidden dimension).
        median: median ``|x|`` over all positions and dims, ``[...]``.
        ratio: ``values / median``.
        massive: ``values > abs_min`` and ``ratio > ratio_min``.
    """

    values: Tensor
    positions: Tensor
    dims: Tensor
    median: Tensor
    ratio: Tensor
    massive: Tensor
    abs_min: float
    ratio_min: float


def massive_activations(
    hidden: Float[Tensor, "*lead pos d"],
    *,
    top: int = 3,
    abs_min: float = 100.0,
    ratio_min: float = 1000.0,
) -> MassiveTop:
    """Top-``top`` magnitudes of a hidden state vs its median (Sun et al., "Massive activations").

    Over all ``pos x d`` entries: the ``top`` largest ``|x|`` (ties: the earlier position,
    then the earlier dim [ours]), their (position, dim), the median ``|x|`` (the lower
    middle value for an even count, as ``torch.median``), and ``massive = |x| > abs_min
    and |x| / median > ratio_min`` (the spec's "> 100 and about 1000x the median").

    >>> r = massive_activations(torch.tensor([[1.0, -300.0], [2.0, 1.0]]), top=1, ratio_min=99.0)
    >>> r.values.tolist(), r.positions.tolist(), r.dims.tolist(), r.median.item(), bool(r.massive)
    ([300.0], [0], [1], 1.0, True)
    """
    x = _floating("hidden", hidden, 2)
    n_pos, d = x.shape[-2:]
    if not 1 <= top <= n_pos * d:
        raise TlGeomError(f"top={top} out of range 1..{n_pos * d} for {n_pos} x {d} entries")
    flat, packed = einops.pack([x.abs()], "* pos d")
    flat = flat.reshape(flat.shape[0], -1)
    order = torch.sort(flat, dim=-1, descending=True, stable=True).indices[:, :top]
    vals = flat.gather(-1, order)
    median = flat.median(-1).values
    ratio = vals / median.unsqueeze(-1).clamp_min(1e-300)
    (vals, ratio, order) = (einops.unpack(t, packed, "* top")[0] for t in (vals, ratio, order))
    (median,) = einops.unpack(median, packed, "*")
    massive = (vals > abs_min) & (ratio > ratio_min)
    return MassiveTop(vals, order // d, order % d, median, ratio, massive, abs_min, ratio_min)


def dom_ratio(hidden: Float[Tensor, "*lead d"]) -> Float[Tensor, "*lead"]:
    """Dimension disparity ``DomRatio = max_d |h_d| / mean_d |h_d|`` (nan for a zero vector).

    >>> dom_ratio(torch.tensor([4.0, 0.0, 0.0, 0.0])).item()
    4.0
    """
    a = _floating("hidden", hidden, 1).abs()
    mean = a.mean(-1)
    return torch.where(mean > 0, a.amax(-1) / mean.clamp_min(1e-300), float("nan"))


def variance_over_dims(out: Float[Tensor, "*lead d"]) -> Float[Tensor, "*lead"]:
    """Population variance of one output vector over its dims, ``mean_d (o_d - mu)^2``.

    ``mu = mean_d o_d``: the quantity ``amplify_variance`` scales by ``lam^2``.

    >>> variance_over_dims(torch.tensor([1.0, 3.0])).item()
    1.0
    """
    return _floating("out", out, 1).var(-1, unbiased=False)


def kendall_tau(x: Float[Tensor, "*lead n"], y: Float[Tensor, "*lead n"]) -> Float[Tensor, "*lead"]:
    """Kendall's tau-b over the last dim: ``(C - D) / sqrt((n0 - t_x)(n0 - t_y))``.

    ``C``/``D`` concordant/discordant pairs, ``n0 = n(n-1)/2``, ``t_x``/``t_y`` pairs
    tied in x/y (as ``scipy.stats.kendalltau``). O(n^2) pairs; nan if x or y is constant.

    >>> kendall_tau(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 3.0, 2.0])).item()
    0.3333333333333333
    """
    a, b = _floating("x", x, 1), _floating("y", y, 1)
    if a.shape != b.shape or a.shape[-1] < 2:
        raise TlGeomError(
            f"x and y must have equal shapes with n >= 2, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    sx = torch.sign(a.unsqueeze(-1) - a.unsqueeze(-2))
    sy = torch.sign(b.unsqueeze(-1) - b.unsqueeze(-2))
    upper = torch.triu(torch.ones(a.shape[-1], a.shape[-1], dtype=torch.bool, device=a.device), 1)
    s = (sx * sy)[..., upper].sum(-1)
    nx = (sx != 0)[..., upper].double().sum(-1)
    ny = (sy != 0)[..., upper].double().sum(-1)
    den = (nx * ny).sqrt()
    return torch.where(den > 0, s / den.clamp_min(1e-300), float("nan"))


def neuron_contributions(
    act: Float[Tensor, "*lead neuron"], w_out: Float[Tensor, "neuron d_model"], dim: int
) -> Float[Tensor, "*lead neuron"]:
    """Super-neuron attribution ``c_n = act[n] * W_down[dim, n]`` (TL layout ``W_out[n, dim]``).

    ``sum_n c_n + b_out[dim]`` is the MLP's write to ``dim``.

    >>> neuron_contributions(torch.tensor([2.0, -1.0]), torch.tensor([[1.0, 3.0], [4.0, 5.0]]), 1)
    tensor([ 6., -5.], dtype=torch.float64)
    """
    a, w = _floating("act", act, 1), _floating("w_out", w_out, 2)
    if w.ndim != 2 or w.shape[0] != a.shape[-1]:
        raise TlGeomError(
            f"w_out must be [neuron={a.shape[-1]}, d_model], got {tuple(w_out.shape)}"
        )
    if not 0 <= dim < w.shape[1]:
        raise TlGeomError(f"dim={dim} out of range 0..{w.shape[1] - 1}")
    return a * w[:, dim]


@dataclass(frozen=True)
class LockIn:
    """QK lock-in per head. Shapes ``[...]``.

    Attributes:
        positive_share: share of queries with ``q_i . k_0 > 0``.
        locked: ``positive_share >= min_share``.
    """

    positive_share: Tensor
    locked: Tensor
    min_share: float


def qk_lock_in(
    q: Float[Tensor, "*lead query d"], k0: Float[Tensor, "*lead d"], *, min_share: float = 0.95
) -> LockIn:
    """Share of queries whose score with the sink key is positive, ``mean_i 1[q_i . k_0 > 0]``.

    A head is locked in when the share is at least ``min_share`` ("(almost) all queries";
    0.95 [ours]). Pass post-rotary q and k, and leave out the sink's own query if wanted.

    >>> q = torch.tensor([[1.0, 0.0], [1.0, 5.0], [-1.0, 0.0]])
    >>> r = qk_lock_in(q, torch.tensor([1.0, 0.0]))
    >>> round(r.positive_share.item(), 4), bool(r.locked)
    (0.6667, False)
    """
    qq, kk = _floating("q", q, 2), _floating("k0", k0, 1)
    if qq.shape[:-2] + qq.shape[-1:] != kk.shape:
        raise TlGeomError(f"k0 must be q's shape without the query dim, got {tuple(kk.shape)}")
    if not 0 < min_share <= 1:
        raise TlGeomError(f"min_share={min_share} out of range (0, 1]")
    dots = torch.einsum("...qd,...d->...q", qq, kk)
    share = (dots > 0).double().mean(-1)
    return LockIn(share, share >= min_share, min_share)


def effective_rank(
    x: Float[Tensor, "*lead n d"], *, center: bool = False
) -> Float[Tensor, "*lead"]:
    """Entropy effective rank ``exp(-sum_j p_j log p_j)``, ``p = sigma / sum sigma``.

    ``sigma``: singular values of the ``n x d`` matrix (rows are representations), not
    centered by default (Roy & Vetterli); ``center=True`` subtracts the row mean first
    [ours, an option]. Between 1 and ``min(n, d)``; nan for a zero matrix.

    >>> round(effective_rank(torch.eye(3)).item(), 6)
    3.0
    """
    a = _floating("x", x, 2)
    if center:
        a = a - a.mean(-2, keepdim=True)
    s = torch.linalg.svdvals(a)
    total = s.sum(-1, keepdim=True)
    p = s / total.clamp_min(1e-300)
    h = -(p * torch.log(p.clamp_min(1e-300))).sum(-1)
    return torch.where(total.squeeze(-1) > 0, torch.exp(h), float("nan"))
