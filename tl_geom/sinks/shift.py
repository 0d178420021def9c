"""The sink-shift experiment: does amplifying the variance at position k move the sink there?

``sink_shift(model, tokens, position=10, lams=[1, 2, 4, 8])`` measures ``imp(k)`` and
``imp(0)`` in every layer before and under :func:`tl_geom.lens.interventions.amplify_variance`
for each ``lam``, for the amplification and its control, and returns one tidy
DataFrame; :func:`plot_sink_shift` draws it. Spec: sinks.md, "Interventions" 2: the sink
at k should grow monotonically with lam under amplification and not under the control.
"""

from collections.abc import Sequence
from typing import Any, Literal

import pandas as pd
from torch import Tensor

from tl_geom.errors import TlGeomError
from tl_geom.lens.interventions import amplify_variance
from tl_geom.sinks.measures import SinkProfile, sink_profile

__all__ = ["plot_sink_shift", "sink_shift"]

Arm = Literal["amplify", "control", "both"]


def _per_layer(prof: SinkProfile, position: int) -> tuple[Tensor, Tensor]:
    imp = prof.imp.mean((0, 2))  # [layer, key]: mean over batch and heads
    return imp[:, position], imp[:, 0]


def sink_shift(
    model: Any,
    tokens: Tensor | str,
    position: int,
    lams: Sequence[float],
    layers: int | Sequence[int] | None = None,
    *,
    control: bool | Arm = "both",
) -> pd.DataFrame:
    """``imp(k)`` per layer before and after amplifying the head outputs at ``k``.

    Args:
        model: a TransformerLens model.
        tokens: ``[batch, pos]`` ids (or a string); every sequence longer than ``position``.
        position: k, where the variance is amplified (paper: 10).
        lams: the lam values (each > 0; 1 is the identity).
        layers: layers whose head outputs are edited (None: all). ``imp`` is measured
            in every layer.
        control: ``False``/``"amplify"`` (``mu + lam (o - mu)``), ``True``/``"control"``
            (``lam o``), or ``"both"`` (default).

    Returns:
        One row per arm, lam and layer: ``arm, lam, layer, edited, imp_k_before,
        imp_k_after, imp_0_before, imp_0_after, delta_k`` (``imp`` averaged over the
        batch and the heads of the layer; ``edited``: the layer's heads were edited).
    """
    if control in (False, "amplify"):
        arms: list[bool] = [False]
    elif control in (True, "control"):
        arms = [True]
    elif control == "both":
        arms = [False, True]
    else:
        raise TlGeomError(f"control={control!r}; expected a bool, 'amplify', 'control' or 'both'")
    lam_list = list(lams)
    if not lam_list:
        raise TlGeomError("lams is empty; give at least one lam > 0")
    base = sink_profile(model, tokens)
    if base.imp.shape[-1] <= position:
        raise TlGeomError(
            f"position={position} out of range for {base.imp.shape[-1]} tokens per sequence"
        )
    k_before, z_before = _per_layer(base, position)
    rows: list[dict[str, Any]] = []
    for ctl in arms:
        for lam in lam_list:
            iv = amplify_variance(model, position, float(lam), layers, control=ctl)
            with iv:
                prof = sink_profile(model, tokens)
            k_after, z_after = _per_layer(prof, position)
            for i, layer in enumerate(base.layers):
                rows.append(
                    {
                        "arm": "control" if ctl else "amplify",
                        "lam": float(lam),
                        "layer": layer,
                        "edited": layer in iv.layers,
                        "imp_k_before": float(k_before[i]),
                        "imp_k_after": float(k_after[i]),
                        "imp_0_before": float(z_before[i]),
                        "imp_0_after": float(z_after[i]),
                        "delta_k": float(k_after[i] - k_before[i]),
                    }
                )
    return pd.DataFrame(rows)


def plot_sink_shift(frame: pd.DataFrame, ax: Any = None, *, title: str | None = None) -> Any:
    """``imp(k)`` by layer: the baseline and one line per lam (solid: amplify, dashed: control).

    Needs matplotlib (``pip install tl-geom[viz]``); imported only here. Returns the Figure.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    else:
        fig = ax.figure
    first = frame[(frame["arm"] == frame["arm"].iloc[0]) & (frame["lam"] == frame["lam"].iloc[0])]
    ax.plot(first["layer"], first["imp_k_before"], color="black", lw=2, label="before")
    cmap = plt.get_cmap("viridis")
    lams = sorted(frame["lam"].unique())
    for arm, style in (("amplify", "-"), ("control", "--")):
        for j, lam in enumerate(lams):
            sel = frame[(frame["arm"] == arm) & (frame["lam"] == lam)]
            if len(sel):
                color = cmap(j / max(len(lams) - 1, 1))
                ax.plot(
                    sel["layer"], sel["imp_k_after"], style, color=color, label=f"{arm} λ={lam:g}"
                )
    ax.set_xlabel("layer")
    ax.set_ylabel("imp(k)")
    ax.set_title(title or "sink importance at the amplified position")
    ax.legend(fontsize="small", ncol=2)
    return fig
