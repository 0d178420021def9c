"""The tables of an analysis run, in memory and on disk.

``tl-geom analyze`` (and ``tl_geom.analyze``) produce one :class:`Analysis`; the files
in ``--out`` are its parts:

- ``metrics.csv``: one row per layer x head x N, means over windows with the spread:
  ``layer, head, n, precision, recall, f1, precision_random, recall_random, f1_random,
  margin, r_max, r_min, value_margin, precision_std, recall_std, f1_std,
  f1_gap_std_random, windows, c_last, c_sink`` (``value_margin``: ``r_min - r_max``, the
  margin in value space, negative when the two balls overlap; ``f1_gap_std_random``: the
  SD over windows of ``F1 - F1 random``, the headline's interval in runs without
  ``window_gaps``; the taxonomy curves ``cos(s_N, v_q)`` and ``cos(s_N, v_0)`` of the
  final query).
- ``heads.csv``: one row per head: ``layer, head, kv_head`` (its KV group), ``type,
  sink_mass, entropy, norm_cv_tokens`` (CV of ``||v_i||`` over the tokens of one
  window, mean over windows), ``norm_cv_holds, sink_lambda, sink_compressed, beta,
  beta_r2, c_inf`` (the cosine decay's plateau), ``decay_holds, rho0, last_token,
  norm_cv_positions`` (CV over positions of the mean norm at each position across
  windows, sampling part removed; ``norm_cv_positions_raw`` keeps it), ``profile_r2,
  profile_holds``, then ``type_stability`` (share of bootstrap resamples of the
  windows giving the same label; NaN for one window) and the taxonomy features
  ``mass_sink, mass_last, mass_rest, retriever, mixer, reset`` (which rules matched),
  ``c_last_early, c_last_late, c_sink_early, c_sink_late`` (log-N means over N <= 4 and
  N >= L/8), ``c_last_small, c_last_all`` (over 2 <= N <= 4 and N >= 2), ``cross_frac``
  (N / L where ``c_last`` first reaches the Mixer/Reset level; inf: never), ``share_sink,
  share_last, share_rest`` and the k-means ``cluster``. ``type`` is ``Retriever``,
  ``Mixer``, ``Reset`` or ``unclear`` (:mod:`tl_geom.geometry.taxonomy`).
- ``envelope.csv``: the expected P/R/F under the fitted assumption model, per N:
  ``n, precision, recall, f1, precision_std, recall_std, f1_std``.
- ``profiles.npy``: ``[layer, head, key]`` mean final-query attention over windows.
- ``view.json``: one window's tokens and one layer's ``[head, T, T]`` pattern for the
  attention view (the first T tokens), and the measured query's row over its heaviest
  keys in that layer (the final query of window 0).
- ``inspect.npz``: the report's "heads to look at" (:class:`HeadRows`): a few heads of
  each type and the extremes of the heatmaps, each with window 0's final-query row and
  the values of its keys.
- ``run.json``: provenance (model, corpus hash, arguments, versions, timings),
  ``taxonomy``: the rule thresholds, type counts and the k-means agreement, and
  ``window_gaps``: per window and N the mean over heads of ``F1 - F1 random`` (the
  headline's bootstrap interval, :mod:`tl_geom.app.headline`).
"""

import contextlib
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tl_geom.errors import TlGeomError

__all__ = [
    "Analysis",
    "AttentionView",
    "HeadRows",
    "atomic_write_bytes",
    "atomic_write_text",
    "make_dir",
]


@dataclass(frozen=True)
class AttentionView:
    """One window's attention for the report's circuitsvis view.

    Attributes:
        layer: the model layer shown.
        tokens: the first T tokens of the window, as strings.
        pattern: ``[head, T, T]`` attention weights among those tokens (rows renormalised
            over the T keys shown).
        query_positions: the measured query's heaviest keys, ascending (the final query
            of the window; empty in runs made before it was kept).
        query_tokens: those keys' tokens, and the query's own token last.
        query_weights: ``[head, K]`` the final query's weights on those keys, as measured
            (not renormalised).
    """

    layer: int
    tokens: list[str]
    pattern: np.ndarray
    query_positions: list[int] = field(default_factory=list[int])
    query_tokens: list[str] = field(default_factory=list[str])
    query_weights: np.ndarray | None = None

    def to_json(self) -> str:
        """JSON text with ``layer``, ``tokens``, ``pattern`` and the measured query's row."""
        d: dict[str, Any] = {
            "layer": self.layer,
            "tokens": self.tokens,
            "pattern": self.pattern.tolist(),
        }
        if self.query_weights is not None:
            d["query_positions"] = self.query_positions
            d["query_tokens"] = self.query_tokens
            d["query_weights"] = self.query_weights.tolist()
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> "AttentionView":
        """Inverse of :meth:`to_json`."""
        d = json.loads(text)
        weights = d.get("query_weights")
        return cls(
            layer=int(d["layer"]),
            tokens=list(d["tokens"]),
            pattern=np.array(d["pattern"]),
            query_positions=[int(x) for x in d.get("query_positions", [])],
            query_tokens=[str(x) for x in d.get("query_tokens", [])],
            query_weights=None if weights is None else np.array(weights, dtype=np.float64),
        )


