"""Where the attention sink is: measures on a model (spec: sinks.md, "Measures").

Each function runs the model once on ``tokens`` under ``torch.no_grad()``, reduces every
layer inside its hook (``tl_geom.lens.hooks.stream_layers``) with the batched math of
``tl_geom.sinks.sink_math``, and returns a frozen dataclass with ``to_frame()``. Hooks are
removed afterwards, also on exceptions. Layers are model layers (``layers=None``: all).

    sink_profile             imp(k) per layer, head, key; sink rate (eps = 0.3)
    massive_activation_profile  top-3 |h| vs median of hook_resid_post, where they sit
    dom_ratio_profile        DomRatio of hook_resid_post per layer and position
    qk_lock_in_profile       share of heads with q_i . k_0 > 0 for (almost) all i
    effective_rank_profile   entropy effective rank of hook_resid_post per layer

Why it is there (variance, W_O gain, super neurons) is in ``tl_geom.sinks.origins``.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import einops
import pandas as pd
import torch
from torch import Tensor

from tl_geom.errors import TlGeomError
from tl_geom.lens.hooks import (
    as_tokens,
    check_hook_points,
    expand_kv,
    hook_name,
    is_causal,
    model_device,
    model_dims,
    normalize_layers,
)
from tl_geom.lens.per_layer import Layers, per_layer
from tl_geom.sinks import sink_math as sm

__all__ = [
    "DomRatio",
    "EffectiveRank",
    "MassiveActivations",
    "QKLockIn",
    "SinkProfile",
    "dom_ratio_profile",
    "effective_rank_profile",
    "massive_activation_profile",
    "qk_lock_in_profile",
    "sink_profile",
    "tidy",
]


def tidy(names: Sequence[str], **cols: Tensor) -> pd.DataFrame:
    """Tidy table over the index grid of equally shaped tensors."""
    first = next(iter(cols.values()))
    grid = torch.meshgrid(*[torch.arange(s) for s in first.shape], indexing="ij")
    data: dict[str, Any] = {n: g.flatten().numpy() for n, g in zip(names, grid, strict=True)}
    for k, v in cols.items():
        data[k] = v.detach().cpu().flatten().numpy()
    return pd.DataFrame(data)


# --- where the sink is ------------------------------------------------------------------


@dataclass(frozen=True)
class SinkProfile:
    """Sink importance per sample. ``imp``: ``[batch, layer, head, key]``.

    ``imp(k) = sum_i A[i, k] / (T - k)`` (causal) or ``/ T`` (encoder, [ours]).
    """

    imp: Tensor
    layers: tuple[int, ...]
    causal: bool

    def rate(self, eps: float = 0.3) -> float:
        """Sink rate: share of (layer, head) with ``imp(0) > eps``, averaged over samples."""
        return float(sm.sink_rate(self.imp[..., 0], eps=eps).mean())

    def rate_by_layer(self, eps: float = 0.3) -> Tensor:
        """Share of heads with ``imp(0) > eps`` per layer, averaged over samples: ``[layer]``."""
        return (self.imp[..., 0] > eps).double().mean((0, 2))

    def to_frame(self) -> pd.DataFrame:
        """Columns ``layer, head, key, imp`` (mean over the batch)."""
        df = tidy(["layer", "head", "key"], imp=self.imp.mean(0))
        df["layer"] = [self.layers[i] for i in df["layer"]]
        return df


def sink_profile(
    model: Any, tokens: Tensor | str, layers: Layers = None, *, causal: bool | None = None
) -> SinkProfile:
    """``imp(k)`` of every key, head and layer (spec: sinks.md, "Measures").

    Args:
        model: a TransformerLens model with ``hook_pattern``.
        tokens: ``[batch, pos]`` ids or a string (standard protocol: T = 64, 100 samples).
        layers: layers to measure (None: all).
        causal: None takes the model's own mask (:func:`tl_geom.lens.hooks.is_causal`).
    """
    causal = is_causal(model) if causal is None else causal

    def reduce(layer: int, acts: dict[str, Tensor]) -> Tensor:
        return sm.sink_importance(acts["pattern"].double(), causal=causal)

    ids, imp = per_layer(model, tokens, ["pattern"], layers, reduce)
    return SinkProfile(imp, ids, causal)


@dataclass(frozen=True)
class MassiveActivations:
    """Top-``top`` ``|h|`` of ``hook_resid_post`` per sample and layer, ``[batch, layer, top]``.

    ``positions``/``dims`` say where each sits; ``median``/``ratio``/``massive`` as in
    :func:`tl_geom.sinks.sink_math.massive_activations`.
    """

    values: Tensor
    positions: Tensor
    dims: Tensor
    median: Tensor
    ratio: Tensor
    massive: Tensor
    layers: tuple[int, ...]

    def to_frame(self) -> pd.DataFrame:
        """Columns ``sample, layer, rank, value, position, dim, median, ratio, massive``."""
        med = self.median.unsqueeze(-1).expand_as(self.values)
        df = tidy(
            ["sample", "layer", "rank"],
            value=self.values,
            position=self.positions,
            dim=self.dims,
            median=med,
            ratio=self.ratio,
            massive=self.massive,
        )
        df["layer"] = [self.layers[i] for i in df["layer"]]
        return df


def massive_activation_profile(
    model: Any,
    tokens: Tensor | str,
    layers: Layers = None,
    *,
    top: int = 3,
    abs_min: float = 100.0,
    ratio_min: float = 1000.0,
) -> MassiveActivations:
    """Massive activations of the residual stream after each layer (Sun et al.).

    Thresholds as in :func:`tl_geom.sinks.sink_math.massive_activations`.
    """

    def reduce(layer: int, acts: dict[str, Tensor]) -> Tensor:
        return acts["resid_post"].double()

    ids, h = per_layer(model, tokens, ["resid_post"], layers, reduce)
    r = sm.massive_activations(h, top=top, abs_min=abs_min, ratio_min=ratio_min)
    return MassiveActivations(r.values, r.positions, r.dims, r.median, r.ratio, r.massive, ids)


@dataclass(frozen=True)
class DomRatio:
    """``DomRatio = max_d |h_d| / mean_d |h_d|`` of ``hook_resid_post``: ``[batch, layer, pos]``."""

    ratio: Tensor
    layers: tuple[int, ...]

    @property
    def first_token(self) -> Tensor:
        """Mean over the batch at position 0, ``[layer]``."""
        return self.ratio[:, :, 0].mean(0)

    def to_frame(self) -> pd.DataFrame:
        """Columns ``layer, position, dom_ratio`` (mean over the batch)."""
        df = tidy(["layer", "position"], dom_ratio=self.ratio.mean(0))
        df["layer"] = [self.layers[i] for i in df["layer"]]
        return df


def dom_ratio_profile(model: Any, tokens: Tensor | str, layers: Layers = None) -> DomRatio:
    """Dimension disparity of every token's hidden state after each layer."""

    def reduce(layer: int, acts: dict[str, Tensor]) -> Tensor:
        return sm.dom_ratio(acts["resid_post"])

    ids, r = per_layer(model, tokens, ["resid_post"], layers, reduce)
    return DomRatio(r, ids)


