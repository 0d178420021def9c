"""TransformerLens integration: hook names, model shapes, and a streaming layer collector.

Hook names are the contract (DESIGN.md): the same strings work on ``TransformerBridge``
(TransformerLens 4.x, in compatibility mode, where they are aliases of canonical names
such as ``blocks.0.attn.v.hook_out``) and on ``HookedTransformer`` (3.x). Everything
here is duck-typed: a model needs ``cfg`` (``n_layers``, ``n_heads``, ``d_head``,
optionally ``n_key_value_heads``), ``hook_dict`` and the ``hooks(fwd_hooks=...)``
context manager, which both generations provide and which removes exactly the hooks
it added, also when the forward raises.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from tl_geom.errors import TlGeomError

__all__ = [
    "ATTN_KINDS",
    "BLOCK_KINDS",
    "ModelDims",
    "check_hook_points",
    "expand_kv",
    "hook_name",
    "is_causal",
    "model_device",
    "model_dims",
    "model_name",
    "normalize_layers",
    "stream_layers",
]

AttnKind = Literal["q", "k", "v", "z", "pattern", "attn_scores", "rot_q", "rot_k", "result"]
BlockKind = Literal["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"]
ATTN_KINDS: tuple[str, ...] = (
    "q",
    "k",
    "v",
    "z",
    "pattern",
    "attn_scores",
    "rot_q",
    "rot_k",
    "result",
)
BLOCK_KINDS: tuple[str, ...] = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")
MLP_KINDS: tuple[str, ...] = ("mlp_pre", "mlp_post")


def hook_name(layer: int, kind: str) -> str:
    """The TransformerLens hook name for ``kind`` in block ``layer``.

    Equal to TransformerLens's ``get_act_name(kind, layer)`` for every kind here (tested
    on 4.3 and, by ``make test-tl3``, 3.9); kept by hand because that function moved
    between the two (``utils`` in 3.x, ``utilities.components_utils`` in 4.x) and
    importing it would import TransformerLens with tl_geom.

    >>> hook_name(3, "v"), hook_name(0, "resid_pre"), hook_name(1, "mlp_post")
    ('blocks.3.attn.hook_v', 'blocks.0.hook_resid_pre', 'blocks.1.mlp.hook_post')
    """
    if kind in ATTN_KINDS:
        return f"blocks.{layer}.attn.hook_{kind}"
    if kind in BLOCK_KINDS:
        return f"blocks.{layer}.hook_{kind}"
    if kind in MLP_KINDS:
        return f"blocks.{layer}.mlp.hook_{kind.removeprefix('mlp_')}"
    known = ", ".join((*ATTN_KINDS, *BLOCK_KINDS, *MLP_KINDS))
    raise TlGeomError(f"unknown hook kind {kind!r}; known kinds: {known}")


@dataclass(frozen=True)
class ModelDims:
    """Attention shapes of a model, read from its ``cfg``."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    n_ctx: int
    d_vocab: int


def model_dims(model: Any) -> ModelDims:
    """Read the attention shapes from ``model.cfg`` (TransformerBridge or HookedTransformer)."""
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(cfg, "n_layers") or not hasattr(cfg, "n_heads"):
        raise TlGeomError(
            f"{type(model).__name__} is not a TransformerLens model (no cfg.n_layers/n_heads); "
            "pass a TransformerBridge (TransformerLens 4) or a HookedTransformer (3.x), "
            "e.g. tl_geom.load_model('smollm2-135m')"
        )
    n_heads = int(cfg.n_heads)
    n_kv = getattr(cfg, "n_key_value_heads", None)
    return ModelDims(
        n_layers=int(cfg.n_layers),
        n_heads=n_heads,
        n_kv_heads=int(n_kv) if n_kv else n_heads,
        d_head=int(cfg.d_head),
        n_ctx=int(getattr(cfg, "n_ctx", 0) or 0),
        d_vocab=int(getattr(cfg, "d_vocab", 0) or 0),
    )


def is_causal(model: Any) -> bool:
    """Whether query rows see only their past: ``model.cfg.attention_dir`` (the one place).

    TransformerLens configs, and :class:`~tl_geom.lens.sdpa.FusedConfig`, say
    ``"bidirectional"`` for encoders (BERT) and ``"causal"`` otherwise (the default).
    """
    return getattr(getattr(model, "cfg", None), "attention_dir", "causal") != "bidirectional"


def model_device(model: Any) -> torch.device:
    """The device of the model's weights (else ``cfg.device``; cpu for a model without either)."""
    try:
        return next(iter(model.parameters())).device
    except (StopIteration, AttributeError):
        cfg_device = getattr(getattr(model, "cfg", None), "device", None)
        return torch.device(cfg_device) if cfg_device is not None else torch.device("cpu")


def model_name(model: Any) -> str:
    """The model's own name, never just "TransformerBridge" where a better one is known.

    ``cfg.model_name``, else its transformers config's ``_name_or_path``, else the class.
    """
    name = getattr(getattr(model, "cfg", None), "model_name", None)
    if not name:
        hf = getattr(model, "hf", None) or getattr(model, "original_model", None) or model
        name = getattr(getattr(hf, "config", None), "_name_or_path", None)
    return str(name) if name else type(model).__name__


