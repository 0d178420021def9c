"""The sink-shift experiment: does amplifying the variance at position k move the sink there?

``sink_shift(model, tokens, position=[10, 20, 30], lams=[4, 16, 64], layers=range(14),
sweep=True)`` measures ``imp(k)`` and ``imp(0)`` in every layer before and under
:func:`tl_geom.lens.interventions.amplify_variance`, for each k, lam and edited layer
(``sweep=True``: each layer alone; else all of ``layers`` at once), for the treatment
and its norm-matched control, and returns one tidy DataFrame; :func:`shift_summary`
reduces it to one row per edit (``imp(k)`` downstream of the edit with its standard
error over samples); :func:`plot_sink_shift` draws it. Spec: sinks.md, "Interventions"
2: the sink at k should grow with lam under amplification and not under the control.
"""

import math
from collections.abc import Sequence
from typing import Any, Literal

import pandas as pd
import torch
from torch import Tensor

from tl_geom.errors import TlGeomError
from tl_geom.lens.interventions import Site, amplify_variance
from tl_geom.sinks.measures import sink_profile

__all__ = ["plot_sink_shift", "shift_summary", "sink_shift"]

Arm = Literal["amplify", "control", "both"]
GROUP = ["arm", "site", "k", "lam", "edited_layer"]
"""The columns that name one edit in a :func:`sink_shift` frame."""


def _arms(control: bool | Arm) -> list[bool]:
    if control in (False, "amplify"):
        return [False]
    if control in (True, "control"):
        return [True]
    if control == "both":
        return [False, True]
    raise TlGeomError(f"control={control!r}; expected a bool, 'amplify', 'control' or 'both'")


def _edits(layers: int | Sequence[int] | None, n_layers: int, sweep: bool) -> list[list[int]]:
    ids = (
        list(range(n_layers))
        if layers is None
        else [layers]
        if isinstance(layers, int)
        else list(layers)
    )
    if not ids:
        raise TlGeomError("layers is empty; give at least one layer (None: all)")
    return [[i] for i in ids] if sweep else [ids]


def sink_shift(
    model: Any,
    tokens: Tensor | str,
    position: int | Sequence[int],
    lams: Sequence[float],
    layers: int | Sequence[int] | None = None,
    *,
    control: bool | Arm = "both",
    site: Site = "z",
    sweep: bool = False,
) -> pd.DataFrame:
    """``imp(k)`` per layer before and under the edit at ``k``, per arm, k, lam and edit.

    Args:
        model: a TransformerLens model.
        tokens: ``[batch, pos]`` ids (or a string); the batch are the samples.
        position: k (or several), where the variance is amplified (paper: 10).
        lams: the lam values (each > 0; 1 is the identity).
        layers: the edited layers (None: all); ``imp`` is measured in every layer.
        control: ``False``/``"amplify"`` (``mu + lam (o - mu)``), ``True``/``"control"``
            (norm-matched ``o + c 1``), or ``"both"`` (default).
        site: ``"z"`` (head outputs) or ``"resid"`` (residual stream), see
            :func:`~tl_geom.lens.interventions.amplify_variance`.
        sweep: each of ``layers`` edited alone (one edit per layer) instead of all at once.

    Returns:
        One row per arm, k, lam, edit and measured layer: ``arm, site, k, lam,
        edited_layer`` (the single edited layer, or -1 for several at once), ``layer,
        edited, downstream, imp_k_before, imp_k_after, imp_0_before, imp_0_after,
        delta_k, delta_k_se, n`` (``imp`` averaged over the heads of the layer and the
        ``n`` samples; ``delta_k_se``: the standard error of the mean over samples;
        ``downstream``: the layer comes after the first edited one, so the edit can
        reach its pattern).
    """
    arms = _arms(control)
    ks = [position] if isinstance(position, int) else list(position)
    lam_list = [float(x) for x in lams]
    if not lam_list or not ks:
        raise TlGeomError("lams and position need at least one value each (lams > 0)")
    base = sink_profile(model, tokens).imp.mean(2)  # [batch, layer, key]
    _, n_layers, n_keys = base.shape
    for k in ks:
        if not 0 <= k < n_keys:
            raise TlGeomError(f"position={k} out of range for {n_keys} tokens per sequence")
    rows: list[dict[str, Any]] = []
    for ctl in arms:
        for edit in _edits(layers, n_layers, sweep):
            for k in ks:
                for lam in lam_list:
                    iv = amplify_variance(model, k, lam, edit, control=ctl, site=site)
                    with iv:
                        after = sink_profile(model, tokens).imp.mean(2)
                    rows += _rows(base, after, k, iv.layers, "control" if ctl else "amplify",
                                  site, lam)  # fmt: skip
    return pd.DataFrame(rows)


