"""The softmax-limits paper's experiments of ``tl-geom reproduce`` (arXiv 2508.17821).

Judged by :mod:`tl_geom.normalization.claims`.
"""

import math
from typing import Any

import torch

from tl_geom.app.budget import Budget
from tl_geom.app.geometry_experiments import Findings
from tl_geom.lens.capture import capture_attention
from tl_geom.lens.data import load_corpus, token_windows
from tl_geom.lens.rows import backend_of
from tl_geom.normalization import claims as nc
from tl_geom.normalization.softmax_bounds import gradient_sensitivity
from tl_geom.normalization.tables import (
    critical_n_vs_length,
    distance_vs_length,
    distance_vs_n,
    distinguishability_vs_n,
)

__all__ = ["normalization_experiment"]


def normalization_experiment(model: Any, corpus: str, b: Budget) -> Findings:
    """Final-query rows of ``norm_windows`` windows at L = ``norm_ctx``, all layers and heads.

    Gradient sensitivity uses the rows' own logits: ``z = log alpha`` equals the model's
    scores up to a per-row constant, which softmax ignores [ours] (floored at the
    smallest normal float32 where a weight underflowed); ``grad_rows`` evenly spaced rows.
    """
    tokens = token_windows(
        model.tokenizer, load_corpus(corpus), ctx=b.norm_ctx, windows=b.norm_windows
    )
    cap = capture_attention(model, tokens, queries=-1, backend=backend_of(model))
    alpha = cap.pattern[..., 0, :].double()  # [b, layer, head, L]
    alpha = alpha / alpha.sum(-1, keepdim=True)
    values = cap.values.double()
    top_len = b.norm_ctx
    lengths = [2**k for k in range(5, int(math.log2(top_len)) + 1)]
    if lengths[-1] != top_len:
        lengths.append(top_len)
    src = (alpha, values)
    by_len = distance_vs_length(src, lengths, n=5, draws=b.norm_draws, seed=b.seed)
    ns = [n for n in (1, 5, 10, 20, 50, 100, 200) if n < top_len]
    by_n = distance_vs_n(alpha, values, ns, draws=b.norm_draws, seed=b.seed)
    grid = sorted({max(1, round(2 ** (k / 2))) for k in range(0, 2 * int(math.log2(top_len)))})
    crit = critical_n_vs_length(src, [x for x in lengths if x >= 64], grid, seed=b.seed)
    ratio = distinguishability_vs_n(
        alpha, values, [2**k for k in range(int(math.log2(top_len // 2)) + 1)]
    )
    rows = alpha.reshape(-1, alpha.shape[-1])
    pick = torch.linspace(0, rows.shape[0] - 1, min(b.grad_rows, rows.shape[0])).round().long()
    logits = rows[pick.unique()].clamp_min(torch.finfo(torch.float32).tiny).log()
    grad = gradient_sensitivity(logits, b.temperatures, b.eps, draws=4, seed=b.seed)
    return [
        ("distance_length", nc.claim_distance_length(by_len)),
        ("distance_plateau", nc.claim_distance_plateau(by_n, top_len)),
        ("critical_n", nc.claim_critical_n(crit)),
        ("recall_saturation", nc.claim_recall_saturation(ratio)),
        ("gradient_sensitivity", nc.claim_gradient_sensitivity(grad)),
    ]