def normalize_layers(layers: int | Sequence[int] | None, n_layers: int) -> tuple[int, ...]:
    """Layers as a sorted tuple of non-negative indices; ``None`` means all.

    >>> normalize_layers(None, 3), normalize_layers(-1, 3), normalize_layers([2, 0], 3)
    ((0, 1, 2), (2,), (0, 2))
    """
    if layers is None:
        return tuple(range(n_layers))
    raw = [layers] if isinstance(layers, int) else list(layers)
    if not raw:
        raise TlGeomError("layers is empty; pass None for all layers")
    out: set[int] = set()
    for layer in raw:
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise TlGeomError(f"layers must be ints, got {layer!r}")
        if not -n_layers <= layer < n_layers:
            raise TlGeomError(f"layer {layer} out of range 0..{n_layers - 1} ({n_layers} layers)")
        out.add(layer % n_layers)
    return tuple(sorted(out))


def check_hook_points(model: Any, names: Sequence[str]) -> None:
    """Raise a TlGeomError naming the first hook point the model lacks."""
    hook_dict = getattr(model, "hook_dict", None)
    if hook_dict is None or not hasattr(model, "hooks"):
        raise TlGeomError(
            f"{type(model).__name__} has no TransformerLens hook points; tl_geom needs a "
            "TransformerBridge (TransformerLens 4) or a HookedTransformer (3.x)"
        )
    missing = [n for n in names if n not in hook_dict]
    if missing:
        raise TlGeomError(
            f"{type(model).__name__} lacks the hook point {missing[0]!r} "
            f"({len(missing)} of {len(names)} needed are missing). For a TransformerBridge, "
            "call model.enable_compatibility_mode() so that HookedTransformer names resolve."
        )


def expand_kv(
    v: Float[Tensor, "batch pos kv d"], n_heads: int
) -> Float[Tensor, "batch pos head d"]:
    """Expand GQA key/value heads to one per query head (query head h uses KV head h // g).

    A no-op for multi-head attention. Matches ``repeat_interleave`` over the head dim.
    """
    n_kv = v.shape[2]
    if n_kv == n_heads:
        return v
    if n_heads % n_kv:
        raise TlGeomError(f"{n_heads} query heads cannot share {n_kv} KV heads evenly")
    return einops.repeat(v, "b p kv d -> b p (kv g) d", g=n_heads // n_kv)


LayerFn = Callable[[int, dict[str, Tensor]], None]


@contextmanager
def stream_layers(
    model: Any, kinds: Sequence[str], layers: Sequence[int], fn: LayerFn
) -> Iterator[None]:
    """Hooks that hand each layer's tensors to ``fn(layer, {kind: tensor})`` and forget them.

    ``fn`` runs inside the forward as soon as every kind of that layer has fired, so a
    caller can reduce a layer (e.g. to a few query rows or to metrics) before the next
    layer runs: peak memory stays near a plain forward. The tensors are the live
    activations; ``fn`` must not edit them in place (clone what it keeps).
    The hooks are removed on exit, also when the forward raises.

    Example::

        with stream_layers(model, ["v", "pattern"], [0, 1], my_fn):
            model(tokens)
    """
    for kind in kinds:
        hook_name(0, kind)  # validates the kind
    pending: dict[int, dict[str, Tensor]] = {}

    def make_hook(layer: int, kind: str) -> Callable[[Tensor, Any], None]:
        def hook(act: Tensor, hook: Any) -> None:
            got = pending.setdefault(layer, {})
            got[kind] = act
            if len(got) == len(kinds):
                del pending[layer]
                fn(layer, got)

        return hook

    names = [hook_name(layer, kind) for layer in layers for kind in kinds]
    check_hook_points(model, names)
    fwd_hooks = [
        (hook_name(layer, kind), make_hook(layer, kind)) for layer in layers for kind in kinds
    ]
    try:
        with model.hooks(fwd_hooks=fwd_hooks):
            yield
    finally:
        pending.clear()


def count_hooks(model: Any) -> int:
    """Number of forward and backward hook functions attached to the model's hook points.

    Counts each distinct HookPoint once (aliases share one object).
    """
    seen: set[int] = set()
    total = 0
    for hp in model.hook_dict.values():
        if id(hp) in seen:
            continue
        seen.add(id(hp))
        total += len(hp._forward_hooks) + len(hp._backward_hooks)
    return total


def as_tokens(model: Any, tokens: Any) -> Tensor:
    """Validate ``tokens`` as ``[batch, pos]`` integer ids (a string is tokenized by the model)."""
    if isinstance(tokens, str):
        if getattr(model, "tokenizer", None) is None:
            raise TlGeomError("the model has no tokenizer; pass token ids [batch, pos]")
        tokens = model.to_tokens(tokens)
    if not isinstance(tokens, Tensor):
        raise TlGeomError(f"tokens must be a torch.Tensor or str, got {type(tokens).__name__}")
    if tokens.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise TlGeomError(f"tokens must be integer ids, got dtype {tokens.dtype}")
    if tokens.ndim == 1:
        tokens = tokens.unsqueeze(0)
    if tokens.ndim != 2 or tokens.shape[1] == 0:
        raise TlGeomError(
            f"tokens must be [batch, pos] (or [pos]), got shape {tuple(tokens.shape)}"
        )
    dims = model_dims(model)
    if tokens.numel() and (
        int(tokens.min()) < 0 or (dims.d_vocab and int(tokens.max()) >= dims.d_vocab)
    ):
        raise TlGeomError(
            f"token ids must lie in 0..{dims.d_vocab - 1}, "
            f"got {int(tokens.min())}..{int(tokens.max())}"
        )
    if dims.n_ctx and tokens.shape[1] > dims.n_ctx:
        raise TlGeomError(f"{tokens.shape[1]} tokens exceed the model's context n_ctx={dims.n_ctx}")
    return tokens.long()
