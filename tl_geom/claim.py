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
from collections.abc import Callable, Mapping, Sequence
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
    "bootstrap_interval",
    "by_share",
    "combine_verdicts",
    "fmt",
    "is_finite",
    "loglog_slope",
    "mean_interval",
    "plot_data",
    "share_verdict",
    "wilson_interval",
]

Verdict = Literal["reproduced", "partly", "not reproduced", "inconclusive"]
REPRODUCED: Verdict = "reproduced"
PARTLY: Verdict = "partly"
NOT: Verdict = "not reproduced"
INCONCLUSIVE: Verdict = "inconclusive"
"""Too little data to decide (never ``partly`` for want of power)."""
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
        verdict: ``reproduced``, ``partly``, ``not reproduced`` or ``inconclusive``.
        plot: ``kind`` (``line``/``bar``), ``x``, ``series`` (label -> ys), ``xlabel``,
            ``ylabel``, ``logx``, ``logy`` and an optional paper ``band`` (lo, hi).
        n: the sample size behind the verdict (independent units: e.g. KV heads).
        interval: the 95% interval of the statistic the verdict used.
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


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a share ``k / n`` (95% for ``z = 1.96``); (0, 1) for n = 0.

    ``(p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)``, ``p = k / n``.

    >>> [round(x, 4) for x in wilson_interval(5, 10)]
    [0.2366, 0.7634]
    """
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def combine_verdicts(verdicts: Sequence[Verdict]) -> Verdict:
    """One verdict from several (e.g. per k, per eps).

    All alike -> that one; any reproduced or partly among others -> partly; otherwise
    (inconclusive mixed with not) -> inconclusive.

    >>> combine_verdicts(["reproduced"] * 2), combine_verdicts(["reproduced", "not reproduced"])
    ('reproduced', 'partly')
    >>> combine_verdicts(["not reproduced", "inconclusive"]), combine_verdicts([])
    ('inconclusive', 'inconclusive')
    """
    if not verdicts:
        return INCONCLUSIVE
    if len(set(verdicts)) == 1:
        return verdicts[0]
    return PARTLY if REPRODUCED in verdicts or PARTLY in verdicts else INCONCLUSIVE


def mean_interval(x: Numbers, z: float = 2.0, min_n: int = 10) -> tuple[float, float]:
    """``mean -+ z se`` of the finite values of ``x`` (``se = sd / sqrt(n)``, ddof 1).

    (nan, nan) with fewer than ``min_n`` finite values [ours: below that the standard
    error is not trusted].

    >>> [round(v, 4) for v in mean_interval(np.r_[np.zeros(50), np.ones(50)])]
    [0.3995, 0.6005]
    >>> mean_interval([1.0, 2.0])
    (nan, nan)
    """
    a = np.asarray(x, dtype=np.float64).ravel()
    a = a[np.isfinite(a)]
    if a.size < max(min_n, 2):
        return math.nan, math.nan
    half = z * float(a.std(ddof=1)) / math.sqrt(a.size)
    return float(a.mean()) - half, float(a.mean()) + half


def share_verdict(k: int, n: int, high: float = 0.5, low: float = 0.2) -> Verdict:
    """:func:`by_share` decided on the Wilson 95% interval of ``k / n`` [ours].

    Reproduced: the interval lies at or above ``high``; not reproduced: below ``low``;
    partly: inside ``[low, high)``; inconclusive: it straddles a threshold (too few
    units to tell), or ``n = 0``.

    >>> share_verdict(90, 100), share_verdict(30, 100), share_verdict(2, 100)
    ('reproduced', 'partly', 'not reproduced')
    >>> share_verdict(3, 5)
    'inconclusive'
    """
    if n <= 0:
        return INCONCLUSIVE
    lo, hi = wilson_interval(k, n)
    if lo >= high:
        return REPRODUCED
    if hi < low:
        return NOT
    return PARTLY if lo >= low and hi < high else INCONCLUSIVE


def bootstrap_interval(
    stat: Callable[[np.ndarray], float],
    n: int,
    *,
    draws: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    min_n: int = 10,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat(idx)`` over ``n`` units resampled with replacement.

    ``stat`` takes an index array (one resample of ``range(n)``) and returns a number;
    non-finite resamples are dropped. (nan, nan) when none is finite or ``n < min_n``
    [ours: with a handful of units the percentile bootstrap is too narrow to trust].

    >>> x = np.arange(10.0)
    >>> lo, hi = bootstrap_interval(lambda i: float(x[i].mean()), 10, draws=200)
    >>> lo < 4.5 < hi
    True
    """
    if n < max(min_n, 2):
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    vals = np.array([stat(rng.integers(0, n, n)) for _ in range(draws)], dtype=np.float64)
    vals = vals[np.isfinite(vals)]
    if not vals.size:
        return math.nan, math.nan
    q = (1 - level) / 2
    return float(np.quantile(vals, q)), float(np.quantile(vals, 1 - q))


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
