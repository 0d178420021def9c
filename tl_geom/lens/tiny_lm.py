"""A tiny byte-level decoder with TransformerLens hook points and an optional HeadNorm.

For the pretraining study (spec: sinks.md, "Interventions" 3 and "Pretraining study").
It is our own small torch model rather than a ``TransformerBridge`` [ours]: HeadNorm's
gain is then an ordinary parameter of the model (trained, saved, counted), with no hook
holding state. It subclasses ``transformer_lens.HookedRootModule`` and uses the
HookedTransformer hook names, so every tl_geom measure and intervention runs on it:

    hook_embed, hook_pos_embed, blocks.{l}.hook_resid_pre / hook_attn_out /
    hook_resid_mid / hook_mlp_out / hook_resid_post, blocks.{l}.attn.hook_q / hook_k /
    hook_v / hook_attn_scores / hook_pattern / hook_z / hook_z_normed,
    blocks.{l}.mlp.hook_pre / hook_post

Architecture: learned absolute positions, pre-RMSNorm blocks, causal multi-head
attention, GELU MLP, untied unembedding. ``hook_z`` is the raw head output
``o = sum_j A_ij v_j``; with ``head_norm=True`` it is then replaced by

    o_hat = o / RMS(o) * g,   RMS(o) = sqrt(mean_d o_d^2 + eps),   g in R^{d_head}

(one gain shared by all heads of a layer), seen by ``hook_z_normed``, before ``W_O``.
Tokens are UTF-8 bytes 0..255 plus ``BOS = 256`` [ours].
"""

import math
from dataclasses import dataclass
from typing import Any

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from tl_geom._checks import check_count
from tl_geom.errors import TlGeomError

__all__ = ["BOS", "HeadNorm", "TinyLM", "TinyLMConfig", "encode_bytes"]

BOS = 256


def encode_bytes(text: str) -> Int[Tensor, " n"]:
    """UTF-8 bytes of ``text`` as token ids (0..255), without BOS."""
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)


@dataclass(frozen=True)
class TinyLMConfig:
    """Shape of a :class:`TinyLM`; ``d_model = n_heads * d_head``."""

    n_layers: int = 4
    n_heads: int = 4
    d_head: int = 16
    d_mlp: int = 256
    n_ctx: int = 64
    head_norm: bool = False
    eps: float = 1e-6
    d_vocab: int = BOS + 1
    positional_embedding_type: str = "standard"

    def __post_init__(self) -> None:
        for name in ("n_layers", "n_heads", "d_head", "d_mlp", "n_ctx"):
            check_count(name, getattr(self, name))
        if self.d_vocab != BOS + 1:
            raise TlGeomError(f"d_vocab={self.d_vocab}; the byte-level TinyLM has {BOS + 1}")
        if self.positional_embedding_type != "standard":
            raise TlGeomError("TinyLM uses learned absolute positions ('standard') only")

    @property
    def d_model(self) -> int:
        """Residual width."""
        return self.n_heads * self.d_head


class HeadNorm(nn.Module):
    """Head-wise RMSNorm ``o / RMS(o) * g`` with one gain ``g`` in R^{d_head} for all heads."""

    def __init__(self, d_head: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.ones(d_head))
        self.eps = eps

    def forward(self, z: Float[Tensor, "*lead head d_head"]) -> Float[Tensor, "*lead head d_head"]:
        """Normalise each head's output vector over its ``d_head`` dims."""
        rms = torch.sqrt(z.pow(2).mean(-1, keepdim=True) + self.eps)
        return z / rms * self.g


class _RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.w


