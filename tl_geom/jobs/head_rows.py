"""The heads the report drills into, and window 0's rows of them (``inspect.npz``).

:func:`pick_heads` chooses from the tables a few heads of each type and the extremes of
the report's heatmaps. Window 0's run keeps every head's final-query row and its keys'
values (:func:`keep_final_row`: ``layers x L x (8 H + 4 KV d)`` bytes, 26 MB for SmolLM2
at L = 1024, 206 MB at 8192; up to :data:`KEEP_BYTES`), and :func:`capture_head_rows`
takes the picked heads' out of them (window 0 runs once more only where the run did not
keep them), so that the report can draw the value-space picture of geometry.md
("Objects": ``y_i = alpha_i v_i``, ``s_N``, ``r_max``, ``r_min``) with the numbers of
:func:`tl_geom.geometry.top_n.separability`.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from tl_geom.jobs.results import HeadRows
from tl_geom.lens.hooks import ModelDims, expand_kv, model_device
from tl_geom.lens.rows import stream_rows

__all__ = [
    "KEEP_BYTES",
    "PER_TYPE",
    "FinalRows",
    "capture_head_rows",
    "head_rows",
    "keep_final_row",
    "keeps_final_rows",
    "pick_heads",
    "picture_n",
]

PER_TYPE = 2
"""Heads drawn per head type (Retriever, Mixer, Reset) [ours]."""

_TYPES = ("Retriever", "Mixer", "Reset")


def picture_n(ns: Sequence[int]) -> int:
    """The N of the pictures: 4 where in the grid, else the smallest N >= 2 [ours].

    N = 1 is perfect for any subset, and at N = 4 the selected set is visible as a set.

    >>> picture_n([1, 2, 4, 8]), picture_n([1, 3, 9]), picture_n([1])
    (4, 3, 1)
    """
    if 4 in ns:
        return 4
    return ([n for n in sorted(ns) if n >= 2] or sorted(ns))[0]


def _at_n(metrics: pd.DataFrame, heads: pd.DataFrame, n: int) -> pd.DataFrame:
    """``heads`` with ``f1`` and ``gap`` (F1 - random F1) at N = ``n`` joined on layer, head."""
    at = metrics.loc[metrics["n"] == n, ["layer", "head", "f1", "f1_random"]]
    at = at.assign(gap=at["f1"] - at["f1_random"])[["layer", "head", "f1", "gap"]]
    cols = [c for c in ("layer", "head", "type", "sink_mass", "entropy", "rho0") if c in heads]
    return heads[cols].merge(at, on=["layer", "head"], how="left")


def pick_heads(
    metrics: pd.DataFrame, heads: pd.DataFrame, n: int, *, per_type: int = PER_TYPE
) -> list[tuple[int, int, str]]:
    """``(layer, head, reason)`` of the heads to look at, in the report's order [ours].

    Per type (Retriever, Mixer, Reset), the ``per_type`` heads with the largest F1 gap
    over random at N = ``n`` (the clearest of the type); then the extremes of the
    heatmaps: the largest and smallest F1 and gap at ``n``, the largest sink mass, the
    largest and smallest entropy, the largest rho0. A head picked twice is listed once,
    with both reasons. NaN values are never an extreme.
    """
    table = _at_n(metrics, heads, n)
    lay, hd = table["layer"].to_numpy(int), table["head"].to_numpy(int)
    picked: dict[tuple[int, int], list[str]] = {}

    def add(index: np.ndarray, reason: str) -> None:
        for i in index.tolist():
            picked.setdefault((int(lay[i]), int(hd[i])), []).append(reason)

    def values(col: str) -> np.ndarray:
        return np.asarray(pd.to_numeric(table[col], errors="coerce"), dtype=np.float64)

    if "type" in table:
        kinds, gap = table["type"].astype(str).to_numpy(), values("gap")
        for kind in _TYPES:
            idx = np.flatnonzero(kinds == kind)
            order = np.argsort(-np.nan_to_num(gap[idx], nan=-np.inf), kind="stable")
            add(idx[order][:per_type], kind)
    for col, label in (
        ("f1", f"F1 at N = {n}"),
        ("gap", f"F1 - random at N = {n}"),
        ("sink_mass", "sink mass"),
        ("entropy", "entropy"),
        ("rho0", "rho0"),
    ):
        x = values(col) if col in table else np.array([])
        known = np.flatnonzero(np.isfinite(x))
        if known.size == 0:
            continue
        add(known[[np.argmax(x[known])]], f"highest {label}")
        if col in ("f1", "gap", "entropy"):
            add(known[[np.argmin(x[known])]], f"lowest {label}")
    return [(lay, hd, "; ".join(why)) for (lay, hd), why in picked.items()]


KEEP_BYTES = 2**29
"""The most window 0's kept rows may take, 512 MiB [ours]: above, a second forward of
window 0 instead (the bound of a 7B model at L = 4096 is 4.3 GB)."""


def keeps_final_rows(dims: ModelDims, layers: int, length: int) -> bool:
    """Whether window 0's run keeps its final rows: at most :data:`KEEP_BYTES`.

    Bounded by ``layers x L x 8 (H + KV d)`` bytes (float64 rows, values in float64 at
    most): 395 MB for SmolLM2 (30 layers, 9 heads, 3 x 64 values) at L = 8192.
    """
    return layers * length * 8 * (dims.n_heads + dims.n_kv_heads * dims.d_head) <= KEEP_BYTES


FinalRows = dict[int, tuple[Tensor, Tensor]]
"""Window 0's final query per layer: its row ``[H, L]`` (float64) and the layer's values
``v_kv [1, L, KV, d]`` (float32, or float64 for a float64 model), copies on the CPU."""


def keep_final_row(kept: FinalRows, layer: int, rows: Any, v_kv: Tensor) -> None:
    """Keep ``layer``'s final-query row of every head and its values in ``kept``.

    A :func:`tl_geom.lens.rows.stream_rows` callback (``rows(positions)`` hands out
    ``[1, H, len(positions), L]``): :func:`~tl_geom.jobs.window.run_window` calls it for
    window 0 so that the heads to look at need no second forward; copies, so no view
    keeps the layer's buffers alive.
    """
    row = rows([v_kv.shape[1] - 1])[0, :, 0]  # [H, L]
    dtype = torch.float64 if v_kv.dtype == torch.float64 else torch.float32
    kept[layer] = (
        row.to(device="cpu", dtype=torch.float64, copy=True),
        v_kv.detach().to(device="cpu", dtype=dtype, copy=True),
    )


def head_rows(
    kept: FinalRows, picks: Sequence[tuple[int, int, str]], text: Sequence[str], n: int
) -> HeadRows | None:
    """The picked heads' rows and values out of ``kept`` (every picked layer in it).

    Head ``h`` reads its KV head's values (``expand_kv``, GQA). None without picks.
    """
    if not picks:
        return None
    alpha, values = [], []
    for lay, hd, _ in picks:
        row, v_kv = kept[lay]
        alpha.append(row[hd])
        values.append(expand_kv(v_kv, row.shape[0])[0, :, hd])
    return HeadRows(
        layers=[lay for lay, _, _ in picks],
        heads=[hd for _, hd, _ in picks],
        reasons=[why for _, _, why in picks],
        tokens=list(text),
        alpha=torch.stack(alpha).numpy(),
        values=torch.stack(values).numpy(),
        show=n,
    )


def capture_head_rows(
    model: Any,
    tokens: Tensor,
    picks: Sequence[tuple[int, int, str]],
    text: Sequence[str],
    n: int,
    *,
    kept: FinalRows | None = None,
) -> HeadRows | None:
    """The picked heads' rows of ``tokens`` (``[1, L]``, window 0): :func:`head_rows`.

    ``kept``: window 0's rows as the run kept them (:func:`keep_final_row`); where it
    lacks a picked layer (window 0 resumed from disk, or run by another rank), window 0
    runs once more, streaming the picked layers only (either backend). The same bits
    either way: the same forward on the same tokens (tests/test_report_heads.py).
    """
    if not picks:
        return None
    layers = sorted({lay for lay, _, _ in picks})
    if kept is not None and all(lay in kept for lay in layers):
        return head_rows(kept, picks, text, n)
    fresh: FinalRows = {}

    def keep(layer: int, rows: Any, v_kv: Tensor) -> None:
        keep_final_row(fresh, layer, rows, v_kv)

    with torch.no_grad(), stream_rows(model, layers, keep):
        model(tokens.to(model_device(model)))
    return head_rows(fresh, picks, text, n)
