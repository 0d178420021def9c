"""Interventions that create, move or remove the attention sink (spec: sinks.md, "Interventions").

Each is a small frozen object with a plain ``fwd_hooks`` list and a readable repr:

    with self_only_mask(model, position=10), amplify_variance(model, position=10, lam=4.0):
        logits = model(tokens)                   # hooks run in the order entered
    iv = self_only_mask(model, position=10)      # SelfOnlyMask(position=10, layers=all)
    model.run_with_hooks(tokens, fwd_hooks=iv.fwd_hooks)   # the same edit, TL's way

Entering one enters ``model.hooks(fwd_hooks=...)``, which removes exactly the hooks it
added on exit, also when the forward raises, so the model is bit-identical afterwards and
interventions compose. Hook functions return an edited ``clone()``: an in-place edit would
also rewrite what an earlier capture hook on the same point stored.

Where the edit happens: attention edits rewrite ``hook_pattern`` (the softmax output that
multiplies the values). Edits to ``hook_attn_scores`` are discarded on TransformerLens 4
native models (the bridge recomputes the pattern), and on native models that hook even
carries the pattern, so nothing here edits scores. Head-output edits rewrite ``hook_z``,
the per-head output ``o = sum_j A_ij v_j`` before ``W_O``.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, Literal

import torch
from torch import Tensor

from tl_geom._checks import check_finite
from tl_geom.errors import TlGeomError
from tl_geom.lens.hooks import (
    check_hook_points,
    hook_name,
    is_causal,
    model_dims,
    normalize_layers,
)

__all__ = [
    "SITE_HOOKS",
    "AmplifyVariance",
    "HeadAblation",
    "MaskSink",
    "MoveSink",
    "SelfOnlyMask",
    "ablate_heads",
    "amplified",
    "amplify_variance",
    "mask_sink",
    "move_sink",
    "self_only_mask",
]

Hook = Callable[[Tensor, Any], Tensor]
FwdHooks = list[tuple[str, Hook]]


class _HookContext:
    """Enter/exit ``model.hooks(fwd_hooks=self.fwd_hooks)``; re-entrant (a stack)."""

    model: Any
    fwd_hooks: FwdHooks
    _open: list[Any]

    def __enter__(self) -> "_HookContext":
        ctx = self.model.hooks(fwd_hooks=self.fwd_hooks)
        ctx.__enter__()
        self._open.append(ctx)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._open.pop().__exit__(*exc)


def _layers_repr(layers: tuple[int, ...], n_layers: int) -> str:
    return "all" if layers == tuple(range(n_layers)) else str(list(layers))


def _check_position(name: str, position: object, n_ctx: int) -> int:
    if isinstance(position, bool) or not isinstance(position, int) or position < 0:
        raise TlGeomError(f"{name}={position!r}; expected a non-negative int position")
    if n_ctx and position >= n_ctx:
        raise TlGeomError(f"{name}={position} out of range 0..{n_ctx - 1} (n_ctx={n_ctx})")
    return position


def _check_in_sequence(name: str, position: int, length: int) -> None:
    if position >= length:
        raise TlGeomError(f"{name}={position} out of range for a sequence of {length} tokens")


def _setup(model: Any, kind: str, layers: int | Sequence[int] | None) -> tuple[int, ...]:
    dims = model_dims(model)
    ids = normalize_layers(layers, dims.n_layers)
    check_hook_points(model, [hook_name(layer, kind) for layer in ids])
    return ids


# --- attention-pattern edits ------------------------------------------------------------


@dataclass(frozen=True, repr=False, eq=False)
class SelfOnlyMask(_HookContext):
    """Query row ``position`` attends only to itself in ``layers`` (pattern row -> one-hot)."""

    model: Any
    position: int
    layers: tuple[int, ...]
    fwd_hooks: FwdHooks
    _open: list[Any] = field(default_factory=list)

    def __repr__(self) -> str:
        n = model_dims(self.model).n_layers
        return f"SelfOnlyMask(position={self.position}, layers={_layers_repr(self.layers, n)})"


def self_only_mask(
    model: Any, position: int, layers: int | Sequence[int] | None = None
) -> SelfOnlyMask:
    """``A'[k, :] = e_k`` at query ``k = position`` in every head of ``layers``.

    A pattern edit: the row becomes exactly one-hot (not a masked, renormalised score
    row, which is the same distribution but would need a score hook, and score edits
    are discarded on TL 4 native models). The output there becomes ``o_k = v_k``.
    Spec: sinks.md, "Interventions" 1 (paper: k = 10; later layers form a sink at k).

    Raises:
        TlGeomError: position not a non-negative int or beyond ``n_ctx`` (at the call),
            beyond the sequence (at the forward), layers out of range.
    """
    pos = _check_position("position", position, model_dims(model).n_ctx)
    ids = _setup(model, "pattern", layers)

    def hook(pattern: Tensor, hook: Any) -> Tensor:
        _check_in_sequence("position", pos, pattern.shape[-2])
        out = pattern.clone()
        out[..., pos, :] = 0
        out[..., pos, pos] = 1
        return out

    return SelfOnlyMask(model, pos, ids, [(hook_name(layer, "pattern"), hook) for layer in ids])


@dataclass(frozen=True, repr=False, eq=False)
class MaskSink(_HookContext):
    """No query attends to key ``sink``; the rest of each row is renormalised."""

    model: Any
    sink: int
    layers: tuple[int, ...]
    fwd_hooks: FwdHooks
    _open: list[Any] = field(default_factory=list)

    def __repr__(self) -> str:
        n = model_dims(self.model).n_layers
        return f"MaskSink(sink={self.sink}, layers={_layers_repr(self.layers, n)})"


def mask_sink(model: Any, sink: int = 0, layers: int | Sequence[int] | None = None) -> MaskSink:
    """``A'[i, s] = 0``, ``A'[i, j] = A[i, j] / (1 - A[i, s])`` for every other key ``j``.

    A row whose whole mass is on the sink (row 0 of a causal model: it sees only
    itself) is left unchanged [ours]; it has nothing to renormalise onto.
    """
    snk = _check_position("sink", sink, model_dims(model).n_ctx)
    ids = _setup(model, "pattern", layers)

    def hook(pattern: Tensor, hook: Any) -> Tensor:
        _check_in_sequence("sink", snk, pattern.shape[-1])
        out = pattern.clone()
        out[..., snk] = 0
        rest = out.sum(-1, keepdim=True)
        return torch.where(rest > 0, out / rest.clamp_min(1e-30), pattern)

    return MaskSink(model, snk, ids, [(hook_name(layer, "pattern"), hook) for layer in ids])


@dataclass(frozen=True, repr=False, eq=False)
class MoveSink(_HookContext):
    """The attention each query pays to ``sink`` goes to key ``to`` instead."""

    model: Any
    to: int
    sink: int
    layers: tuple[int, ...]
    fwd_hooks: FwdHooks
    _open: list[Any] = field(default_factory=list)

    def __repr__(self) -> str:
        n = model_dims(self.model).n_layers
        return f"MoveSink(to={self.to}, sink={self.sink}, layers={_layers_repr(self.layers, n)})"


def move_sink(
    model: Any, to: int, sink: int = 0, layers: int | Sequence[int] | None = None
) -> MoveSink:
    """``A'[i, to] = A[i, to] + A[i, sink]``, ``A'[i, sink] = 0`` for the rows that see ``to``.

    Causal patterns (all zero above the diagonal): rows ``i >= to``; rows before ``to``
    cannot attend to it and keep their sink. Other patterns: every row [ours]. Row sums
    are unchanged.
    """
    n_ctx = model_dims(model).n_ctx
    dst = _check_position("to", to, n_ctx)
    snk = _check_position("sink", sink, n_ctx)
    if dst == snk:
        raise TlGeomError(f"to={to} equals sink={sink}; moving the sink onto itself is a no-op")
    ids = _setup(model, "pattern", layers)
    causal = is_causal(model)

    def hook(pattern: Tensor, hook: Any) -> Tensor:
        _check_in_sequence("to", dst, pattern.shape[-1])
        _check_in_sequence("sink", snk, pattern.shape[-1])
        rows = torch.arange(pattern.shape[-2], device=pattern.device)
        sees = (rows >= dst) if causal else torch.ones_like(rows, dtype=torch.bool)
        moved = pattern[..., snk] * sees
        out = pattern.clone()
        out[..., dst] = out[..., dst] + moved
        out[..., snk] = out[..., snk] - moved
        return out

    return MoveSink(model, dst, snk, ids, [(hook_name(layer, "pattern"), hook) for layer in ids])


# --- head-output edits ------------------------------------------------------------------


Site = Literal["z", "resid"]
SITE_HOOKS: dict[str, str] = {"z": "z", "resid": "resid_post"}
"""Where :func:`amplify_variance` edits: head outputs ``hook_z`` or the residual stream."""


@dataclass(frozen=True, repr=False, eq=False)
class AmplifyVariance(_HookContext):
    """``o' = mu + lam (o - mu)`` (norm-matched ``o + c 1`` with ``control``) at ``position``."""

    model: Any
    position: int
    lam: float
    control: bool
    layers: tuple[int, ...]
    fwd_hooks: FwdHooks
    site: str = "z"
    _open: list[Any] = field(default_factory=list)

    def __repr__(self) -> str:
        n = model_dims(self.model).n_layers
        ctl = ", control=True" if self.control else ""
        site = "" if self.site == "z" else f", site={self.site!r}"
        return (
            f"AmplifyVariance(position={self.position}, lam={self.lam:g}{ctl}{site}, "
            f"layers={_layers_repr(self.layers, n)})"
        )


