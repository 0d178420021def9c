"""One head drilled down: ``tl_geom.inspect_head(capture, layer, head, n=[2, 4, 8])``.

The numbers of one query row of one head, next to the picture of geometry.md
("Objects", "Metrics"): the weighted values ``y_i = alpha_i v_i`` of the visible keys,
the top-N set ``I_N``, ``s_N = sum_{I_N} y_i``, ``D_i = ||y_i - s_N||`` with the radii
``r_max = max_{I_N} D_i`` and ``r_min = min_{not I_N} D_j``. It shows itself in Jupyter
(``_repr_html_``: inline SVG, the circuitsvis bundle inline, nothing from a CDN).
"""

import html
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd  # pyright: ignore[reportMissingTypeStubs]
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from tl_geom.app.attention_view import colored_tokens_html
from tl_geom.app.plotting import log2_axis, plot_style, to_svg
from tl_geom.errors import TlGeomError
from tl_geom.geometry.baseline import RandomSeparability, random_separability
from tl_geom.geometry.top_n import Separability, separability
from tl_geom.lens.capture import AttentionCapture
from tl_geom.lens.capture_metrics import visible_keys

__all__ = ["HeadInspection", "inspect_head", "inspect_row"]


_RASTER_ABOVE = 256
"""Keys beyond which the unselected points are a raster image inside the SVG [ours]."""


@dataclass(frozen=True)
class HeadInspection:
    """One query row of one head: its separability, its baseline and its value space.

    Attributes:
        layer, head, query: the model's layer and head, the query position.
        alpha: ``[L]`` weights over the visible keys (float64).
        values: ``[L, d]`` value vectors of those keys (float64).
        text: the keys' tokens as text (positions where the model had no tokenizer).
        result: :func:`~tl_geom.geometry.top_n.separability` of the row at every N.
        random: the random-subset baseline of the row at every N.
        show: the N drawn in the value-space picture and the token table.
    """

    layer: int
    head: int
    query: int
    alpha: Tensor
    values: Tensor
    text: tuple[str, ...]
    result: Separability
    random: RandomSeparability
    show: int

    def distances(self, n: int | None = None) -> Tensor:
        """``D_i = ||alpha_i v_i - s_N||`` for every visible key (geometry.md, "Metrics")."""
        k = self.result.n.index(self.show if n is None else n)
        y = self.alpha[:, None] * self.values
        return (y - self.result.s[k]).norm(dim=-1)

    def top_tokens(self, n: int | None = None) -> pd.DataFrame:
        """The ``max(n)`` heaviest keys: text, position, weight, value norm, D to ``s_N``."""
        show = self.show if n is None else n
        k = self.result.n.index(show)
        order = torch.argsort(-self.alpha, stable=True)[: max(self.result.n)]
        dist = self.distances(show)
        return pd.DataFrame(
            {
                "rank": np.arange(1, len(order) + 1),
                "position": order.numpy(),
                "text": [self.text[int(i)] for i in order],
                "weight": self.alpha[order].numpy(),
                "value_norm": self.values[order].norm(dim=-1).numpy(),
                f"D_to_s{show}": dist[order].numpy(),
                f"in_top{show}": self.result.selected[k][order].numpy(),
            }
        )

    def curves(self) -> pd.DataFrame:
        """P, R, F per N of the top-N set and of random N-subsets (mean over draws)."""
        cols = {"n": list(self.result.n)}
        for m in ("precision", "recall", "f1"):
            cols[m] = getattr(self.result, m).numpy()
            cols[f"{m}_random"] = getattr(self.random, m).numpy()
        return pd.DataFrame(cols)

    def figure(self) -> Figure:
        """Three panels: P/R/F vs N against random; value space (PCA); D_i by rank."""
        with plot_style():
            fig = Figure(figsize=(10.5, 3.2))
            ax_c, ax_v, ax_d = fig.subplots(1, 3)
            self._plot_curves(ax_c)
            self._plot_value_space(ax_v)
            self._plot_distances(ax_d)
            fig.suptitle(f"layer {self.layer} head {self.head}, query {self.query}", fontsize=9)
        return fig

    def _plot_curves(self, ax: Axes) -> None:
        c = self.curves()
        for m, colour in (("precision", "C0"), ("recall", "C1"), ("f1", "C2")):
            ax.plot(c["n"], c[m], "-o", color=colour, ms=3, label=m)
            ax.plot(c["n"], c[f"{m}_random"], "--", color=colour, lw=1)
        log2_axis(ax, list(self.result.n))
        ax.set(xlabel="N", ylim=(-0.02, 1.02), title="top-N (solid), random (dashed)")
        ax.legend(loc="lower left", frameon=False)

    def _plot_value_space(self, ax: Axes) -> None:
        k = self.result.n.index(self.show)
        y = self.alpha[:, None] * self.values
        s = self.result.s[k]
        centre = y.mean(0)
        _, _, vh = torch.linalg.svd(y - centre, full_matrices=False)
        basis = vh[:2].T if vh.shape[0] >= 2 else torch.eye(y.shape[1], 2, dtype=y.dtype)
        p, ps = ((y - centre) @ basis).numpy(), ((s - centre) @ basis).numpy()
        sel = self.result.selected[k].numpy()
        many = len(p) > _RASTER_ABOVE  # thousands of SVG markers: drawn as one image
        ax.scatter(p[~sel, 0], p[~sel, 1], s=8, c="0.6", label="not selected", rasterized=many)
        ax.scatter(p[sel, 0], p[sel, 1], s=18, c="C3", label=f"top-{self.show}")
        ax.scatter([ps[0]], [ps[1]], marker="*", s=90, c="k", label=f"s_{self.show}")
        ax.set(title="y_i = alpha_i v_i (PCA, 2-D)", xlabel="PC1", ylabel="PC2")
        ax.legend(loc="best", frameon=False)

    def _plot_distances(self, ax: Axes) -> None:
        k = self.result.n.index(self.show)
        dist = self.distances().numpy()
        order = np.argsort(dist, kind="stable")
        sel = self.result.selected[k].numpy()[order]
        ranks = np.arange(1, len(dist) + 1)
        many = len(dist) > _RASTER_ABOVE
        ax.scatter(ranks[~sel], dist[order][~sel], s=8, c="0.6", rasterized=many)
        ax.scatter(ranks[sel], dist[order][sel], s=18, c="C3")
        r_max, r_min = float(self.result.r_max[k]), float(self.result.r_min[k])
        ax.axhline(r_max, color="C3", lw=1, label=f"r_max = {r_max:.3g}")
        ax.axhline(r_min, color="k", lw=1, ls="--", label=f"r_min = {r_min:.3g}")
        ax.set(xscale="log", xlabel="rank by D_i", ylabel=f"D_i to s_{self.show}")
        ax.set_title("distances to s_N")
        ax.legend(loc="lower right", frameon=False)

    def __repr__(self) -> str:
        k = self.result.n.index(self.show)
        return (
            f"HeadInspection(layer={self.layer}, head={self.head}, query={self.query}, "
            f"keys={len(self.alpha)}, n={list(self.result.n)}, "
            f"F1@{self.show}={float(self.result.f1[k]):.3g} "
            f"vs random {float(self.random.f1[k]):.3g})"
        )

    def _repr_html_(self) -> str:
        fig = self.figure()
        tokens = colored_tokens_html(list(self.text), self.alpha.tolist())
        table = self.top_tokens().to_html(index=False, float_format="{:.4g}".format)  # pyright: ignore
        curves = self.curves().to_html(index=False, float_format="{:.3g}".format)  # pyright: ignore
        return (
            f"<div><p><b>{html.escape(repr(self))}</b></p>{to_svg(fig)}"
            f"<p>Top tokens (D to s_{self.show}; the PCA panel is a projection, the "
            f"distances panel is exact)</p>{table}<p>P/R/F vs N</p>{curves}"
            f"<p>The query row's weights over the keys</p>{tokens}</div>"
        )


