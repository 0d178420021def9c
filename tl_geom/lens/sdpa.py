"""The ``sdpa`` capture backend: the model runs fused attention, tl_geom computes only its rows.

A ``TransformerBridge`` re-implements attention eagerly so that ``hook_pattern`` fires:
every layer forms its whole ``[head, L, L]`` pattern even when the analysis needs one
query row (DESIGN.md, "Performance model": at L = 8192 one SmolLM2 layer takes 9.7 s and
+9.3 GiB eager, 0.96 s and +113 MiB fused). This backend instead loads the plain
transformers model (no bridge) and registers an attention function with transformers'
``AttentionInterface``. For each layer that function

1. recomputes only the requested query rows from the post-rotary ``query`` and ``key``
   it receives, with the module's own ``scaling``, its causal flag, the attention mask
   transformers built (padding, sliding window) and logit soft-capping where the
   architecture has it: ``alpha = softmax(mask(softcap(q_rows k^T * scaling)))``,
   in float32 (float64 when the model is float64);
2. hands those rows and the layer's value vectors to the caller's reducer, inside the
   forward, so nothing outlives its layer;
3. returns ``sdpa_attention_forward(...)``: the model's own output is the fused kernel's
   (for architectures that soft-cap logits, e.g. Gemma 2, which no fused kernel does,
   their own ``eager_attention_forward``).

Why this route and not the bridge's ``hook_rot_q``/``hook_rot_k``: those give q and k but
the bridge still forms the eager pattern, which is the cost to avoid. The price: the
``sdpa`` backend does not run TransformerLens hooks, so it does not compose with the
user's hooks or with ``tl_geom.lens.interventions``; use ``backend="hooks"`` for those.
Supported: transformers models whose attention goes through ``AttentionInterface``
(``_supports_attention_backend``; Llama, Mistral, Qwen, Gemma, GPT-2, BERT, ...). Any
other model is an error naming ``--backend hooks``.
"""

import contextvars
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from tl_geom.errors import TlGeomError

__all__ = [
    "ATTN_NAME",
    "FusedConfig",
    "FusedLayer",
    "FusedModel",
    "as_fused",
    "attention_rows",
    "fused_supported",
    "load_fused_model",
]

ATTN_NAME = "tl_geom_rows"

_ACTIVE: contextvars.ContextVar["_Collector | None"] = contextvars.ContextVar(
    "tl_geom_fused_collector", default=None
)


@dataclass(frozen=True)
class FusedConfig:
    """The ``cfg`` fields tl_geom reads (``hooks.model_dims``), from a transformers config."""

    n_layers: int
    n_heads: int
    n_key_value_heads: int
    d_head: int
    n_ctx: int
    d_vocab: int
    attention_dir: str

    @classmethod
    def from_hf(cls, config: Any) -> "FusedConfig":
        """Read the attention shapes of a transformers ``PretrainedConfig``."""
        n_heads = int(config.num_attention_heads)
        d_head = getattr(config, "head_dim", None) or config.hidden_size // n_heads
        from tl_geom.lens.models import is_encoder_config

        encoder = is_encoder_config(config)
        return cls(
            n_layers=int(config.num_hidden_layers),
            n_heads=n_heads,
            n_key_value_heads=int(getattr(config, "num_key_value_heads", None) or n_heads),
            d_head=int(d_head),
            n_ctx=int(getattr(config, "max_position_embeddings", 0) or 0),
            d_vocab=int(getattr(config, "vocab_size", 0) or 0),
            attention_dir="bidirectional" if encoder else "causal",
        )


def attention_rows(
    query: Float[Tensor, "batch head q d"],
    key: Float[Tensor, "batch kv k d"],
    rows: Sequence[int],
    *,
    scaling: float | None,
    attention_mask: Tensor | None,
    causal: bool,
    softcap: float | None = None,
) -> Float[Tensor, "batch head r k"]:
    """Attention weights of the query ``rows`` from post-rotary q and k.

    alpha = softmax(mask(softcap(q_rows k^T * scaling))),  softcap(x) = c tanh(x / c).
    GQA without expanding k: query head h uses KV head ``h // (H / KV)``. ``attention_mask``
    is what transformers passes to the attention function: boolean (True = attend) or
    additive float, ``[batch, 1 or head, q, k]``; when it is None and ``causal`` holds,
    row p sees keys ``0..p`` (transformers skips the mask when ``is_causal`` suffices).
    Computed in float32 (float64 for a float64 model).
    """
    n_heads, n_kv = query.shape[1], key.shape[1]
    dtype = torch.float64 if query.dtype == torch.float64 else torch.float32
    idx = torch.tensor(list(rows), device=query.device)
    scale = scaling if scaling is not None else 1.0 / math.sqrt(query.shape[-1])
    q = einops.rearrange(
        query[:, :, idx].to(dtype), "b (kv g) r d -> b kv (g r) d", kv=n_kv, g=n_heads // n_kv
    )
    scores = einops.rearrange(
        q @ key.to(dtype).transpose(-1, -2) * scale,
        "b kv (g r) k -> b (kv g) r k",
        g=n_heads // n_kv,
    )
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        mask = attention_mask[:, :, idx]
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask.to(dtype)
    elif causal:
        future = torch.arange(key.shape[2], device=key.device) > idx.unsqueeze(-1)
        scores = scores.masked_fill(future, float("-inf"))
    return torch.softmax(scores, dim=-1)