def amplified(o: Tensor, lam: float, *, control: bool = False) -> Tensor:
    """The edited vectors, over the last dim (``d``): treatment or its norm-matched control.

    Treatment: ``o' = mu 1 + lam (o - mu 1)``, ``mu = mean_d o[d]``: the mean is kept,
    the variance over dims ``s^2 = mean_d (o - mu)^2`` becomes ``lam^2 s^2``, the squared
    norm ``d (mu^2 + s^2)`` becomes ``d (mu^2 + lam^2 s^2)``.
    Control: ``o' = o + c 1`` with ``mu + c = sign(mu) sqrt(mu^2 + (lam^2 - 1) s^2)``
    (``sign(0) = +1`` [ours]), so ``||o'||`` equals the treatment's while the variance over
    dims stays ``s^2``. Where no shift reaches that norm (``lam < 1`` and
    ``mu^2 < (1 - lam^2) s^2``) the new mean is 0, the closest norm [ours].
    Spec: sinks.md, "Interventions" 2 (corrected control). Computed in float64.

    >>> o = torch.tensor([1.0, 3.0])
    >>> amplified(o, 2.0).tolist(), [round(x, 4) for x in amplified(o, 2.0, control=True).tolist()]
    ([0.0, 4.0], [1.6458, 3.6458])
    """
    x = o.double()
    mu = x.mean(-1, keepdim=True)
    dev = x - mu
    if not control:
        return (mu + lam * dev).to(o.dtype)
    s2 = dev.pow(2).mean(-1, keepdim=True)
    sign = torch.where(mu < 0, -1.0, 1.0).to(x.dtype)
    new_mu = sign * (mu.pow(2) + (lam**2 - 1.0) * s2).clamp_min(0.0).sqrt()
    return (x + (new_mu - mu)).to(o.dtype)


