"""Why the sink is there: variance discrepancy, W_O gain alignment, super neurons.

Spec: sinks.md, "Measures". Same conventions as ``tl_geom.sinks.measures``: one forward under
``torch.no_grad()``, each layer reduced inside its hook, frozen results with
``to_frame()``.

    variance_discrepancy   variance of hook_z (head outputs before W_O) by position
    gain_alignment         Kendall tau of the W_O row gain vs the hook_z std per dim
    super_neurons          act[n] * W_out[n, dim] at the first token, per layer
"""

from dataclasses import dataclass
from typing import Any, Literal

import einops
import pandas as pd
import torch
from torch import Tensor

from tl_geom.errors import TlGeomError
from tl_geom.lens.hooks import as_tokens, model_dims
from tl_geom.lens.per_layer import Layers, per_layer
from tl_geom.sinks import sink_math as sm
from tl_geom.sinks.measures import tidy

__all__ = [
    "GainAlignment",
    "SuperNeurons",
    "VarianceDiscrepancy",
    "gain_alignment",
    "super_neurons",
    "variance_discrepancy",
]


# --- why it is there --------------------------------------------------------------------


@dataclass(frozen=True)
class VarianceDiscrepancy:
    """Variance of the head outputs by position, ``variance``: ``[layer, pos]``.

    ``over="dims"``: ``mean_{batch, head} var_d(o)``; ``over="samples"``:
    ``mean_{head, d} var_batch(o)``. ``per_sample``: ``[batch, layer, pos]``, each
    sample's share, whose mean over the batch is ``variance``: ``mean_head var_d(o_b)``
    or ``mean_{head, d} (o_b - mean_batch o)^2`` (the units of a bootstrap over samples).
    """

    variance: Tensor
    layers: tuple[int, ...]
    over: str
    per_sample: Tensor

    @property
    def first_over_rest(self) -> Tensor:
        """``var(position 0) / mean var(positions 1..)`` per layer: ``[layer]``."""
        return self.variance[:, 0] / self.variance[:, 1:].mean(-1)

    def to_frame(self) -> pd.DataFrame:
        """Columns ``layer, position, variance``."""
        df = tidy(["layer", "position"], variance=self.variance)
        df["layer"] = [self.layers[i] for i in df["layer"]]
        return df


def variance_discrepancy(
    model: Any,
    tokens: Tensor | None = None,
    layers: Layers = None,
    *,
    length: int = 64,
    samples: int = 32,
    seed: int = 0,
    over: Literal["dims", "samples"] = "dims",
) -> VarianceDiscrepancy:
    """Variance of the attention output (``hook_z``, before ``W_O``) per position.

    On random tokens (uniform over the vocabulary, ``samples x length``, seeded) unless
    ``tokens`` are given. ``over="dims"`` [ours, the default] is the variance of each
    head's output vector over its ``d_head`` dims, the quantity ``amplify_variance``
    scales by ``lam^2``; ``over="samples"`` is the variance of each dim across samples.
    Causal aggregation makes position 0 the highest (spec: sinks.md, "Measures").
    """
    if over not in ("dims", "samples"):
        raise TlGeomError(f"over={over!r}; expected 'dims' or 'samples'")
    if tokens is None:
        dims = model_dims(model)
        if length < 2 or samples < 1 or (over == "samples" and samples < 2):
            raise TlGeomError(f"need length >= 2 and samples >= 2, got {length}, {samples}")
        gen = torch.Generator().manual_seed(seed)
        tokens = torch.randint(0, dims.d_vocab, (samples, length), generator=gen)

    def reduce(layer: int, acts: dict[str, Tensor]) -> Tensor:
        z = acts["z"].double()  # [b, pos, head, d]
        if over == "dims":
            return sm.variance_over_dims(z).mean(2)
        return (z - z.mean(0)).square().mean((-2, -1))

    ids, per = per_layer(model, tokens, ["z"], layers, reduce, dim=1)  # [b, layer, pos]
    return VarianceDiscrepancy(per.mean(0), ids, over, per)


@dataclass(frozen=True)
class GainAlignment:
    """Kendall tau per head between the ``W_O`` gain and the input std over ``d_head``.

    Attributes:
        tau: ``[layer, head]``.
        gain: ``||W_O[l, h, j, :]||_2`` per dim, ``[layer, head, d_head]``.
        input_std: std of ``hook_z[..., h, j]`` over batch and positions, same shape.
    """

    tau: Tensor
    gain: Tensor
    input_std: Tensor
    layers: tuple[int, ...]

    @property
    def mean_tau(self) -> float:
        """Mean tau over heads (nan heads left out)."""
        return float(self.tau.nanmean())

    def to_frame(self) -> pd.DataFrame:
        """Columns ``layer, head, tau``."""
        df = tidy(["layer", "head"], tau=self.tau)
        df["layer"] = [self.layers[i] for i in df["layer"]]
        return df


