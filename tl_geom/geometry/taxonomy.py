"""Head taxonomy: Retriever, Mixer, Reset (spec: geometry.md, "Head taxonomy").

Signals of one head for one query row q, on the N grid (``s_N`` as in
:func:`tl_geom.geometry.top_n.separability`, ``v_q`` the value at the query's own position;
a vector that cancels to rounding noise, shorter than ``ZERO_RTOL max_i ||v_i||``, has
cosine 0 **[ours]**):

    c_last(N) = cos(s_N, v_q),   c_sink(N) = cos(s_N, v_0)
    mass split: ||alpha_0 v_0||,  ||alpha_q v_q||,  ||sum_{i != 0, q} alpha_i v_i||

Rules on the curves (averaged over windows), all thresholds **[ours]** and set in
:class:`TaxonomyConfig`. With the grid split in thirds, ``early`` is the mean over the
first third of the N values and ``late`` over the last third (at least one N each):

- Retriever ("last-token dominated"): ``c_last(N) >= retriever_min`` at every N.
- Mixer ("alignment moves from the sink to the last token"): ``c_sink`` falls and
  ``c_last`` rises by at least ``shift_min`` from early to late, and the two curves
  cross (``c_sink > c_last`` early, ``c_last > c_sink`` late).
- Reset ("sink-biased, c_last weak until N is large"): early ``c_sink >= sink_min``,
  ``c_last < weak_max`` at every N outside the late third, and the sink's share of the
  mass split at least the last token's.

A head that matches no rule, or more than one, is ``unclear``: no label is forced.
The unsupervised check (k-means on the same features against the rule labels) is
:mod:`tl_geom.geometry.clustering`. Pure math (torch, numpy): no TransformerLens import.
"""

import math
from dataclasses import dataclass, fields, replace

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from tl_geom._checks import check_finite, check_n, check_values, check_weights
from tl_geom.errors import TlGeomError
from tl_geom.geometry.clustering import KMEANS_RESTARTS, KMEANS_SEED, mass_shares
from tl_geom.geometry.top_n import top_n_rank

__all__ = [
    "HEAD_TYPES",
    "MIXER",
    "RESET",
    "RETRIEVER",
    "TYPES",
    "UNCLEAR",
    "HeadCurves",
    "HeadTypes",
    "TaxonomyConfig",
    "classify_heads",
    "head_curves",
]

RETRIEVER = "Retriever"
MIXER = "Mixer"
RESET = "Reset"
UNCLEAR = "unclear"
TYPES = (RETRIEVER, MIXER, RESET)
"""Type names; code ``k`` is ``TYPES[k]``, code ``-1`` is ``UNCLEAR``."""
HEAD_TYPES = (*TYPES, UNCLEAR)
"""Every label :func:`classify_heads` gives, in that order (the report's order)."""


@dataclass(frozen=True)
class HeadCurves:
    """Taxonomy signals of one query row per head.

    Attributes:
        n: the N values (trailing dim of the curves).
        c_last: ``cos(s_N, v_q)``, ``[..., nn]``.
        c_sink: ``cos(s_N, v_0)``, ``[..., nn]``.
        mass_sink: ``||alpha_0 v_0||``, ``[...]``.
        mass_last: ``||alpha_q v_q||``, ``[...]``.
        mass_rest: ``||sum_{i != 0, q} alpha_i v_i||``, ``[...]``.
    """

    n: tuple[int, ...]
    c_last: Tensor
    c_sink: Tensor
    mass_sink: Tensor
    mass_last: Tensor
    mass_rest: Tensor

    def to_frame(self) -> pd.DataFrame:
        """One row per leading index and N: ``dim0.., n, c_last, c_sink, mass_*``."""
        lead = tuple(self.c_last.shape[:-1])
        grid = torch.meshgrid(*[torch.arange(s) for s in lead], torch.tensor(self.n), indexing="ij")
        cols: dict[str, object] = {f"dim{i}": g.flatten().numpy() for i, g in enumerate(grid[:-1])}
        cols["n"] = grid[-1].flatten().numpy()
        cols["c_last"] = self.c_last.double().flatten().numpy()
        cols["c_sink"] = self.c_sink.double().flatten().numpy()
        for key in ("mass_sink", "mass_last", "mass_rest"):
            m = getattr(self, key).double().unsqueeze(-1).expand_as(self.c_last)
            cols[key] = m.flatten().numpy()
        return pd.DataFrame(cols)