def amplify_variance(
    model: Any,
    position: int,
    lam: float,
    layers: int | Sequence[int] | None = None,
    *,
    control: bool = False,
    site: Site = "z",
) -> AmplifyVariance:
    """Variance amplification at one position, or its norm-matched control (:func:`amplified`).

    ``site="z"``: every head's output ``o_k`` (``hook_z``, ``[batch, pos, head, d_head]``),
    the mean and variance taken over the head's ``d_head`` dims [ours: per head, as
    HeadNorm is]. ``site="resid"``: the residual stream at ``k`` after each layer in
    ``layers`` (``hook_resid_post``, over ``d_model``) [ours: the spec leaves the site
    open]. With a LayerNorm (not RMSNorm) model the next layer's norm removes a mean
    shift, so the control acts on the residual stream only. ``layers``: the edited
    layers (None: all); sweep single layers by calling once per layer.
    ``control=False``: ``mu + lam (o - mu)`` (variance x ``lam^2``, mean kept).
    ``control=True``: ``o + c 1`` with the treatment's norm (variance kept) -- the two
    arms differ exactly in the variance over dims. ``lam = 1`` is the identity up to
    rounding. Spec: sinks.md, "Interventions" 2 (paper: k = 10, the sink at k grows with
    lam; the control makes none).

    Raises:
        TlGeomError: ``lam`` not a finite number > 0, unknown site, position or layers out
            of range.
    """
    if isinstance(lam, bool) or not isinstance(lam, Real) or not math.isfinite(lam) or lam <= 0:
        raise TlGeomError(f"lam={lam!r}; expected a finite number > 0")
    if site not in SITE_HOOKS:
        raise TlGeomError(f"site={site!r}; expected one of {sorted(SITE_HOOKS)}")
    pos = _check_position("position", position, model_dims(model).n_ctx)
    kind = SITE_HOOKS[site]
    ids = _setup(model, kind, layers)
    scale = float(lam)

    def hook(x: Tensor, hook: Any) -> Tensor:  # [batch, pos, (head,) d]
        _check_in_sequence("position", pos, x.shape[1])
        out = x.clone()
        out[:, pos] = amplified(x[:, pos], scale, control=control)
        return out

    fwd: FwdHooks = [(hook_name(layer, kind), hook) for layer in ids]
    return AmplifyVariance(model, pos, scale, control, ids, fwd, site)