@dataclass(frozen=True)
class QKLockIn:
    """QK lock-in per head, ``[layer, head]``.

    ``positive_share``: mean over the batch of the share of queries ``i >= 1`` with
    ``q_i . k_0 > 0``; ``locked = positive_share >= min_share``.
    """

    positive_share: Tensor
    locked: Tensor
    min_share: float
    layers: tuple[int, ...]

    @property
    def share(self) -> float:
        """Share of locked-in heads over all measured layers."""
        return float(self.locked.double().mean())

    def to_frame(self) -> pd.DataFrame:
        """Columns ``layer, head, positive_share, locked``."""
        df = tidy(["layer", "head"], positive_share=self.positive_share, locked=self.locked)
        df["layer"] = [self.layers[i] for i in df["layer"]]
        return df


def qk_lock_in_profile(
    model: Any, tokens: Tensor | str, layers: Layers = None, *, min_share: float = 0.95
) -> QKLockIn:
    """Share of heads whose every query (but the sink's own) scores the sink key positively.

    Uses post-rotary q and k (``hook_rot_q``/``hook_rot_k``) where the model has rotary
    embeddings and those hooks fire, else ``hook_q``/``hook_k`` (absolute positions).
    The sign of ``q_i . k_0`` is the sign of the pre-softmax score. Per sample, then the
    mean over the batch [ours].
    """
    dims = model_dims(model)
    toks = as_tokens(model, tokens)
    if toks.shape[1] < 2:
        raise TlGeomError("need at least 2 positions for QK lock-in")
    ids = normalize_layers(layers, dims.n_layers)
    rotary = getattr(model.cfg, "positional_embedding_type", "standard") == "rotary"
    kinds = ("rot_q", "rot_k") if rotary else ("q", "k")
    names = [hook_name(layer, kind) for layer in ids for kind in kinds]
    check_hook_points(model, names)
    got: dict[tuple[int, str], Tensor] = {}

    def make(layer: int, kind: str) -> Callable[[Tensor, Any], None]:
        def hook(act: Tensor, hook: Any) -> None:
            got[(layer, kind)] = act.detach()

        return hook

    fwd = [(hook_name(layer, kind), make(layer, kind)) for layer in ids for kind in kinds]
    with torch.no_grad(), model.hooks(fwd_hooks=fwd):
        model(toks.to(model_device(model)))
    if len(got) != len(fwd):
        raise TlGeomError(
            f"{kinds[0]}/{kinds[1]} did not fire on this model (a native TransformerBridge "
            "applies rotary inside attention, without hooks); QK lock-in needs post-rotary "
            "q and k: load an HF model, or use absolute positions"
        )
    shares = []
    for layer in ids:
        q = got[(layer, kinds[0])].double()  # [b, pos, head, d]
        k = expand_kv(got[(layer, kinds[1])].double(), dims.n_heads)
        q = einops.rearrange(q[:, 1:], "b p h d -> b h p d")
        shares.append(sm.qk_lock_in(q, k[:, 0], min_share=min_share).positive_share.mean(0))
    share = torch.stack(shares)
    return QKLockIn(share, share >= min_share, min_share, ids)


@dataclass(frozen=True)
class EffectiveRank:
    """Entropy effective rank of ``hook_resid_post`` per layer, ``rank``: ``[layer]``.

    All tokens of all samples are the rows of one matrix [ours].
    """

    rank: Tensor
    layers: tuple[int, ...]
    center: bool

    def to_frame(self) -> pd.DataFrame:
        """Columns ``layer, effective_rank``."""
        return pd.DataFrame({"layer": list(self.layers), "effective_rank": self.rank.numpy()})


def effective_rank_profile(
    model: Any, tokens: Tensor | str, layers: Layers = None, *, center: bool = False
) -> EffectiveRank:
    """Effective rank of the representations after each layer (pretraining study)."""

    def reduce(layer: int, acts: dict[str, Tensor]) -> Tensor:
        h = einops.rearrange(acts["resid_post"].double(), "b p d -> (b p) d")
        return sm.effective_rank(h, center=center)

    ids, r = per_layer(model, tokens, ["resid_post"], layers, reduce, dim=0)
    return EffectiveRank(r, ids, center)
