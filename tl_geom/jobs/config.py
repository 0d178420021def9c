"""The arguments of ``tl-geom analyze`` and ``tl-geom sparsify``, validated in one place.

The command line parses into these frozen configs (:func:`from_namespace`), and the
Python functions build the same objects from their keyword arguments, so a value is
checked once, in ``__post_init__``, whichever way it came in.
"""

import argparse
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, TypeVar

from tl_geom.errors import TlGeomError
from tl_geom.geometry.taxonomy import TaxonomyConfig

__all__ = [
    "BACKENDS",
    "BASELINE_SCORES",
    "DTYPES",
    "AnalyzeConfig",
    "SparsifyConfig",
    "check_model_options",
    "default_n",
    "from_namespace",
    "n_grid",
]

DTYPES = ("float32", "bfloat16", "float16", "float64")
BASELINE_SCORES = ("auto", "float64", "float32")
"""Choices of ``AnalyzeConfig.baseline_scores`` (the dtype of the baseline's scores)."""
"""Model dtypes. ``float64`` brings the two backends closest, though not to float64
rounding: the TransformerBridge takes its attention softmax in float32 whatever the
model's dtype, so on SmolLM2 the rows still differ by ~1e-8 (values ~1e-7 relative from
layer 1), against ~1e-6 in float32. A count of P or R can flip where two distances tie
that closely (docs/backends.md)."""
BACKENDS = ("auto", "hooks", "sdpa")
RULES = ("type", "type+sink_mass", "entropy", "sink_mass", "last_token", "random")
FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)


