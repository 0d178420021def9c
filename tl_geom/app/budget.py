"""The sizes of ``tl-geom reproduce``: :class:`Budget`, :data:`QUICK` and :data:`FULL`."""

from dataclasses import asdict, dataclass, field
from typing import Any

from tl_geom.errors import TlGeomError
from tl_geom.jobs.config import default_n
from tl_geom.sinks.headnorm import StudyConfig

__all__ = ["FULL", "QUICK", "Budget"]


@dataclass(frozen=True)
class Budget:
    """Sizes of every experiment (``QUICK``: minutes on 2 CPU cores; ``FULL``: the paper's L).

    Attributes:
        windows, ctx, draws: ``analyze``: windows of ``ctx`` tokens, random draws per row;
            N grid 1-6 and powers of two up to ctx/2 [ours: 3, 5, 6 added to resolve the
            paper's "N about 3-6"].
        norm_windows, norm_ctx: final-query rows for the normalization experiments
            (shorter L: the first L keys of the same rows, renormalised [ours]).
        norm_draws: random subsets per row for d~; ``grad_rows``: rows for g(T, eps).
        ks_windows, ks_chunk: real L-token windows per L for d~ vs L and the per-head KS
            test (the same number at every L; >= 32 for a decisive test), run in chunks.
        temperatures, eps: the g(T, eps) grid (must hold T = 0.01 and 1).
        sink_samples, sink_len: corpus windows for the sink measures (paper: 100 x 64;
            QUICK 32, above the 10 the sink verdicts need to decide).
        position, lams: k of the self-only mask (paper: k = 10) and the lam grid.
        positions, shift_samples: the k and the windows of the variance-amplification
            sweep (issue: >= 100 samples, k in 10, 20, 30; QUICK uses fewer).
        sparsify_windows, sparsify_ctx, heldout, seeds, fractions: ``sparsify`` (zero
            ablation, the paper's).
        headnorm: the :class:`~tl_geom.sinks.headnorm.StudyConfig` (None: skip the study).
        seed: seed of the random baselines.
    """

    windows: int = 2
    ctx: int = 256
    draws: int = 8
    norm_windows: int = 2
    norm_ctx: int = 512
    norm_draws: int = 4
    ks_windows: int = 32
    ks_chunk: int = 4
    grad_rows: int = 128
    temperatures: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
    eps: tuple[float, ...] = (1e-3, 1e-1, 10.0)
    sink_samples: int = 32
    sink_len: int = 64
    position: int = 10
    positions: tuple[int, ...] = (10, 20, 30)
    shift_samples: int = 16
    lams: tuple[float, ...] = (4.0, 16.0, 64.0)
    sparsify_windows: int = 2
    sparsify_ctx: int = 128
    heldout: int = 1
    seeds: int = 3
    fractions: tuple[float, ...] = (0.1, 0.2, 0.3)
    headnorm: StudyConfig | None = field(default_factory=lambda: StudyConfig(steps=100))
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("windows", "draws", "norm_windows", "norm_draws", "grad_rows", "ks_chunk"):
            if getattr(self, name) < 1:
                raise TlGeomError(f"{name}={getattr(self, name)}; expected >= 1")
        if self.ks_windows < 2:
            raise TlGeomError(f"ks_windows={self.ks_windows}; expected >= 2 (32 to decide)")
        for name in ("sink_samples", "shift_samples", "sparsify_windows", "heldout", "seeds"):
            if getattr(self, name) < 1:
                raise TlGeomError(f"{name}={getattr(self, name)}; expected >= 1")
        if self.ctx < 16 or self.norm_ctx < 64 or self.sparsify_ctx < 16:
            raise TlGeomError(
                f"ctx={self.ctx}, norm_ctx={self.norm_ctx}, sparsify_ctx={self.sparsify_ctx}; "
                "expected >= 16, >= 64, >= 16"
            )
        for k in (self.position, *self.positions):
            if not 0 < k < self.sink_len:
                raise TlGeomError(f"position={k} out of range 1..{self.sink_len - 1}")
        if 0.01 not in self.temperatures or 1.0 not in self.temperatures:
            raise TlGeomError(f"temperatures must hold 0.01 and 1, got {self.temperatures}")
        if not self.lams or not self.fractions or not self.eps:
            raise TlGeomError("lams, fractions and eps need at least one value each")

    @property
    def n_grid(self) -> tuple[int, ...]:
        """N = 1..6 and the powers of two up to ctx / 2."""
        return tuple(sorted({*range(1, 7), *default_n(self.ctx)}))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


QUICK = Budget()
"""A few minutes on 2 CPU cores."""

FULL = Budget(
    windows=4,
    ctx=1024,
    draws=16,
    norm_windows=2,
    norm_ctx=1024,
    norm_draws=8,
    grad_rows=256,
    sink_samples=100,
    shift_samples=100,
    lams=(4.0, 16.0, 64.0, 256.0),
    sparsify_windows=4,
    sparsify_ctx=256,
    heldout=2,
    seeds=3,
    fractions=(0.05, 0.1, 0.2, 0.3, 0.5),
    headnorm=StudyConfig(steps=3000, n_ctx=256, batch=16, log_every=250),
)
"""The paper's L = 1024 for the geometry and normalization experiments."""