@dataclass(frozen=True)
class FusedLayer:
    """One layer's attention as the sdpa backend streams it (live only during the call).

    Attributes:
        rows: ``rows(positions) -> [batch, head, len(positions), L]`` attention weights,
            recomputed from that layer's q and k on demand (:func:`attention_rows`).
        v: ``[batch, L, kv_head, d_head]`` value vectors (KV heads, not expanded).
    """

    rows: Callable[[Sequence[int]], Tensor]
    v: Tensor


FusedFn = Callable[[int, FusedLayer], None]


@dataclass
class _Collector:
    layers: frozenset[int]
    fn: FusedFn
    calls: int = 0


def _rows_attention(
    module: torch.nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    **kwargs: Any,
) -> tuple[Tensor, Any]:
    """The registered attention function: stream the rows, then run the fused kernel."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    is_causal = kwargs.get("is_causal")
    causal = bool(getattr(module, "is_causal", True) if is_causal is None else is_causal)
    collector = _ACTIVE.get()
    if collector is not None:
        layer = getattr(module, "layer_idx", None)
        if layer is None:  # modules without layer_idx: call order within the forward
            layer = collector.calls
        collector.calls += 1
        if layer in collector.layers:
            q, k = query.detach(), key.detach()

            def rows(positions: Sequence[int]) -> Tensor:
                return attention_rows(
                    q,
                    k,
                    positions,
                    scaling=kwargs.get("scaling"),
                    attention_mask=attention_mask,
                    causal=causal,
                    softcap=kwargs.get("softcap"),
                )

            v = einops.rearrange(value.detach(), "b kv k d -> b k kv d")
            collector.fn(int(layer), FusedLayer(rows, v))
    if kwargs.get("softcap") is not None:
        # No fused kernel soft-caps logits: the output comes from the architecture's own
        # eager attention (as with attn_implementation="eager"), only the rows stream.
        eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
        if eager is None:
            raise TlGeomError(
                f"{type(module).__name__} soft-caps its attention logits and its module has no "
                "eager_attention_forward; use --backend hooks (backend='hooks')"
            )
        mask = _additive_mask(attention_mask, query, key, causal)
        return eager(module, query, key, value, mask, **kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _additive_mask(mask: Tensor | None, query: Tensor, key: Tensor, causal: bool) -> Tensor | None:
    """The mask as the eager attention functions take it: additive float, 0 or the dtype min.

    The sdpa mask builder gives a boolean mask (True = attend) or None when ``is_causal``
    suffices; eager functions add the mask to the scores, so both are converted.
    """
    low = torch.finfo(query.dtype).min
    if mask is None:
        if not causal:
            return None
        q_len, k_len = query.shape[2], key.shape[2]
        pos_q = torch.arange(k_len - q_len, k_len, device=query.device)
        mask = torch.arange(k_len, device=query.device) <= pos_q.unsqueeze(-1)
        mask = mask.view(1, 1, q_len, k_len)
    if mask.dtype == torch.bool:
        zero = torch.zeros((), dtype=query.dtype, device=query.device)
        return torch.where(mask, zero, torch.tensor(low, dtype=query.dtype, device=query.device))
    return mask


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTN_NAME, _rows_attention)
    AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)


class FusedModel:
    """A plain transformers model (no TransformerLens bridge) for the ``sdpa`` backend.

    Quacks like a TransformerLens model where tl_geom needs it (``cfg``, ``tokenizer``,
    ``parameters()``, calling it on ``[batch, pos]`` tokens); runs the bare model (no LM
    head: the analysis needs no logits). Stream attention rows with :meth:`stream`.

    Attributes:
        hf: the transformers model (its base model, e.g. ``LlamaModel``).
        tokenizer: its tokenizer (or None).
        cfg: a :class:`FusedConfig`.
    """

    def __init__(self, hf: Any, tokenizer: Any = None) -> None:
        if not getattr(hf, "_supports_attention_backend", False):
            raise TlGeomError(
                f"{type(hf).__name__} does not route attention through transformers' "
                "AttentionInterface, so the sdpa backend cannot serve it; use --backend hooks "
                "(backend='hooks')"
            )
        _register()
        self.hf = getattr(hf, "base_model", hf)
        self.tokenizer = tokenizer
        self.cfg = FusedConfig.from_hf(hf.config)
        self.hf.set_attn_implementation(ATTN_NAME)

    def __repr__(self) -> str:
        c = self.cfg
        return (
            f"FusedModel({type(self.hf).__name__}, {c.n_layers} layers, {c.n_heads} heads, "
            f"{c.n_key_value_heads} KV heads, d_head {c.d_head})"
        )

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """The model's parameters (for its device and dtype)."""
        return self.hf.parameters()

    def to_tokens(self, text: str) -> Tensor:
        """``[1, pos]`` ids of ``text`` opening with BOS/[CLS], as TransformerLens does."""
        from tl_geom.lens.data import start_token

        if self.tokenizer is None:
            raise TlGeomError("the model has no tokenizer; pass token ids [batch, pos]")
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        bos = start_token(self.tokenizer)
        return torch.tensor([([bos] if bos is not None else []) + list(ids)], dtype=torch.long)

    def __call__(self, tokens: Tensor, attention_mask: Tensor | None = None) -> Any:
        """Run the bare model on ``[batch, pos]`` token ids (no LM head)."""
        return self.hf(input_ids=tokens, attention_mask=attention_mask, use_cache=False)

    @contextmanager
    def stream(self, layers: Sequence[int], fn: FusedFn) -> Iterator[None]:
        """Call ``fn(layer, FusedLayer)`` inside each chosen layer's attention.

        ``FusedLayer.rows(positions)`` recomputes those query rows of the layer's
        attention from its q and k; ``FusedLayer.v`` holds its values. Both are live
        only during the call. The model's own attention output is the fused kernel's.
        """
        token = _ACTIVE.set(_Collector(layers=frozenset(layers), fn=fn))
        try:
            yield
        finally:
            _ACTIVE.reset(token)