def inspect_head(
    capture: AttentionCapture,
    layer: int,
    head: int,
    n: int | Sequence[int] = (2, 4, 8),
    *,
    query: int = -1,
    batch: int = 0,
    show: int | None = None,
    draws: int = 64,
    seed: int = 0,
) -> HeadInspection:
    """Drill into one head of a capture: its numbers are :func:`separability`'s.

    Args:
        capture: from :func:`~tl_geom.capture_attention` or :func:`~tl_geom.from_cache`.
        layer: a model layer in ``capture.layers`` (the real id, not its index).
        head: a head of that layer.
        n: the N values (each ``1 <= N < visible keys``).
        query: the query position, one of ``capture.queries`` (default -1: the final
            token; negative positions count from the end of the prompt).
        batch: the batch row.
        show: the N of the picture and the token table (default: the middle of ``n``).
        draws: random subsets per N for the baseline.
        seed: seed of the random subsets.

    Raises:
        TlGeomError: a layer not captured, a head, query or batch out of range, an N
            out of range or ``show`` not in ``n``.
    """
    if layer not in capture.layers:
        raise TlGeomError(f"layer {layer} was not captured; captured layers {capture.layers}")
    b, _, n_heads, _, length = capture.pattern.shape
    for name, value, size in (("head", head, n_heads), ("batch", batch, b)):
        if not -size <= value < size:
            raise TlGeomError(f"{name}={value} out of range for {size}")
    if query % length not in capture.queries or not -length <= query < length:
        raise TlGeomError(f"query position {query} was not captured; captured {capture.queries}")
    ns = [n] if isinstance(n, int) else sorted(set(n))
    shown = ns[len(ns) // 2] if show is None else show
    if shown not in ns:
        raise TlGeomError(f"show={show} is not one of n={ns}")
    li, qi = capture.layers.index(layer), capture.queries.index(query % length)
    keys = visible_keys(capture, qi)
    alpha = capture.pattern[batch, li, head, qi, :keys]
    values = capture.values[batch, li, head, :keys]
    text = capture.text[:keys] if capture.text is not None else tuple(map(str, range(keys)))
    where = (layer, head % n_heads, capture.queries[qi])
    return inspect_row(where, alpha, values, text, ns, show=shown, draws=draws, seed=seed)


def inspect_row(
    where: tuple[int, int, int],
    alpha: Tensor,
    values: Tensor,
    text: Sequence[str],
    n: Sequence[int],
    *,
    show: int,
    draws: int = 64,
    seed: int = 0,
) -> HeadInspection:
    """A :class:`HeadInspection` of one row given as arrays (what the report stores).

    ``where`` is ``(layer, head, query)``; ``alpha`` ``[L]`` the row's weights over its
    visible keys, ``values`` ``[L, d]`` their values, ``text`` the keys' tokens. Both
    are taken in float64; the numbers are :func:`separability`'s and
    :func:`random_separability`'s of the row.
    """
    alpha, values = alpha.double(), values.double()
    ns = sorted(set(n))
    return HeadInspection(
        layer=where[0],
        head=where[1],
        query=where[2],
        alpha=alpha,
        values=values,
        text=tuple(text),
        result=separability(alpha, values, ns),
        random=random_separability(alpha, values, ns, draws=draws, seed=seed),
        show=show,
    )
