"""The softmax-limits paper's experiments of ``tl-geom reproduce`` (arXiv 2508.17821).

Judged by :mod:`tl_geom.normalization.claims`.
"""

import math
from typing import Any

import einops
import pandas as pd
import torch

from tl_geom.app.budget import Budget
from tl_geom.app.geometry_experiments import Findings
from tl_geom.lens.capture import capture_attention
from tl_geom.lens.data import load_corpus, token_windows
from tl_geom.lens.residual import residual_inputs
from tl_geom.lens.rows import backend_of
from tl_geom.normalization import claims as nc
from tl_geom.normalization.critical import critical_n_by_head
from tl_geom.normalization.distinguishability import (
    cumulative_distance,
    distinguishability,
    random_cumulative_distance,
)
from tl_geom.normalization.softmax_bounds import gradient_sensitivity, saturation_share
from tl_geom.normalization.tables import (
    distance_frame,
    distinguishability_frame,
    distinguishability_vs_n,
)

__all__ = ["normalization_experiment", "per_length_tables"]


def _grid(length: int) -> list[int]:
    """N = 1 and the half powers of two below L (1, 2, 3, 4, 6, 8, 11, 16, 23, ...)."""
    top = 2 * int(math.log2(length))
    return sorted({max(1, round(2 ** (k / 2))) for k in range(top)} - {length})


def per_length_tables(
    model: Any, corpus: str, lengths: list[int], b: Budget
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """d~_5 against L and the per-head KS critical N, from real L-token windows.

    At every L the same ``ks_windows`` corpus windows of L tokens (not truncations of
    longer ones), final query, every layer and head; run in chunks of ``ks_chunk``
    windows. ``d~_5``: mean over windows and heads of the top-5 and the random-5 (mean
    of ``norm_draws`` draws) cumulative distance; ``d_top_by_window``: per window, the
    top-5 ``d~_5`` averaged over its heads (the units of the slope's interval). KS
    (L >= 64): per head, windows as samples, one random subset per window
    (:func:`critical_n_by_head`).
    """
    len_rows: list[dict[str, Any]] = []
    crit: list[pd.DataFrame] = []
    for length in lengths:
        tokens = token_windows(
            model.tokenizer, load_corpus(corpus), ctx=length, windows=b.ks_windows
        )
        grid = _grid(length)
        tops, rnds, d5, r5 = [], [], [], []
        for chunk in tokens.split(b.ks_chunk):
            cap = capture_attention(model, chunk, queries=-1, backend=backend_of(model))
            a = cap.pattern[..., 0, :].double()
            a = a / a.sum(-1, keepdim=True)
            v = cap.values.double()
            tops.append(cumulative_distance(a, v, grid))
            rnds.append(
                random_cumulative_distance(a, v, grid, draws=1, seed=b.seed, reduce="none")[
                    ..., 0, :
                ]
            )
            d5.append(cumulative_distance(a, v, [5]))
            r5.append(random_cumulative_distance(a, v, [5], draws=b.norm_draws, seed=b.seed))
        top5, rnd5 = torch.cat(d5), torch.cat(r5)
        len_rows.append({"length": length, "n": 5, "d_top": float(top5.mean()),
                         "d_top_std": float(top5.std()), "d_random": float(rnd5.mean()),
                         "d_random_std": float(rnd5.std()), "windows": b.ks_windows,
                         "d_top_by_window": top5.flatten(1).mean(1).tolist()})  # fmt: skip
        if length >= 64:
            res = critical_n_by_head(torch.cat(tops), torch.cat(rnds), grid)
            crit.append(res.to_frame(length))
    return pd.DataFrame(len_rows), pd.concat(crit, ignore_index=True)


def normalization_experiment(model: Any, corpus: str, b: Budget) -> Findings:
    """Final-query rows of ``norm_windows`` windows at L = ``norm_ctx``, all layers and heads.

    ``N_s / N`` twice, side by side: on the value vectors (the library's default, the
    verdict's) and on the residual-stream inputs ``hook_resid_pre`` of the same rows
    (normalization.md's option, :func:`~tl_geom.lens.residual.residual_inputs`).
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
    by_len, crit = per_length_tables(model, corpus, lengths, b)
    ns = [n for n in (1, 5, 10, 20, 50, 100, 200) if n < top_len]
    top = cumulative_distance(alpha, values, ns)  # [b, layer, head, N]
    rnd = random_cumulative_distance(alpha, values, ns, draws=b.norm_draws, seed=b.seed)
    by_n = distance_frame(top, rnd, ns)
    ratio_grid = [2**k for k in range(int(math.log2(top_len // 2)) + 1)]
    by_row = distinguishability(alpha, values, ratio_grid)  # [b, layer, head, N]
    ratio = distinguishability_frame(by_row, ratio_grid)
    stream = residual_inputs(model, tokens).double()  # [b, layer, L, d_model]
    resid = distinguishability_vs_n(
        alpha.transpose(0, 1), einops.rearrange(stream, "b l k d -> l b 1 k d"), ratio_grid
    )
    ratio["ns_over_n_resid"] = resid["ns_over_n"].to_numpy()
    ratio["ns_over_n_resid_std"] = resid["ns_over_n_std"].to_numpy()
    # per head (mean over the windows): the units of the plateau's and saturation's intervals
    d_heads = top.mean(0).flatten(0, 1).cpu().numpy()
    r_heads = by_row.mean(0).flatten(0, 1).cpu().numpy()
    rows = alpha.reshape(-1, alpha.shape[-1])
    pick = torch.linspace(0, rows.shape[0] - 1, min(b.grad_rows, rows.shape[0])).round().long()
    logits = rows[pick.unique()].clamp_min(torch.finfo(torch.float32).tiny).log()
    grad = gradient_sensitivity(logits, b.temperatures, b.eps, draws=4, seed=b.seed, by_row=True)
    saturated = saturation_share(rows.clamp_min(torch.finfo(torch.float32).tiny).log())
    return [
        ("distance_length", nc.claim_distance_length(by_len)),
        ("distance_plateau", nc.claim_distance_plateau(by_n, top_len, d_heads)),
        ("critical_n", nc.claim_critical_n(crit)),
        ("recall_saturation", nc.claim_recall_saturation(ratio, r_heads)),
        ("gradient_sensitivity", nc.claim_gradient_sensitivity(grad, saturated)),
    ]