@dataclass(frozen=True, repr=False, eq=False)
class HeadAblation(_HookContext):
    """Zero- or mean-ablation of chosen heads' outputs (``hook_z``)."""

    model: Any
    heads: tuple[tuple[int, int], ...]
    mode: str
    fwd_hooks: FwdHooks
    _open: list[Any] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"HeadAblation(heads={list(self.heads)}, mode={self.mode!r})"


def ablate_heads(
    model: Any,
    heads: Sequence[tuple[int, int]],
    mode: Literal["zero", "mean"] = "zero",
    *,
    means: Tensor | None = None,
) -> HeadAblation:
    """Replace head outputs ``o`` (``hook_z``) of the given ``(layer, head)`` pairs.

    ``"zero"``: ``o' = 0``. ``"mean"``: ``o' = means[layer, head]`` when ``means``
    (``[n_layers, n_heads, d_head]``, e.g. the mean ``hook_z`` over reference windows as
    ``tl_geom.jobs.sparsify`` passes) is given; otherwise the head's mean output over the
    batch and positions of the same forward [ours: no reference dataset needed; a batch
    of one sequence averages over its positions].
    """
    if mode not in ("zero", "mean"):
        raise TlGeomError(f"mode={mode!r}; expected 'zero' or 'mean'")
    dims = model_dims(model)
    if means is not None:
        want = (dims.n_layers, dims.n_heads, dims.d_head)
        if mode != "mean" or tuple(means.shape) != want:
            raise TlGeomError(
                f"means must have shape {want} and go with mode='mean', got "
                f"{tuple(means.shape)} with mode={mode!r}"
            )
        check_finite("means", means)  # a NaN mean would turn every logit NaN silently
    pairs = list(heads)
    if not pairs:
        raise TlGeomError("heads is empty; pass (layer, head) pairs")
    by_layer: dict[int, list[int]] = {}
    for pair in pairs:
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise TlGeomError(f"heads must be (layer, head) pairs, got {pair!r}")
        layer, head = pair
        (layer,) = normalize_layers(layer, dims.n_layers)
        if isinstance(head, bool) or not isinstance(head, int) or not 0 <= head < dims.n_heads:
            raise TlGeomError(f"head {head!r} out of range 0..{dims.n_heads - 1}")
        by_layer.setdefault(layer, []).append(head)
    check_hook_points(model, [hook_name(layer, "z") for layer in by_layer])

    def make(layer: int, hs: list[int]) -> Hook:
        idx = sorted(set(hs))

        def hook(z: Tensor, hook: Any) -> Tensor:
            out = z.clone()
            if mode == "zero":
                out[:, :, idx] = 0
            elif means is not None:
                out[:, :, idx] = means[layer, idx].to(device=z.device, dtype=z.dtype)
            else:
                out[:, :, idx] = z[:, :, idx].mean((0, 1), keepdim=True).expand_as(z[:, :, idx])
            return out

        return hook

    fwd: FwdHooks = [
        (hook_name(layer, "z"), make(layer, hs)) for layer, hs in sorted(by_layer.items())
    ]
    norm = tuple(sorted({(layer, h) for layer, hs in by_layer.items() for h in hs}))
    return HeadAblation(model, norm, mode, fwd)