ZERO_RTOL = 1e-12
"""A vector shorter than ``ZERO_RTOL * max_i ||v_i||`` counts as zero in a cosine [ours]:
an ``s_N`` that cancels to rounding noise has no direction."""


def _cos(a: Tensor, b: Tensor, tiny: Tensor) -> Tensor:
    """Cosine along the last dim; 0 where either vector is shorter than ``tiny`` [ours]."""
    num = (a * b).sum(-1)
    na, nb = a.norm(dim=-1), b.norm(dim=-1)
    ok = (na > tiny) & (nb > tiny)
    return torch.where(ok, num / (na * nb).clamp_min(1e-300), torch.zeros_like(num))


def head_curves(
    alpha: Float[Tensor, "*lead key"],
    values: Float[Tensor, "*lead key d"],
    n: int | list[int] | tuple[int, ...],
    *,
    query: int = -1,
    sink: int = 0,
    s: Float[Tensor, "*lead nn d"] | None = None,
) -> HeadCurves:
    """``c_last(N)``, ``c_sink(N)`` and the mass split of one query row per head.

    c_last(N) = cos(s_N, v_q),  c_sink(N) = cos(s_N, v_sink),  s_N = sum_{i in I_N} alpha_i v_i
    mass split: ||alpha_sink v_sink||, ||alpha_q v_q||, ||sum_{i != sink, q} alpha_i v_i||
    ``I_N`` are the N largest weights, ties to the earlier position, as in
    :func:`tl_geom.geometry.top_n.separability`. A cosine with a vector shorter than
    ``ZERO_RTOL max_i ||v_i||`` is 0 [ours].
    Float64. Spec: geometry.md, "Head taxonomy".

    Args:
        alpha: the query row's weights ``[..., L]``.
        values: value vectors ``[..., L, d]``.
        n: the N grid.
        query: the query's own position q (default the last key, the final query).
        sink: the sink position.
        s: ``s_N`` already computed (``separability(...).s``, ``[..., nn, d]``); else
            computed here.

    Raises:
        TlGeomError: bad weights, values or N; ``query`` equal to ``sink`` or out of range.

    >>> alpha = torch.tensor([0.6, 0.1, 0.3])
    >>> values = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    >>> c = head_curves(alpha, values, [1, 2])
    >>> c.c_sink.round(decimals=4).tolist(), c.c_last.round(decimals=4).tolist()
    ([1.0, 0.7071], [0.0, 0.7071])
    >>> round(c.mass_sink.item(), 4), round(c.mass_last.item(), 4), round(c.mass_rest.item(), 4)
    (0.6, 0.6, 0.1414)
    """
    check_weights(alpha)
    check_values(alpha, values)
    length = alpha.shape[-1]
    ns = check_n(list(n) if not isinstance(n, int) else n, length)
    if not (-length <= query < length and 0 <= sink < length):
        raise TlGeomError(f"query={query}, sink={sink} out of range for L={length}")
    q, k0 = query % length, sink
    if q == k0:
        raise TlGeomError(f"query={query} is the sink position {sink}; the mass split needs both")
    a = alpha.double()
    v = values.double()
    if s is None:
        n_t = torch.tensor(ns, device=a.device)
        selected = top_n_rank(a).unsqueeze(-2) < n_t.view(-1, 1)  # [..., nn, L]
        s = torch.einsum("...nk,...kd->...nd", selected * a.unsqueeze(-2), v)
    else:
        if s.shape[-2] != len(ns) or s.shape[-1] != v.shape[-1]:
            raise TlGeomError(f"s has shape {tuple(s.shape)}; expected [..., {len(ns)}, d]")
        check_finite("s", s)
        s = s.double()
    v_q, v_0 = v[..., q, :], v[..., k0, :]
    y_q, y_0 = a[..., q, None] * v_q, a[..., k0, None] * v_0
    out = torch.einsum("...k,...kd->...d", a, v)
    tiny = (ZERO_RTOL * v.norm(dim=-1).amax(-1)).unsqueeze(-1)  # [..., 1]
    return HeadCurves(
        n=ns,
        c_last=_cos(s, v_q.unsqueeze(-2), tiny),
        c_sink=_cos(s, v_0.unsqueeze(-2), tiny),
        mass_sink=y_0.norm(dim=-1),
        mass_last=y_q.norm(dim=-1),
        mass_rest=(out - y_0 - y_q).norm(dim=-1),
    )


