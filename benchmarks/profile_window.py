"""Where each millisecond of one analysis window goes (prints a table, asserts nothing).

SmolLM2-135M, War and Peace window 1, final query, the ``analyze`` defaults (16 draws,
N = 1, 2, 4, ..., L/2). One forward captures every layer's final attention row and
values; then ``reduce_layer`` (what the ``sdpa`` backend runs inside the forward) is
timed per metric function over the 30 layers, median of ``--repeat`` runs. The rows
the diagnostics ask for (``imp0``) are slices of the captured row here, so the cost of
recomputing rows from q and k (``bench_backends.py``, "+ rows streamed") is not in it.

    .venv/bin/python benchmarks/profile_window.py [--ctx 1024,8192] [--repeat 3]
        [--threads 1] [--compile]
"""

import argparse
import collections
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import tl_geom.geometry.baseline as baseline
import tl_geom.geometry.kernels as kernels
import tl_geom.geometry.top_n as top_n
import tl_geom.jobs.window as window
from tl_geom.jobs.config import default_n
from tl_geom.lens.data import load_corpus, token_windows
from tl_geom.lens.sdpa import ATTN_NAME, load_fused_model

TIMED = (
    (window, "separability"),
    (window, "random_separability"),
    (window, "cosine_decay"),
    (window, "norm_stability"),
    (window, "sink_similarity"),
    (window, "head_curves"),
    (window, "attention_entropy"),
    (window, "sink_mass"),
    # parts of the two above (indented in the table): the baseline's counting passes and
    # the float64/exact recheck of flagged rows, of the baseline and of the top-N
    (baseline, "baseline_passes"),
    (baseline, "recheck"),
    (top_n, "recheck"),
)
FLAGS = [0, 0]  # baseline entries (row, draw, N) flagged for the recheck, and all of them
PARTS = {"baseline.baseline_passes", "baseline.recheck", "top_n.recheck"}


def capture(fused_model: Any, ctx: int) -> tuple[list[torch.Tensor], list[torch.Tensor], float]:
    """Final rows ``[H, L]`` and values ``[1, L, KV, d]`` of every layer; a plain forward's s."""
    text = load_corpus("war_and_peace")
    tokens = token_windows(fused_model.tokenizer, text, ctx=ctx, windows=2)[1:]
    alphas: list[torch.Tensor] = []
    values: list[torch.Tensor] = []

    def keep(_layer: int, lay: Any) -> None:
        alphas.append(lay.rows([ctx - 1])[0][:, 0].clone())
        values.append(lay.v.clone())

    with torch.no_grad(), fused_model.stream(range(30), keep):
        fused_model(tokens)
    fused_model.hf.set_attn_implementation("sdpa")
    try:
        t0 = time.perf_counter()
        with torch.no_grad():
            fused_model(tokens)
        plain = time.perf_counter() - t0
    finally:
        fused_model.hf.set_attn_implementation(ATTN_NAME)
    return alphas, values, plain


def profile(alphas: list[torch.Tensor], values: list[torch.Tensor], ctx: int, repeat: int):
    """Median ms per timed function and in total, over the 30 layers of one window."""
    acc: dict[str, float] = collections.defaultdict(float)
    originals = {(mod, name): getattr(mod, name) for mod, name in TIMED}

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            acc[name] += time.perf_counter() - t0
            if name == "baseline.baseline_passes":  # (fp, tp, flagged): count the flags
                FLAGS[0] += int(out[2].sum())
                FLAGS[1] += out[2].numel()
            return out

        return timed

    spec = window.WindowSpec(
        n=default_n(ctx), queries="last", draws=16, seed=0, causal=True, layers=tuple(range(30))
    )

    def run() -> None:
        for layer, (alpha, v) in enumerate(zip(alphas, values, strict=True)):
            rows = lambda idx, a=alpha: a.unsqueeze(1).expand(-1, len(list(idx)), -1)  # noqa: E731
            window.reduce_layer(rows, v, spec, layer)

    def label(mod: Any, name: str) -> str:
        return name if mod is window else f"{mod.__name__.rsplit('.', 1)[-1]}.{name}"

    for (mod, name), fn in originals.items():
        setattr(mod, name, wrap(label(mod, name), fn))
    try:
        run()  # warm-up (and compile, where enabled)
        runs: list[dict[str, float]] = []
        for _ in range(repeat):
            acc.clear()
            t0 = time.perf_counter()
            run()
            runs.append({**acc, "total": time.perf_counter() - t0})
    finally:
        for (mod, name), fn in originals.items():
            setattr(mod, name, fn)
    return {k: statistics.median(r[k] for r in runs) * 1e3 for k in runs[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ctx", default="1024,8192")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile", action="store_true", help="fused baseline kernel")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:  # absent before the fused kernel: the same table for an older checkout
        from tl_geom.geometry import fused

        fused.set_compiled(args.compile)
    except ImportError:
        print("no tl_geom.geometry.fused here: eager code of this checkout")
    model = load_fused_model("smollm2-135m")
    loops = "numba" if kernels.enabled(torch.zeros(1)) else "torch"
    print(
        f"torch {torch.__version__}, {args.threads} threads, compiled kernel {args.compile}, "
        f"counting loops {loops}"
    )
    for ctx in (int(c) for c in args.ctx.split(",")):
        alphas, values, plain = capture(model, ctx)
        FLAGS[:] = [0, 0]
        ms = profile(alphas, values, ctx, args.repeat)
        flagged, total = FLAGS
        print(f"\nL = {ctx}: plain SDPA forward {plain * 1e3:.0f} ms (one run)")
        print("| function (30 layers) | ms | share of the forward |\n|---|---:|---:|")
        for name, t in sorted(ms.items(), key=lambda kv: -kv[1]):
            shown = f"&nbsp;&nbsp;of which {name}" if name in PARTS else name
            print(f"| {shown} | {t:.1f} | {t / (plain * 1e3):.1%} |")
        if total:
            print(f"baseline entries flagged for the recheck: {flagged / total:.2%} of {total}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