def gain_alignment(model: Any, tokens: Tensor | str, layers: Layers = None) -> GainAlignment:
    """Gain alignment: Kendall tau of the per-dimension ``W_O`` gain vs the input std.

    Per head and dim ``j`` of its output: gain ``||W_O[h, j, :]||_2`` (how much ``W_O``
    amplifies that input dim) and the std of ``o_j`` over all samples and positions
    (population) [ours: the spec leaves both definitions open]. Paper: tau ~ 0.32.
    """

    def reduce(layer: int, acts: dict[str, Tensor]) -> Tensor:
        return einops.rearrange(acts["z"].double(), "b p h d -> (b p) h d").std(0, unbiased=False)

    ids, std = per_layer(model, tokens, ["z"], layers, reduce, dim=0)  # [layer, head, d]
    w_o = model.W_O.detach()[list(ids)].double()  # [layer, head, d_head, d_model]
    gain = w_o.norm(dim=-1)
    return GainAlignment(sm.kendall_tau(gain, std), gain, std, ids)


@dataclass(frozen=True)
class SuperNeurons:
    """Per-neuron writes to the massive dimension at one position.

    Attributes:
        contributions: ``act[n] * W_out[n, dim]`` per layer and neuron, mean over the
            batch, ``[layer, neuron]``.
        mlp_write: the MLP's whole write to ``dim`` there (``sum_n c_n + b_out[dim]``).
        dim, position: the residual dimension and token position studied.
        sample_contributions, sample_write: the same per sample, ``[batch, layer,
            neuron]`` and ``[batch, layer]`` (their batch means are the two above).
    """

    contributions: Tensor
    mlp_write: Tensor
    dim: int
    position: int
    layers: tuple[int, ...]
    sample_contributions: Tensor
    sample_write: Tensor

    def top(self, k: int = 5) -> pd.DataFrame:
        """The ``k`` largest ``|contribution|`` over all layers and neurons."""
        return self.to_frame().nlargest(k, "abs_contribution").reset_index(drop=True)

    def to_frame(self) -> pd.DataFrame:
        """Columns ``layer, neuron, contribution, abs_contribution, share`` (of mlp_write)."""
        share = self.contributions / self.mlp_write.unsqueeze(-1)
        df = tidy(
            ["layer", "neuron"],
            contribution=self.contributions,
            abs_contribution=self.contributions.abs(),
            share=share,
        )
        df["layer"] = [self.layers[i] for i in df["layer"]]
        return df


def super_neurons(
    model: Any,
    tokens: Tensor | str,
    layers: Layers = None,
    *,
    dim: int | None = None,
    position: int = 0,
) -> SuperNeurons:
    """Attribute the massive dimension to MLP neurons: ``c_n = act[n] * W_out[n, dim]``.

    ``act = hook_post`` of the MLP (the input of its down projection) at ``position``.
    ``dim=None`` picks the dimension of the largest batch-mean ``|hook_resid_post|`` at
    ``position`` over the measured layers [ours]. Paper: Llama-2-7B layer 1, neuron
    7890 -> dimension 2533.
    """

    def reduce(layer: int, acts: dict[str, Tensor]) -> Tensor:
        post = acts["mlp_post"][:, position].double()  # [b, n]
        h = acts["resid_post"][:, position].double()  # [b, d_model]
        return torch.cat([post, h], -1)

    n_ctx = as_tokens(model, tokens).shape[1]
    if not 0 <= position < n_ctx:
        raise TlGeomError(f"position={position} out of range 0..{n_ctx - 1}")
    ids, both = per_layer(model, tokens, ["mlp_post", "resid_post"], layers, reduce)
    w_out = model.W_out.detach()[list(ids)].double()  # [layer, d_mlp, d_model]
    d_mlp, d_model = w_out.shape[1:]
    try:
        b_out = model.b_out.detach()[list(ids)].double()
    except AttributeError:  # bias-free MLPs (Llama): the bridge exposes no b_out
        b_out = torch.zeros(len(ids), d_model, dtype=torch.float64)
    act, h = both[..., :d_mlp], both[..., d_mlp:]
    if dim is None:
        dim = int(h.abs().mean(0).amax(0).argmax())
    elif not 0 <= dim < d_model:
        raise TlGeomError(f"dim={dim} out of range 0..{d_model - 1}")
    per = einops.einsum(act, w_out[..., dim], "b l n, l n -> b l n")
    contrib = per.mean(0)
    write = contrib.sum(-1) + b_out[:, dim]
    return SuperNeurons(contrib, write, dim, position, ids, per, per.sum(-1) + b_out[:, dim])