def default_n(ctx: int) -> tuple[int, ...]:
    """Powers of two up to ``ctx / 2`` (the paper's grid: 1, 2, 4, ..., 512 at L = 1024).

    >>> default_n(1024)[-1], default_n(20)
    (512, (1, 2, 4, 8))
    """
    return tuple(2**k for k in range(int(math.log2(ctx // 2)) + 1))


def n_grid(n: tuple[int, ...] | None, ctx: int) -> tuple[int, ...]:
    """The N grid of a run, made here only: ``n`` sorted and de-duplicated, or the default.

    Default: :func:`default_n`. Each N must lie in ``1..ctx - 1``.

    >>> n_grid((4, 1, 4), 16), n_grid(None, 16)
    ((1, 4), (1, 2, 4, 8))
    """
    grid = tuple(sorted(set(n))) if n else default_n(ctx)
    for k in grid:
        if not 1 <= k < ctx:
            raise TlGeomError(f"n={k} out of range 1..{ctx - 1} for ctx={ctx}")
    return grid


def _ints(value: Any) -> tuple[int, ...] | None:
    return None if value is None else tuple(value)


def _check_source(windows: int, ctx: int) -> None:
    if isinstance(windows, bool) or not isinstance(windows, int) or windows < 1:
        raise TlGeomError(f"windows={windows!r}; ask for at least one window")
    if isinstance(ctx, bool) or not isinstance(ctx, int) or ctx < 4:
        raise TlGeomError(f"ctx={ctx!r} too short; use at least 4 tokens per window")


def check_model_options(backend: str, dtype: str) -> None:
    """Raise unless ``backend`` is one of :data:`BACKENDS` and ``dtype`` of :data:`DTYPES`."""
    if backend not in BACKENDS:
        raise TlGeomError(f"backend must be 'auto', 'hooks' or 'sdpa', got {backend!r}")
    if dtype not in DTYPES:
        raise TlGeomError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")


@dataclass(frozen=True)
class AnalyzeConfig:
    """Arguments of an analysis run; ``tl-geom analyze`` parses into this.

    Attributes:
        model: shipped name, local directory or cached hub id (recorded in run.json).
        corpus: shipped corpus name or a UTF-8 file.
        windows: number of non-overlapping windows.
        ctx: tokens per window L (the first is BOS/[CLS]).
        n: the N grid; default powers of two up to L/2.
        queries: ``"last"`` (final query row) or ``"all"`` (every row, averaged).
        draws: random subsets per row for the baseline (0: none, NaN columns).
        seed: seed of the random baseline and of the envelope simulation.
        layers: layers to analyse (None or empty: all; run.json records those that ran).
        start: first body token of window 0 in the corpus.
        envelope_samples: samples of the envelope simulation.
        dtype: the model's dtype (``float32``, ``bfloat16``, ``float16``, ``float64``);
            the metrics are accumulated in float64 whatever it is.
        backend: ``auto`` (sdpa where the architecture allows it), ``hooks`` or ``sdpa``.
        device: where to run a model loaded by name (None: cpu).
        taxonomy: thresholds of the head-type rules (None: the defaults); applied when
            the tables are aggregated, so not part of the resume check.
        compile: run the random baseline's counting passes as one ``torch.compile``
            kernel (:mod:`tl_geom.geometry.fused`; about 30 s to compile once, the same
            counts, falls back to the eager passes if compiling fails); not part of the
            resume check.
        baseline_scores: dtype of the random baseline's scores: ``auto`` (float32 on an
            accelerator, float64 on the CPU), ``float64`` or ``float32`` (certified: the
            same counts either way, so not part of the resume check).
    """

    model: str = "smollm2-135m"
    corpus: str = "war_and_peace"
    windows: int = 8
    ctx: int = 1024
    n: tuple[int, ...] | None = None
    queries: Literal["last", "all"] = "last"
    draws: int = 16
    seed: int = 0
    layers: tuple[int, ...] | None = None
    start: int = 0
    envelope_samples: int = 64
    dtype: str = "float32"
    backend: str = "auto"
    device: str | None = None
    taxonomy: TaxonomyConfig | None = None
    compile: bool = False
    baseline_scores: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", _ints(self.n) or None)
        object.__setattr__(self, "layers", _ints(self.layers) or None)  # "": all layers
        _check_source(self.windows, self.ctx)
        if (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int)
            or not 0 <= self.seed < 2**63
        ):
            raise TlGeomError(f"seed={self.seed!r}; use an integer in 0..2**63-1")
        if self.queries not in ("last", "all"):
            raise TlGeomError(f"queries must be 'last' or 'all', got {self.queries!r}")
        if isinstance(self.draws, bool) or not isinstance(self.draws, int) or self.draws < 0:
            raise TlGeomError(
                f"draws={self.draws!r}; give random subsets per row >= 1, or 0 for no baseline"
            )
        check_model_options(self.backend, self.dtype)
        if self.baseline_scores not in BASELINE_SCORES:
            raise TlGeomError(
                f"baseline_scores={self.baseline_scores!r}; use one of {', '.join(BASELINE_SCORES)}"
            )
        n_grid(self.n, self.ctx)  # validates

    @property
    def n_grid(self) -> tuple[int, ...]:
        """The N values, sorted and de-duplicated: :func:`n_grid`."""
        return n_grid(self.n, self.ctx)

    def fingerprint(self) -> dict[str, Any]:
        """What a window's results depend on; a resumed run must match it exactly.

        The backend, device, taxonomy, compile and baseline_scores are left out: the
        backends give the same rows (tests/test_fused.py), the taxonomy is applied after
        the windows, and the compiled kernel and the float32 scores give the same counts
        (tests/test_certify.py, tests/test_certify_float32.py).
        """
        skip = ("backend", "device", "taxonomy", "compile", "baseline_scores")
        d = {k: v for k, v in asdict(self).items() if k not in skip}
        d["n"] = list(self.n_grid)
        d["layers"] = list(self.layers) if self.layers is not None else None
        return d


@dataclass(frozen=True)
class SparsifyConfig:
    """Arguments of ``tl-geom sparsify`` (spec: geometry.md, "Sparsification").

    Attributes:
        model: shipped name, local directory or cached hub id.
        corpus: shipped corpus name or a UTF-8 file.
        windows: scoring windows.
        ctx: tokens per window (scoring and held out).
        heldout: held-out windows for the loss (the ones after the scoring windows).
        fractions: fractions of all heads to remove, each in ``[0, 1]``.
        rules: removal rules, a subset of ``RULES``.
        ablations: ``"zero"`` and/or ``"mean"``.
        seeds: seeds of the ``random`` rule.
        n: the N grid of the taxonomy curves (default powers of two up to ctx/2).
        taxonomy: thresholds of the type rules (None: the defaults).
    """

    model: str = "smollm2-135m"
    corpus: str = "war_and_peace"
    windows: int = 4
    ctx: int = 256
    heldout: int = 4
    fractions: tuple[float, ...] = FRACTIONS
    rules: tuple[str, ...] = RULES
    ablations: tuple[str, ...] = ("zero", "mean")
    seeds: int = 3
    n: tuple[int, ...] | None = None
    taxonomy: TaxonomyConfig | None = None

    def __post_init__(self) -> None:
        for name in ("fractions", "rules", "ablations"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "n", _ints(self.n) or None)
        bad = [r for r in self.rules if r not in RULES]
        if bad or not self.rules:
            first = bad[0] if bad else None
            raise TlGeomError(f"unknown rule {first!r}; rules: {', '.join(RULES)}")
        if not self.ablations or any(a not in ("zero", "mean") for a in self.ablations):
            raise TlGeomError(f"ablations must be 'zero' and/or 'mean', got {list(self.ablations)}")
        if not self.fractions or any(not 0.0 <= f <= 1.0 for f in self.fractions):
            raise TlGeomError(f"fractions must lie in [0, 1], got {list(self.fractions)}")
        for name in ("heldout", "seeds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TlGeomError(
                    f"windows={self.windows}, heldout={self.heldout}, seeds={self.seeds}; each >= 1"
                )
        _check_source(self.windows, self.ctx)
        n_grid(self.n, self.ctx)  # validates

    @property
    def n_grid(self) -> tuple[int, ...]:
        """The N values of the taxonomy curves, sorted and de-duplicated: :func:`n_grid`."""
        return n_grid(self.n, self.ctx)


C = TypeVar("C", AnalyzeConfig, SparsifyConfig)


def from_namespace(cls: type[C], args: argparse.Namespace, **extra: Any) -> C:
    """The config ``cls`` from the parsed command line: every field the parser defines.

    ``extra`` supplies fields the command line spells differently (``--taxonomy``).
    """
    given = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    merged: dict[str, Any] = {**given, **extra}
    for key, value in merged.items():
        if isinstance(value, list):
            merged[key] = tuple(value)  # argparse gives lists, the configs hold tuples
    return cls(**merged)