@dataclass(frozen=True)
class HeadRows:
    """Window 0's final-query row and values of a few heads: the report's "heads to look at".

    Attributes:
        layers, heads: the model layer and head of each pick ``[k]``.
        reasons: why each head was picked (its type, or the heatmap it tops or bottoms).
        tokens: window 0's tokens as text ``[L]``.
        alpha: ``[k, L]`` the final query's weights over the window's keys (float64).
        values: ``[k, L, d]`` those keys' value vectors (float32, or float64 for a
            float64 model).
        show: the N of the pictures (:func:`tl_geom.jobs.head_rows.picture_n`).
    """

    layers: list[int]
    heads: list[int]
    reasons: list[str]
    tokens: list[str]
    alpha: np.ndarray
    values: np.ndarray
    show: int

    def to_npz(self) -> bytes:
        """The arrays as ``.npz`` bytes (text as unicode arrays: loads without pickle)."""
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            layers=np.asarray(self.layers, dtype=np.int64),
            heads=np.asarray(self.heads, dtype=np.int64),
            reasons=np.asarray(self.reasons, dtype=np.str_),
            tokens=np.asarray(self.tokens, dtype=np.str_),
            alpha=self.alpha,
            values=self.values,
            show=np.asarray(self.show, dtype=np.int64),
        )
        return buf.getvalue()

    @classmethod
    def from_npz(cls, data: bytes) -> "HeadRows":
        """Inverse of :meth:`to_npz`."""
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return cls(
                layers=[int(x) for x in z["layers"]],
                heads=[int(x) for x in z["heads"]],
                reasons=[str(x) for x in z["reasons"]],
                tokens=[str(x) for x in z["tokens"]],
                alpha=z["alpha"],
                values=z["values"],
                show=int(z["show"]),
            )


@dataclass(frozen=True)
class Analysis:
    """Every table of one analysis run (see the module docstring for the columns)."""

    metrics: pd.DataFrame
    heads: pd.DataFrame
    envelope: pd.DataFrame
    profiles: np.ndarray
    view: AttentionView | None
    run: dict[str, Any] = field(default_factory=dict[str, Any])
    head_rows: HeadRows | None = None

    def __repr__(self) -> str:
        layers = self.metrics["layer"].nunique() if "layer" in self.metrics else 0
        heads = len(self.heads)
        ns = sorted(int(x) for x in self.metrics["n"].unique()) if "n" in self.metrics else []
        model = self.run.get("facts", {}).get("model", self.run.get("config", {}).get("model"))
        windows = self.run.get("config", {}).get("windows")
        return (
            f"Analysis(model={model!r}, layers={layers}, heads={heads}, windows={windows}, n={ns})"
        )

    def _repr_html_(self) -> str:
        import html

        cols = [c for c in ("precision", "recall", "f1", "f1_random") if c in self.metrics]
        means = self.metrics.groupby("n")[cols].mean()  # pyright: ignore[reportUnknownMemberType]
        table = str(means.to_html(float_format="{:.3g}".format))  # pyright: ignore
        return f"<p><code>{html.escape(repr(self))}</code></p><p>Mean over heads:</p>{table}"

    def plot_curves(self) -> Any:
        """P, R, F1 vs N, a matplotlib Figure (:func:`tl_geom.app.analysis_plots.plot_curves`)."""
        from tl_geom.app.analysis_plots import plot_curves

        return plot_curves(self)

    def plot_heatmap(self, column: str = "f1", n: int | None = None) -> Any:
        """Layer x head heatmap, a Figure (:func:`tl_geom.app.analysis_plots.plot_heatmap`)."""
        from tl_geom.app.analysis_plots import plot_heatmap

        return plot_heatmap(self, column, n)

    def report(self, path: str | Path) -> Path:
        """Write ``report.html`` (:func:`tl_geom.app.report.write_report`); the path written."""
        from tl_geom.app.analysis_plots import report

        return report(self, path)

    def save(self, out: Path) -> None:
        """Write every part into ``out``, each file atomically."""
        make_dir(out)
        atomic_write_text(out / "metrics.csv", self.metrics.to_csv(index=False))
        atomic_write_text(out / "heads.csv", self.heads.to_csv(index=False))
        atomic_write_text(out / "envelope.csv", self.envelope.to_csv(index=False))
        buf = io.BytesIO()
        np.save(buf, self.profiles)
        atomic_write_bytes(out / "profiles.npy", buf.getvalue())
        if self.view is not None:
            atomic_write_text(out / "view.json", self.view.to_json())
        if self.head_rows is not None:
            atomic_write_bytes(out / "inspect.npz", self.head_rows.to_npz())
        atomic_write_text(out / "run.json", json.dumps(self.run, indent=2, default=str))

    @classmethod
    def load(cls, out: Path) -> "Analysis":
        """Read the parts written by :meth:`save`."""
        view_path, rows_path = out / "view.json", out / "inspect.npz"
        return cls(
            metrics=pd.read_csv(out / "metrics.csv"),
            heads=pd.read_csv(out / "heads.csv"),
            envelope=pd.read_csv(out / "envelope.csv"),
            profiles=np.load(out / "profiles.npy"),
            view=AttentionView.from_json(view_path.read_text()) if view_path.exists() else None,
            run=json.loads((out / "run.json").read_text()),
            head_rows=HeadRows.from_npz(rows_path.read_bytes()) if rows_path.exists() else None,
        )


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()
"""Permissions of a written file: what ``open(path, "w")`` would give (mkstemp gives 0600)."""


def make_dir(path: Path) -> None:
    """``mkdir -p path``; an OSError (a file in the way, read-only) as one TlGeomError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TlGeomError(f"cannot create the directory {path}: {exc.strerror or exc}") from None


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (skipped where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, whole.

    The bytes go to a temporary file with a unique name beside ``path`` (so concurrent
    writers never share one), are fsync'ed, renamed into place with ``os.replace``, and
    the directory is fsync'ed. On any failure (a full disk, a read-only filesystem,
    Ctrl-C) the temporary file is removed and ``path`` is untouched.

    Raises:
        TlGeomError: the write failed (naming ``path`` and the reason).
    """
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), _MODE)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise TlGeomError(f"could not write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))