class _Attention(nn.Module):
    def __init__(self, cfg: TinyLMConfig) -> None:
        super().__init__()
        h, d, m = cfg.n_heads, cfg.d_head, cfg.d_model
        self.W_Q, self.W_K, self.W_V = (nn.Parameter(torch.empty(h, m, d)) for _ in range(3))
        self.W_O = nn.Parameter(torch.empty(h, d, m))
        self.b_O = nn.Parameter(torch.zeros(m))
        for w in (self.W_Q, self.W_K, self.W_V, self.W_O):
            nn.init.normal_(w, std=1 / math.sqrt(m))
        self.head_norm = HeadNorm(d, cfg.eps) if cfg.head_norm else None
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()
        self.hook_attn_scores, self.hook_pattern = HookPoint(), HookPoint()
        self.hook_z, self.hook_z_normed = HookPoint(), HookPoint()
        self.register_buffer(
            "causal",
            torch.tril(torch.ones(cfg.n_ctx, cfg.n_ctx, dtype=torch.bool)),
            persistent=False,
        )

    def forward(self, x: Tensor) -> Tensor:
        q = self.hook_q(einops.einsum(x, self.W_Q, "b p m, h m d -> b p h d"))
        k = self.hook_k(einops.einsum(x, self.W_K, "b p m, h m d -> b p h d"))
        v = self.hook_v(einops.einsum(x, self.W_V, "b p m, h m d -> b p h d"))
        t = x.shape[1]
        scores = einops.einsum(q, k, "b q h d, b k h d -> b h q k") / math.sqrt(q.shape[-1])
        causal: Tensor = self.causal  # pyright: ignore[reportAssignmentType]
        mask = causal[:t, :t]
        scores = self.hook_attn_scores(scores.masked_fill(~mask, float("-inf")))
        pattern = self.hook_pattern(scores.softmax(-1))
        z = self.hook_z(einops.einsum(pattern, v, "b h q k, b k h d -> b q h d"))
        if self.head_norm is not None:
            z = self.head_norm(z)
        z = self.hook_z_normed(z)
        return einops.einsum(z, self.W_O, "b p h d, h d m -> b p m") + self.b_O


class _MLP(nn.Module):
    def __init__(self, cfg: TinyLMConfig) -> None:
        super().__init__()
        self.W_in = nn.Parameter(torch.randn(cfg.d_model, cfg.d_mlp) / math.sqrt(cfg.d_model))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.randn(cfg.d_mlp, cfg.d_model) / math.sqrt(cfg.d_mlp))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_pre, self.hook_post = HookPoint(), HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        pre = self.hook_pre(x @ self.W_in + self.b_in)
        return self.hook_post(nn.functional.gelu(pre)) @ self.W_out + self.b_out


class _Block(nn.Module):
    def __init__(self, cfg: TinyLMConfig) -> None:
        super().__init__()
        self.ln1, self.ln2 = _RMSNorm(cfg.d_model, cfg.eps), _RMSNorm(cfg.d_model, cfg.eps)
        self.attn, self.mlp = _Attention(cfg), _MLP(cfg)
        self.hook_resid_pre, self.hook_attn_out = HookPoint(), HookPoint()
        self.hook_resid_mid, self.hook_mlp_out = HookPoint(), HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        x = self.hook_resid_pre(x)
        x = self.hook_resid_mid(x + self.hook_attn_out(self.attn(self.ln1(x))))
        return self.hook_resid_post(x + self.hook_mlp_out(self.mlp(self.ln2(x))))


class TinyLM(HookedRootModule):
    """The tiny decoder; ``model(tokens)`` returns logits ``[batch, pos, d_vocab]``.

    ``W_O``, ``W_out``, ``b_out`` are stacked over layers as on HookedTransformer.
    """

    def __init__(self, cfg: TinyLMConfig, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.embed = nn.Parameter(torch.randn(cfg.d_vocab, cfg.d_model) * 0.02)
            self.pos_embed = nn.Parameter(torch.randn(cfg.n_ctx, cfg.d_model) * 0.02)
            self.blocks = nn.ModuleList([_Block(cfg) for _ in range(cfg.n_layers)])
            self.ln_final = _RMSNorm(cfg.d_model, cfg.eps)
            self.unembed = nn.Parameter(torch.randn(cfg.d_model, cfg.d_vocab) / cfg.d_model**0.5)
        self.hook_embed, self.hook_pos_embed = HookPoint(), HookPoint()
        self.setup()

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos vocab"]:
        """Logits of the next byte at every position."""
        t = tokens.shape[1]
        if t > self.cfg.n_ctx:
            raise TlGeomError(f"{t} tokens exceed n_ctx={self.cfg.n_ctx}")
        x = self.hook_embed(self.embed[tokens]) + self.hook_pos_embed(self.pos_embed[:t])
        for block in self.blocks:
            x = block(x)
        return self.ln_final(x) @ self.unembed

    def _stack(self, get: Any) -> Tensor:
        return torch.stack([get(b) for b in self.blocks])

    @property
    def W_O(self) -> Tensor:
        """``[layer, head, d_head, d_model]``."""
        return self._stack(lambda b: b.attn.W_O)

    @property
    def W_out(self) -> Tensor:
        """``[layer, d_mlp, d_model]``."""
        return self._stack(lambda b: b.mlp.W_out)

    @property
    def b_out(self) -> Tensor:
        """``[layer, d_model]``."""
        return self._stack(lambda b: b.mlp.b_out)