@dataclass(frozen=True)
class TaxonomyConfig:
    """Thresholds of the type rules and settings of the k-means check, all [ours].

    Attributes:
        retriever_min: Retriever if ``c_last >= retriever_min`` at every N.
        shift_min: Mixer if ``c_sink`` falls and ``c_last`` rises by at least this
            (early third to late third of the grid) and the curves cross.
        sink_min: Reset needs early ``c_sink >= sink_min``.
        weak_max: Reset needs ``c_last < weak_max`` outside the late third.
        seed: k-means seed (:mod:`tl_geom.geometry.clustering`).
        restarts: k-means restarts (the lowest inertia wins).
    """

    retriever_min: float = 0.5
    shift_min: float = 0.2
    sink_min: float = 0.5
    weak_max: float = 0.3
    seed: int = KMEANS_SEED
    restarts: int = KMEANS_RESTARTS

    def __post_init__(self) -> None:
        for name in ("retriever_min", "sink_min", "weak_max"):
            val = getattr(self, name)
            if not -1.0 <= val <= 1.0:
                raise TlGeomError(f"{name}={val} out of range; a cosine threshold lies in -1..1")
        if not 0.0 < self.shift_min <= 2.0:
            raise TlGeomError(f"shift_min={self.shift_min} out of range; use 0 < shift_min <= 2")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TlGeomError(f"seed={self.seed!r} must be an int")
        if (
            isinstance(self.restarts, bool)
            or not isinstance(self.restarts, int)
            or self.restarts < 1
        ):
            raise TlGeomError(f"restarts={self.restarts!r} must be an int >= 1")
        if self.weak_max > self.retriever_min:
            raise TlGeomError(
                f"weak_max={self.weak_max} > retriever_min={self.retriever_min}; "
                "a weak c_last must lie below a Retriever's"
            )

    @classmethod
    def parse(cls, text: str) -> "TaxonomyConfig":
        """A config from ``"key=value,key=value"`` (the CLI's ``--taxonomy``); unset keys default.

        >>> TaxonomyConfig.parse("retriever_min=0.6, weak_max=0.25").retriever_min
        0.6
        """
        defaults = cls()
        known = {f.name: type(getattr(defaults, f.name)) for f in fields(cls)}
        given: dict[str, float | int] = {}
        for item in (x.strip() for x in text.split(",")):
            if not item:
                continue
            key, eq, raw = (p.strip() for p in item.partition("="))
            if not eq or key not in known:
                raise TlGeomError(
                    f"taxonomy setting {item!r}: expected key=value with key one of "
                    f"{', '.join(known)}"
                )
            try:
                given[key] = known[key](raw)
            except ValueError:
                raise TlGeomError(
                    f"taxonomy setting {key}={raw!r}: expected a {known[key].__name__}"
                ) from None
        return replace(defaults, **given)


@dataclass(frozen=True)
class HeadTypes:
    """Rule labels per head. Shapes ``[...]``.

    Attributes:
        code: ``0, 1, 2`` for ``TYPES`` (Retriever, Mixer, Reset), ``-1`` unclear.
        retriever, mixer, reset: whether each rule matched (several matches: unclear).
        c_last_early, c_last_late, c_sink_early, c_sink_late: curve means over the
            first and last third of the grid.
        c_last_min: ``min_N c_last``.  c_last_weak_max: ``max c_last`` outside the late third.
        share_sink, share_last, share_rest: the mass split as shares of its sum.
    """

    code: Tensor
    retriever: Tensor
    mixer: Tensor
    reset: Tensor
    c_last_early: Tensor
    c_last_late: Tensor
    c_sink_early: Tensor
    c_sink_late: Tensor
    c_last_min: Tensor
    c_last_weak_max: Tensor
    share_sink: Tensor
    share_last: Tensor
    share_rest: Tensor

    @property
    def labels(self) -> list[str]:
        """The type name of every head, flattened in row-major order."""
        return [TYPES[c] if c >= 0 else UNCLEAR for c in self.code.flatten().tolist()]

    def to_frame(self) -> pd.DataFrame:
        """One row per head (flattened): ``type`` and every feature."""
        cols: dict[str, object] = {"type": self.labels}
        for key in self.__dataclass_fields__:
            if key != "code":
                cols[key] = getattr(self, key).double().flatten().numpy()
        return pd.DataFrame(cols)


