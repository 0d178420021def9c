"""What the claims and verdicts of the three papers share (``tl-geom reproduce``).

Each paper folder has a ``claims`` module (:mod:`tl_geom.geometry.claims`,
:mod:`tl_geom.normalization.claims`, :mod:`tl_geom.sinks.claims`): a ``claim_*``
function per claim takes what the library measured and returns a :class:`Finding`, and
the claim's verdict rule (measured numbers -> :data:`Verdict`) sits beside it. This
module holds their common ground: the verdict literals, :class:`ClaimText`,
:class:`Finding`, the generic rules (:func:`by_share`, :func:`loglog_slope`) and the
small helpers of the ``measured`` texts and plots.

Every threshold is ours **[ours]**: the papers give shapes ("about", "saturates"), not
tests. The rules were written before the models were run and are not tuned to the
outcome: a claim that fails is a finding. NaN inputs never count as evidence for a claim.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from tl_geom.errors import TlGeomError

__all__ = [
    "INCONCLUSIVE",
    "NOT",
    "PARTLY",
    "REPRODUCED",
    "VERDICTS",
    "ClaimText",
    "Finding",
    "Numbers",
    "Verdict",
    "arrays",
    "by_share",
    "fmt",
    "is_finite",
    "loglog_slope",
    "plot_data",
]

Verdict = Literal["reproduced", "partly", "not reproduced", "inconclusive"]
REPRODUCED: Verdict = "reproduced"
PARTLY: Verdict = "partly"
NOT: Verdict = "not reproduced"
INCONCLUSIVE: Verdict = "inconclusive"
Numbers = Sequence[int | float] | np.ndarray
"""A 1-d sequence of numbers: a list or a numpy array."""
VERDICTS: tuple[Verdict, ...] = (REPRODUCED, PARTLY, NOT, INCONCLUSIVE)


@dataclass(frozen=True)
class ClaimText:
    """What a paper states, where (paper and section), in one line."""

    claim: str
    paper: str
    source: str


@dataclass(frozen=True)
class Finding:
    """One claim measured on one model.

    Attributes:
        numbers: the figures the verdict used (JSON-serialisable).
        measured: the same, as a short text for ``claims.csv``.
        verdict: ``reproduced``, ``partly``, ``not reproduced`` or ``inconclusive`` (too
            little data to decide).
        plot: ``kind`` (``line``/``bar``), ``x``, ``series`` (label -> ys), ``xlabel``,
            ``ylabel``, ``logx``, ``logy`` and an optional paper ``band`` (lo, hi).
        n: the sample size behind the verdict (None: not a sampled quantity).
        interval: the interval of the judged figure (None: none).
    """

    numbers: dict[str, Any]
    measured: str
    verdict: Verdict
    plot: dict[str, Any] = field(default_factory=dict[str, Any])
    n: int | None = None
    interval: tuple[float, float] | None = None


def is_finite(x: float) -> bool:
    """Whether ``x`` is a finite real number (a string, None or NaN is not).

    >>> is_finite(1.0), is_finite(float("nan")), is_finite(np.float64(2.0))
    (True, False, True)
    """
    return isinstance(x, int | float | np.floating | np.integer) and math.isfinite(float(x))


def arrays(**named: Numbers) -> list[np.ndarray]:
    """The named sequences as float64 arrays; they must be equally long, non-empty and 1-d."""
    out = [np.asarray(v, dtype=np.float64) for v in named.values()]
    sizes = {a.shape for a in out}
    if len(sizes) != 1 or out[0].ndim != 1 or out[0].size == 0:
        shapes = {k: np.shape(v) for k, v in named.items()}
        raise TlGeomError(f"need equally long non-empty 1-d sequences, got shapes {shapes}")
    return out


def by_share(share: float, high: float = 0.5, low: float = 0.2) -> Verdict:
    """A share of heads/layers where a property holds: ``>= high`` reproduced, ``>= low`` partly.

    >>> by_share(0.6), by_share(0.3), by_share(0.1), by_share(float("nan"))
    ('reproduced', 'partly', 'not reproduced', 'not reproduced')
    """
    if not is_finite(share):
        return NOT
    return REPRODUCED if share >= high else PARTLY if share >= low else NOT


def loglog_slope(x: Numbers, y: Numbers) -> tuple[float, float]:
    """Least-squares slope k and R^2 of ``log y = c + k log x`` on the positive finite pairs.

    (nan, nan) with fewer than two such pairs.

    >>> [round(v, 6) for v in loglog_slope([1, 2, 4], [3, 6, 12])]
    [1.0, 1.0]
    """
    xs, ys = arrays(x=x, y=y)
    ok = np.isfinite(xs) & np.isfinite(ys) & (xs > 0) & (ys > 0)
    if ok.sum() < 2 or np.ptp(np.log(xs[ok])) == 0:
        return math.nan, math.nan
    lx, ly = np.log(xs[ok]), np.log(ys[ok])
    k, c = np.polyfit(lx, ly, 1)
    resid = ly - (c + k * lx)
    tot = ((ly - ly.mean()) ** 2).sum()
    r2 = 1.0 - (resid**2).sum() / tot if tot > 0 else 1.0
    return float(k), float(r2)


def plot_data(x: Any, series: Mapping[Any, Any], **kw: Any) -> dict[str, Any]:
    """A :class:`Finding` ``plot`` dict: a line plot unless ``kw`` says otherwise.

    >>> plot_data([1, "a"], {2: [3]}, kind="bar")["series"], plot_data([1], {})["x"]
    ({'2': [3.0]}, [1.0])
    """
    out: dict[str, Any] = {"kind": "line", "logx": False, "logy": False, "band": None}
    out.update(kw)
    out["x"] = [v if isinstance(v, str) else float(v) for v in x]
    out["series"] = {str(k): [float(v) for v in vs] for k, vs in series.items()}
    return out


def fmt(x: float, spec: str = ".2f") -> str:
    """``x`` formatted by ``spec`` for a ``measured`` text, ``n/a`` if not finite.

    >>> fmt(0.123), fmt(float("nan")), fmt(1234.5, ".3g")
    ('0.12', 'n/a', '1.23e+03')
    """
    return "n/a" if not np.isfinite(x) else format(float(x), spec)
