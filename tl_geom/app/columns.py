"""Columns of the analysis tables read back for the pages, robust to CSV round trips.

A column may be absent, hold text where a number was written, or NaN; booleans come
back from CSV as text. Everything here returns float64 arrays (NaN where unknown),
``None`` for unknown booleans, and never raises on odd data.
"""

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["column", "grid", "holds", "ints", "lookup", "nanmean", "nanmedian"]


def column(df: pd.DataFrame, name: str) -> np.ndarray:
    """``df[name]`` as float64: NaN where missing or not a number, all NaN if absent."""
    if name not in df.columns:
        return np.full(len(df), np.nan)
    raw = np.asarray(df[name].to_numpy())
    try:
        return raw.astype(np.float64)
    except (TypeError, ValueError):
        return np.array([_to_float(v) for v in raw], dtype=np.float64)


def _to_float(v: object) -> float:
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def nanmean(x: np.ndarray) -> float:
    """Mean of the finite entries (NaN if none)."""
    finite = x[np.isfinite(x)]
    return float(finite.mean()) if finite.size else float("nan")


def nanmedian(x: np.ndarray) -> float:
    """Median of the finite entries (NaN if none)."""
    finite = x[np.isfinite(x)]
    return float(np.median(finite)) if finite.size else float("nan")


def holds(df: pd.DataFrame, name: str) -> list[bool | None]:
    """A boolean column read back from CSV: True/False, or None where unknown."""
    if name not in df.columns:
        return [None] * len(df)
    table = {"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False}
    return [None if pd.isna(v) else table.get(str(v).strip().lower()) for v in df[name]]


def ints(*arrays: np.ndarray) -> list[int]:
    """The distinct finite values of ``arrays`` as sorted ints."""
    return sorted({int(v) for a in arrays for v in a if np.isfinite(v)})


def grid(
    df: pd.DataFrame, values: np.ndarray, layers: list[int], heads: list[int], rows: np.ndarray
) -> np.ndarray:
    """``[layer, head]`` mean of the finite ``values`` over ``df``'s selected rows (else NaN)."""
    li = {v: i for i, v in enumerate(layers)}
    hi = {v: i for i, v in enumerate(heads)}
    total, count = np.zeros((len(layers), len(heads))), np.zeros((len(layers), len(heads)))
    cols = (column(df, "layer")[rows], column(df, "head")[rows], values[rows])
    for lay, head, v in zip(*cols, strict=True):
        if np.isfinite(v) and np.isfinite(lay) and np.isfinite(head):
            i, j = li.get(int(lay)), hi.get(int(head))
            if i is not None and j is not None:
                total[i, j] += v
                count[i, j] += 1
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def lookup(run: dict[str, Any], *keys: str) -> Any:
    """The first of ``keys`` set in ``run`` or in its ``config``/``args`` dict."""
    for src in (run, run.get("config"), run.get("args"), run.get("arguments")):
        if isinstance(src, dict):
            for k in keys:
                if src.get(k) not in (None, ""):
                    return src[k]
    return None