def _thirds(k: int) -> int:
    return max(1, math.ceil(k / 3))


def classify_heads(
    c_last: Float[Tensor, "*lead nn"],
    c_sink: Float[Tensor, "*lead nn"],
    mass: Float[Tensor, "*lead 3"],
    config: TaxonomyConfig | None = None,
) -> HeadTypes:
    """Retriever / Mixer / Reset / unclear by the rules in the module docstring.

    early = mean of the first ceil(K/3) N values, late = mean of the last ceil(K/3)
    Retriever: min_N c_last >= retriever_min
    Mixer:     c_sink_early - c_sink_late >= shift_min, c_last_late - c_last_early >= shift_min,
               c_sink_early > c_last_early, c_last_late > c_sink_late
    Reset:     c_sink_early >= sink_min, max_{N not late} c_last < weak_max,
               share_sink >= share_last
    Exactly one match gives the label; none or several give ``unclear`` (code -1).
    Spec: geometry.md, "Head taxonomy"; thresholds [ours].

    Args:
        c_last: ``[..., K]`` curve per head (N ascending).
        c_sink: ``[..., K]``.
        mass: ``[..., 3]`` mass split (sink, last, rest) as norms (not yet shares).
        config: thresholds (default :class:`TaxonomyConfig`).

    >>> up = torch.tensor([[0.0, 0.1, 0.5, 0.9]])
    >>> down = torch.tensor([[1.0, 0.9, 0.5, 0.1]])
    >>> classify_heads(up, down, torch.tensor([[0.2, 0.3, 0.5]])).labels
    ['Mixer']
    """
    cfg = config or TaxonomyConfig()
    if c_last.shape != c_sink.shape or mass.shape != (*c_last.shape[:-1], 3):
        raise TlGeomError(
            f"c_last {tuple(c_last.shape)}, c_sink {tuple(c_sink.shape)} and mass "
            f"{tuple(mass.shape)} disagree; expected [..., K], [..., K], [..., 3]"
        )
    for name, x in (("c_last", c_last), ("c_sink", c_sink), ("mass", mass)):
        check_finite(name, x)
    if bool((mass < 0).any()):
        raise TlGeomError("mass holds negative entries; it is a split of norms")
    k = c_last.shape[-1]
    if k == 0:
        raise TlGeomError("the curves are empty (no N values)")
    third = _thirds(k)
    cl, cs = c_last.double(), c_sink.double()
    cl_early, cl_late = cl[..., :third].mean(-1), cl[..., -third:].mean(-1)
    cs_early, cs_late = cs[..., :third].mean(-1), cs[..., -third:].mean(-1)
    cl_weak = cl[..., : max(1, k - third)].amax(-1)
    cl_min = cl.amin(-1)
    shares = mass_shares(mass)
    retriever = cl_min >= cfg.retriever_min
    mixer = (
        (cs_early - cs_late >= cfg.shift_min)
        & (cl_late - cl_early >= cfg.shift_min)
        & (cs_early > cl_early)
        & (cl_late > cs_late)
    )
    reset = (
        (cs_early >= cfg.sink_min) & (cl_weak < cfg.weak_max) & (shares[..., 0] >= shares[..., 1])
    )
    hits = torch.stack([retriever, mixer, reset], -1)
    code = torch.where(
        hits.sum(-1) == 1, hits.long().argmax(-1), torch.full_like(cl_min, -1).long()
    )
    return HeadTypes(
        code=code,
        retriever=retriever,
        mixer=mixer,
        reset=reset,
        c_last_early=cl_early,
        c_last_late=cl_late,
        c_sink_early=cs_early,
        c_sink_late=cs_late,
        c_last_min=cl_min,
        c_last_weak_max=cl_weak,
        share_sink=shares[..., 0],
        share_last=shares[..., 1],
        share_rest=shares[..., 2],
    )