def _rows(
    base: Tensor, after: Tensor, k: int, edited: tuple[int, ...], arm: str,
    site: str, lam: float,
) -> list[dict[str, Any]]:  # fmt: skip
    n = base.shape[0]
    delta = after[..., k] - base[..., k]  # [batch, layer]
    se = (
        delta.std(0, unbiased=True) / math.sqrt(n) if n > 1 else torch.full_like(delta[0], math.nan)
    )
    first = min(edited)
    return [
        {
            "arm": arm,
            "site": site,
            "k": k,
            "lam": lam,
            "edited_layer": edited[0] if len(edited) == 1 else -1,
            "layer": layer,
            "edited": layer in edited,
            "downstream": layer > first,
            "imp_k_before": float(base[:, layer, k].mean()),
            "imp_k_after": float(after[:, layer, k].mean()),
            "imp_0_before": float(base[:, layer, 0].mean()),
            "imp_0_after": float(after[:, layer, 0].mean()),
            "delta_k": float(delta[:, layer].mean()),
            "delta_k_se": float(se[layer]),
            "n": n,
        }
        for layer in range(base.shape[1])
    ]


def shift_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per edit: ``imp(k)`` averaged over the layers downstream of the edit.

    ``imp_k_before``/``imp_k_after``/``delta_k``: means over the downstream layers;
    ``delta_k_se``: the mean of their per-layer standard errors, an upper bound on the se
    of the layer mean (the sd of a mean is at most the mean of the sds) [ours: the exact
    one needs the per-sample values]; ``n``: samples. Edits of the last layer have no
    downstream layer and are dropped.
    """
    down = frame[frame["downstream"]]
    agg = down.groupby(GROUP, as_index=False).agg(
        imp_k_before=("imp_k_before", "mean"),
        imp_k_after=("imp_k_after", "mean"),
        delta_k=("delta_k", "mean"),
        delta_k_se=("delta_k_se", "mean"),
        n=("n", "first"),
    )
    return pd.DataFrame(agg)


def plot_sink_shift(frame: pd.DataFrame, ax: Any = None, *, title: str | None = None) -> Any:
    """``imp(k)`` at the first k: by layer (one edit) or by edited layer (a sweep).

    One line per arm and lam (solid: amplify, dashed: control); a sweep draws the
    downstream mean of :func:`shift_summary`. Needs matplotlib (``pip install
    tl-geom[viz]``); imported only here. Returns the Figure.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    else:
        fig = ax.figure
    k = int(frame["k"].iloc[0])
    frame = pd.DataFrame(frame[frame["k"] == k])
    sweep = bool(frame["edited_layer"].nunique() > 1)
    data = shift_summary(frame) if sweep else frame
    x = "edited_layer" if sweep else "layer"
    first = data[(data["arm"] == data["arm"].iloc[0]) & (data["lam"] == data["lam"].iloc[0])]
    ax.plot(first[x], first["imp_k_before"], color="black", lw=2, label="before")
    cmap = plt.get_cmap("viridis")
    lams = sorted(data["lam"].unique())
    for arm, style in (("amplify", "-"), ("control", "--")):
        for j, lam in enumerate(lams):
            sel = data[(data["arm"] == arm) & (data["lam"] == lam)]
            if len(sel) > 0:
                color = cmap(j / max(len(lams) - 1, 1))
                ax.plot(sel[x], sel["imp_k_after"], style, color=color, label=f"{arm} λ={lam:g}")
    ax.set_xlabel("edited layer (imp downstream)" if sweep else "layer")
    ax.set_ylabel(f"imp({k})")
    ax.set_title(title or "sink importance at the amplified position")
    ax.legend(fontsize="small", ncol=2)
    return fig
