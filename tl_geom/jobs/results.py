"""The tables of an analysis run, in memory and on disk.

``tl-geom analyze`` (and ``tl_geom.analyze``) produce one :class:`Analysis`; the files
in ``--out`` are its parts:

- ``metrics.csv``: one row per layer x head x N, means over windows with the spread:
  ``layer, head, n, precision, recall, f1, precision_random, recall_random, f1_random,
  margin, r_max, r_min, precision_std, recall_std, f1_std, windows, c_last, c_sink``
  (the taxonomy curves ``cos(s_N, v_q)`` and ``cos(s_N, v_0)`` of the final query).
- ``heads.csv``: one row per head: ``layer, head, kv_head`` (its KV group), ``type,
  sink_mass, entropy, norm_cv_tokens`` (CV of ``||v_i||`` over the tokens of one
  window, mean over windows), ``norm_cv_holds, sink_lambda, sink_compressed, beta,
  beta_r2, c_inf`` (the cosine decay's plateau), ``decay_holds, rho0, last_token,
  norm_cv_positions`` (CV over positions of the mean norm at each position across
  windows, sampling part removed; ``norm_cv_positions_raw`` keeps it), ``profile_r2,
  profile_holds``, then the taxonomy features ``mass_sink, mass_last, mass_rest,
  retriever, mixer, reset`` (which rules matched), ``c_last_early, c_last_late,
  c_sink_early, c_sink_late, c_last_min, c_last_weak_max, share_sink, share_last,
  share_rest`` and the k-means ``cluster``. ``type`` is ``Retriever``, ``Mixer``,
  ``Reset`` or ``unclear`` (:mod:`tl_geom.geometry.taxonomy`).
- ``envelope.csv``: the expected P/R/F under the fitted assumption model, per N:
  ``n, precision, recall, f1, precision_std, recall_std, f1_std``.
- ``profiles.npy``: ``[layer, head, key]`` mean final-query attention over windows.
- ``view.json``: one window's tokens and one layer's ``[head, T, T]`` pattern for the
  attention view (the first T tokens).
- ``run.json``: provenance (model, corpus hash, arguments, versions, timings) and
  ``taxonomy``: the rule thresholds, type counts and the k-means agreement.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Analysis", "AttentionView", "atomic_write_bytes", "atomic_write_text"]


@dataclass(frozen=True)
class AttentionView:
    """One window's attention for the report's circuitsvis view.

    Attributes:
        layer: the model layer shown.
        tokens: the first T tokens of the window, as strings.
        pattern: ``[head, T, T]`` attention weights among those tokens (rows renormalised
            over the T keys shown).
    """

    layer: int
    tokens: list[str]
    pattern: np.ndarray

    def to_json(self) -> str:
        """JSON text with ``layer``, ``tokens`` and the nested ``pattern`` list."""
        return json.dumps(
            {"layer": self.layer, "tokens": self.tokens, "pattern": self.pattern.tolist()}
        )

    @classmethod
    def from_json(cls, text: str) -> "AttentionView":
        """Inverse of :meth:`to_json`."""
        d = json.loads(text)
        return cls(layer=int(d["layer"]), tokens=list(d["tokens"]), pattern=np.array(d["pattern"]))


@dataclass(frozen=True)
class Analysis:
    """Every table of one analysis run (see the module docstring for the columns)."""

    metrics: pd.DataFrame
    heads: pd.DataFrame
    envelope: pd.DataFrame
    profiles: np.ndarray
    view: AttentionView | None
    run: dict[str, Any] = field(default_factory=dict[str, Any])

    def save(self, out: Path) -> None:
        """Write every part into ``out``, each file atomically."""
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "metrics.csv", self.metrics.to_csv(index=False))
        atomic_write_text(out / "heads.csv", self.heads.to_csv(index=False))
        atomic_write_text(out / "envelope.csv", self.envelope.to_csv(index=False))
        tmp = out / ".profiles.npy.tmp"
        with tmp.open("wb") as fh:
            np.save(fh, self.profiles)
        tmp.replace(out / "profiles.npy")
        if self.view is not None:
            atomic_write_text(out / "view.json", self.view.to_json())
        atomic_write_text(out / "run.json", json.dumps(self.run, indent=2, default=str))

    @classmethod
    def load(cls, out: Path) -> "Analysis":
        """Read the parts written by :meth:`save`."""
        view_path = out / "view.json"
        return cls(
            metrics=pd.read_csv(out / "metrics.csv"),
            heads=pd.read_csv(out / "heads.csv"),
            envelope=pd.read_csv(out / "envelope.csv"),
            profiles=np.load(out / "profiles.npy"),
            view=AttentionView.from_json(view_path.read_text()) if view_path.exists() else None,
            run=json.loads((out / "run.json").read_text()),
        )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def atomic_write_text(path: Path, text: str) -> None:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))