def as_fused(model: Any) -> FusedModel:
    """``model`` as a :class:`FusedModel`: one already, or a transformers ``PreTrainedModel``.

    Raises:
        TlGeomError: a TransformerBridge/HookedTransformer (their attention is eager by
            construction) or any other object, naming ``backend="hooks"``.
    """
    if isinstance(model, FusedModel):
        return model
    if hasattr(model, "config") and hasattr(model, "set_attn_implementation"):
        return FusedModel(model, getattr(model, "tokenizer", None))
    raise TlGeomError(
        f"backend='sdpa' needs a model from tl_geom.load_fused_model(...) or a transformers "
        f"PreTrainedModel, got {type(model).__name__} (a TransformerBridge re-implements "
        "attention eagerly); use backend='hooks' (--backend hooks) for it"
    )


def fused_supported(path: Path, *, trust_remote_code: bool = False) -> bool:
    """Whether the transformers model in ``path`` routes attention through AttentionInterface."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    config = AutoConfig.from_pretrained(
        path, local_files_only=True, trust_remote_code=trust_remote_code
    )
    try:
        cls = MODEL_MAPPING[type(config)]
    except KeyError:
        return False
    return bool(getattr(cls, "_supports_attention_backend", False))


def load_fused_model(
    name_or_path: str | Path = "smollm2-135m",
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
) -> FusedModel:
    """Load a model offline as a :class:`FusedModel` (the ``sdpa`` backend).

    Same names and safety as :func:`tl_geom.load_model` (shipped names, local
    directories, cached hub ids; safetensors or ``weights_only`` loading through
    transformers, no remote code unless asked), but the bare transformers model with
    fused attention instead of a TransformerBridge.
    """
    from transformers import AutoModel, AutoTokenizer

    from tl_geom.lens.models import quiet_loading, resolve_model

    path: Path = resolve_model(name_or_path)
    _register()
    with quiet_loading():
        hf = AutoModel.from_pretrained(
            path,
            dtype=dtype,
            attn_implementation=ATTN_NAME,
            local_files_only=True,
            trust_remote_code=trust_remote_code,
        )
    tokenizer = AutoTokenizer.from_pretrained(
        path, local_files_only=True, trust_remote_code=trust_remote_code
    )
    hf.to(device or "cpu").eval()
    return FusedModel(hf, tokenizer)
