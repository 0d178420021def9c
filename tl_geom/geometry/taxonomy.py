"""Head taxonomy: Retriever, Mixer, Reset (spec: geometry.md, "Head taxonomy").

The signals of a head (:mod:`tl_geom.geometry.type_curves`, re-exported here):
``c_last(N) = cos(s_N, v_q)``, ``c_sink(N) = cos(s_N, v_0)`` on the N grid and the mass
split ``||alpha_0 v_0||, ||alpha_q v_q||, ||rest||`` as shares of its sum. The rules
read the curves in log N (:mod:`tl_geom.geometry.log_n`: piecewise linear in ``log N``,
means over N ranges, first crossings), so they are defined on N and N / L, never on
positions in the grid, and a denser grid gives the same labels. ``mean_[a, b]`` is the
log-N mean over ``a <= N <= b``, ``L`` the window length, ``n_max`` the grid's largest
N. All thresholds **[ours]**, set in :class:`TaxonomyConfig` (defaults in brackets),
chosen before any model was labelled:

- early = ``mean_[1, early_n]`` [early_n = 4], late = ``mean_[late_frac L, n_max]``
  [late_frac = 1/8] (both clipped to the grid);
- Retriever ("last-token dominated, c_last high across N"): ``share_last >=
  retriever_share`` [1/3: at least an even share of the split] and ``mean_[2, early_n]
  c_last`` and ``mean_[2, n_max] c_last`` both ``>= retriever_min`` [0.5]. N = 1 is left
  out: ``s_1`` is the top key alone, the sink in most heads, whatever the head reads;
- the crossing ``N_x``: the smallest N where ``c_last`` reaches ``weak_max`` [0.3]
  (inf if never);
- Mixer ("alignment moves from the sink to the last token as N grows"): ``c_sink``
  falls and ``c_last`` rises by ``>= shift_min`` [0.2] from early to late, the curves
  swap order (``c_sink > c_last`` early, ``c_last > c_sink`` late), and ``N_x / L <
  cross_frac`` [1/8];
- Reset ("sink-biased, c_last weak until N is large"): early ``c_sink >= sink_min``
  [0.5], ``share_sink >= share_last``, and ``N_x / L >= cross_frac`` (or never).

Mixer and Reset are separated by where ``c_last`` crosses ``weak_max`` in N / L. A head
that matches no rule, or several, is ``unclear``: no label is forced. Each label's
stability over windows (bootstrap) is :func:`label_stability`; the unsupervised check
(k-means against the rule labels) is :mod:`tl_geom.geometry.clustering`.
Pure math (torch, numpy): no TransformerLens import.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from tl_geom._checks import check_finite
from tl_geom.errors import TlGeomError
from tl_geom.geometry.clustering import KMEANS_RESTARTS, KMEANS_SEED, mass_shares
from tl_geom.geometry.log_n import check_grid, first_crossing, log_mean
from tl_geom.geometry.type_curves import ZERO_RTOL, HeadCurves, head_curves

__all__ = [
    "HEAD_TYPES",
    "MIXER",
    "RESET",
    "RETRIEVER",
    "STABILITY_DRAWS",
    "TYPES",
    "UNCLEAR",
    "ZERO_RTOL",
    "HeadCurves",
    "HeadTypes",
    "TaxonomyConfig",
    "classify_heads",
    "head_curves",
    "label_stability",
]

RETRIEVER = "Retriever"
MIXER = "Mixer"
RESET = "Reset"
UNCLEAR = "unclear"
TYPES = (RETRIEVER, MIXER, RESET)
"""Type names; code ``k`` is ``TYPES[k]``, code ``-1`` is ``UNCLEAR``."""
HEAD_TYPES = (*TYPES, UNCLEAR)
"""Every label :func:`classify_heads` gives, in that order (the report's order)."""
STABILITY_DRAWS = 200
"""Bootstrap resamples of the windows in :func:`label_stability` [ours]."""


@dataclass(frozen=True)
class TaxonomyConfig:
    """Thresholds of the type rules and settings of the k-means check, all [ours].

    Attributes:
        retriever_min: Retriever: ``c_last`` log-N means over ``[2, early_n]`` and
            ``[2, n_max]`` at least this.
        retriever_share: Retriever: the last token's share of the mass split at least this.
        shift_min: Mixer: ``c_sink`` falls and ``c_last`` rises by at least this.
        sink_min: Reset: early ``c_sink`` at least this.
        weak_max: the level of ``c_last`` whose first crossing ``N_x`` separates Mixer
            (``N_x / L < cross_frac``) from Reset (``>=``, or never).
        early_n: early = ``1 <= N <= early_n``.
        late_frac: late = ``N >= late_frac * L``.
        cross_frac: the N / L boundary of the crossing.
        seed: k-means seed (:mod:`tl_geom.geometry.clustering`) and bootstrap seed.
        restarts: k-means restarts (the lowest inertia wins).
    """

    retriever_min: float = 0.5
    retriever_share: float = 1 / 3
    shift_min: float = 0.2
    sink_min: float = 0.5
    weak_max: float = 0.3
    early_n: float = 4.0
    late_frac: float = 0.125
    cross_frac: float = 0.125
    seed: int = KMEANS_SEED
    restarts: int = KMEANS_RESTARTS

    def __post_init__(self) -> None:
        for name in ("retriever_min", "sink_min", "weak_max"):
            val = getattr(self, name)
            if not -1.0 <= val <= 1.0:
                raise TlGeomError(f"{name}={val} out of range; a cosine threshold lies in -1..1")
        if not 0.0 < self.shift_min <= 2.0:
            raise TlGeomError(f"shift_min={self.shift_min} out of range; use 0 < shift_min <= 2")
        for name in ("retriever_share", "late_frac", "cross_frac"):
            val = getattr(self, name)
            if not 0.0 <= val <= 1.0 or (name != "retriever_share" and val == 0.0):
                raise TlGeomError(f"{name}={val} out of range; a share or N / L lies in (0, 1]")
        if not (math.isfinite(self.early_n) and self.early_n >= 1.0):
            raise TlGeomError(f"early_n={self.early_n} out of range; use early_n >= 1")
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
        c_last_early, c_last_late, c_sink_early, c_sink_late: the log-N means over the
            early and late N ranges.
        c_last_small, c_last_all: ``c_last`` log-N means over ``[2, early_n]`` and
            ``[2, n_max]`` (the Retriever rule).
        cross_frac: ``N_x / L``, where ``c_last`` first reaches ``weak_max`` (inf: never).
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
    c_last_small: Tensor
    c_last_all: Tensor
    cross_frac: Tensor
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


def _check_inputs(c_last: Tensor, c_sink: Tensor, mass: Tensor, n: Sequence[int], length: int):
    if c_last.shape != c_sink.shape or mass.shape != (*c_last.shape[:-1], 3):
        raise TlGeomError(
            f"c_last {tuple(c_last.shape)}, c_sink {tuple(c_sink.shape)} and mass "
            f"{tuple(mass.shape)} disagree; expected [..., K], [..., K], [..., 3]"
        )
    for name, x in (("c_last", c_last), ("c_sink", c_sink), ("mass", mass)):
        check_finite(name, x)
    if bool((mass < 0).any()):
        raise TlGeomError("mass holds negative entries; it is a split of norms")
    if c_last.shape[-1] == 0:
        raise TlGeomError("the curves are empty (no N values)")
    grid = check_grid(n)
    if grid.size != c_last.shape[-1]:
        raise TlGeomError(f"the N grid has {grid.size} values, the curves {c_last.shape[-1]}")
    if isinstance(length, bool) or not isinstance(length, int) or length <= grid[-1]:
        raise TlGeomError(f"length={length!r}: the window length must be an int > max N")


def classify_heads(
    c_last: Float[Tensor, "*lead nn"],
    c_sink: Float[Tensor, "*lead nn"],
    mass: Float[Tensor, "*lead 3"],
    config: TaxonomyConfig | None = None,
    *,
    n: Sequence[int],
    length: int,
) -> HeadTypes:
    """Retriever / Mixer / Reset / unclear by the rules in the module docstring.

    early = mean_[1, early_n], late = mean_[late_frac L, n_max] (log-N means, clipped)
    Retriever: share_last >= retriever_share, mean_[2, early_n] c_last >= retriever_min,
               mean_[2, n_max] c_last >= retriever_min
    Mixer:     c_sink_early - c_sink_late >= shift_min, c_last_late - c_last_early >= shift_min,
               c_sink_early > c_last_early, c_last_late > c_sink_late, N_x / L < cross_frac
    Reset:     c_sink_early >= sink_min, share_sink >= share_last, N_x / L >= cross_frac
    with ``N_x`` the first N where ``c_last`` reaches ``weak_max``. Exactly one match
    gives the label; none or several give ``unclear`` (code -1).
    Spec: geometry.md, "Head taxonomy"; thresholds [ours].

    Args:
        c_last: ``[..., K]`` curve per head on the grid ``n``.
        c_sink: ``[..., K]``.
        mass: ``[..., 3]`` mass split (sink, last, rest) as norms (not yet shares).
        config: thresholds (default :class:`TaxonomyConfig`).
        n: the N grid (strictly increasing, K values).
        length: the window length L (> max N).

    >>> up = torch.tensor([[0.0, 0.1, 0.5, 0.9]])
    >>> down = torch.tensor([[1.0, 0.9, 0.5, 0.1]])
    >>> classify_heads(up, down, torch.tensor([[0.2, 0.3, 0.5]]), n=[1, 2, 4, 8], length=64).labels
    ['Mixer']
    """
    cfg = config or TaxonomyConfig()
    _check_inputs(c_last, c_sink, mass, n, length)
    n_max = float(n[-1])
    early, late = (1.0, cfg.early_n), (min(cfg.late_frac * length, n_max), n_max)
    cl, cs = c_last.double(), c_sink.double()
    cl_early, cl_late = log_mean(cl, n, *early), log_mean(cl, n, *late)
    cs_early, cs_late = log_mean(cs, n, *early), log_mean(cs, n, *late)
    cl_small = log_mean(cl, n, 2.0, max(2.0, cfg.early_n))
    cl_all = log_mean(cl, n, 2.0, max(2.0, n_max))
    cross = first_crossing(cl, n, cfg.weak_max) / length
    shares = mass_shares(mass)
    retriever = (
        (shares[..., 1] >= cfg.retriever_share)
        & (cl_small >= cfg.retriever_min)
        & (cl_all >= cfg.retriever_min)
    )
    mixer = (
        (cs_early - cs_late >= cfg.shift_min)
        & (cl_late - cl_early >= cfg.shift_min)
        & (cs_early > cl_early)
        & (cl_late > cs_late)
        & (cross < cfg.cross_frac)
    )
    reset = (
        (cs_early >= cfg.sink_min) & (shares[..., 0] >= shares[..., 1]) & (cross >= cfg.cross_frac)
    )
    hits = torch.stack([retriever, mixer, reset], -1)
    code = torch.where(hits.sum(-1) == 1, hits.long().argmax(-1), -1)
    return HeadTypes(
        code=code,
        retriever=retriever,
        mixer=mixer,
        reset=reset,
        c_last_early=cl_early,
        c_last_late=cl_late,
        c_sink_early=cs_early,
        c_sink_late=cs_late,
        c_last_small=cl_small,
        c_last_all=cl_all,
        cross_frac=cross,
        share_sink=shares[..., 0],
        share_last=shares[..., 1],
        share_rest=shares[..., 2],
    )


def label_stability(
    c_last: Float[Tensor, "window *lead nn"],
    c_sink: Float[Tensor, "window *lead nn"],
    mass: Float[Tensor, "window *lead 3"],
    config: TaxonomyConfig | None = None,
    *,
    n: Sequence[int],
    length: int,
    draws: int = STABILITY_DRAWS,
) -> tuple[HeadTypes, Float[Tensor, "*lead"]]:
    """The labels of the window means and each label's stability over windows (bootstrap).

    stability = (1 / B) #{b : label(mean over windows resample b) = label(mean over windows)}
    with B = ``draws`` resamples of the W windows with replacement (seed
    ``config.seed``), all classified in one batch; window means ignore NaN (a head NaN
    in every window of a resample takes the full mean). NaN with a single window: one
    window says nothing about the spread [ours]. Spec: geometry.md, "Head taxonomy".

    Returns:
        ``(classify_heads of the window means, stability [...])``.
    """
    cfg = config or TaxonomyConfig()
    if c_last.ndim < 2 or c_last.shape[0] == 0:
        raise TlGeomError(f"c_last has shape {tuple(c_last.shape)}; expected [window, ..., K]")
    types = classify_heads(
        c_last.double().nanmean(0), c_sink.double().nanmean(0), mass.double().nanmean(0),
        cfg, n=n, length=length,
    )  # fmt: skip
    windows = c_last.shape[0]
    if windows < 2:
        return types, torch.full(types.code.shape, math.nan, dtype=torch.float64)
    gen = torch.Generator().manual_seed(cfg.seed)
    idx = torch.randint(0, windows, (draws, windows), generator=gen)
    weights = torch.zeros(draws, windows, dtype=torch.float64).scatter_add_(
        1, idx, torch.ones(draws, windows, dtype=torch.float64)
    )

    def resampled(x: Tensor) -> Tensor:  # [B, ...] weighted nanmeans over windows
        x = x.double().to(weights.device)
        ok = torch.isfinite(x)
        num = torch.einsum("bw,w...->b...", weights, torch.where(ok, x, 0.0))
        den = torch.einsum("bw,w...->b...", weights, ok.double())
        return torch.where(den > 0, num / den.clamp_min(1e-300), x.nanmean(0))

    boot = classify_heads(
        resampled(c_last), resampled(c_sink), resampled(mass), cfg, n=n, length=length
    )
    return types, (boot.code == types.code).double().mean(0)
