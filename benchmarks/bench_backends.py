"""The two capture backends on SmolLM2-135M vs a plain forward (prints figures, asserts nothing).

Side by side in one run, per context length L (War and Peace window 1, final query):

  a. a plain forward of the bare transformers model with SDPA attention (no LM head);
  b. ``run_window`` through the ``sdpa`` backend (``FusedModel``): fused attention, the
     final row recomputed from q and k, every metric of ``tl-geom analyze``;
  c. the same forward (a) with the rows streamed to a no-op reducer: the cost of the
     backend alone, without the metrics;
  d. ``run_window`` through the ``hooks`` backend (TransformerBridge, eager attention),
     skipped at L above ``--hooks-max`` (at 8192 it takes minutes);
  e. (b) with ``draws = 0``: every metric but the random baseline;
  f. (b) with ``queries = "all"``: all-query maps (chunked, float64) and the baseline on
     16 rows, once, at L up to ``--all-max``;
  g. (b) and (f) with the torch counting passes instead of numba's fused loops
     (``geometry/kernels.py``; only where numba is installed): what the loops save.

Then the peak RSS of one ``sdpa`` window at ``--long-ctx`` in a fresh process
(``getrusage`` max RSS, model load included). Device: cuda when available and
``--device cuda``; otherwise cpu (this says so).

    .venv/bin/python benchmarks/bench_backends.py [--ctx 1024,8192] [--hooks-max 1024]
        [--all-max 1024] [--repeat 3] [--device cpu] [--skip-long]
"""

import argparse
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from tl_geom.geometry import kernels
from tl_geom.jobs.config import default_n
from tl_geom.jobs.window import WindowSpec, run_window
from tl_geom.lens.data import load_corpus, token_windows
from tl_geom.lens.hooks import model_dims
from tl_geom.lens.models import load_model
from tl_geom.lens.sdpa import ATTN_NAME, load_fused_model

MARK = "BENCH_RESULT "


def spec_for(model: Any, ctx: int) -> WindowSpec:
    dims = model_dims(model)
    return WindowSpec(
        n=default_n(ctx),
        queries="last",
        draws=16,
        seed=0,
        causal=True,
        layers=tuple(range(dims.n_layers)),
    )


def timed(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median seconds of each fn, run round-robin (a, b, c, a, b, c, ...) after a warm-up.

    Interleaving keeps a change in the machine's load from landing on one variant only:
    on a shared machine the ratios are what to read, not the seconds.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeat):
        for name, fn in fns.items():
            gc.collect()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def child(ctx: int, device: str) -> None:
    fused = load_fused_model("smollm2-135m", device=device)
    tokens = token_windows(fused.tokenizer, load_corpus("war_and_peace"), ctx=ctx, windows=2)[1:]
    t0 = time.perf_counter()
    run_window(fused, tokens, spec_for(fused, ctx), 1)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB
    print(MARK + json.dumps({"ctx": ctx, "wall_s": wall, "peak_rss_gib": rss}), flush=True)


def measure(
    fused: Any, bridge: Any | None, tokens: torch.Tensor, rep: int, all_queries: bool
) -> dict[str, float]:
    """Median seconds of every variant (see the module docstring), keyed by column."""
    ctx = tokens.shape[1]
    spec = spec_for(fused, ctx)

    def plain() -> None:
        fused.hf.set_attn_implementation("sdpa")  # transformers' own, not tl_geom's function
        try:
            with torch.no_grad():
                fused(tokens)
        finally:
            fused.hf.set_attn_implementation(ATTN_NAME)

    def rows_only() -> None:
        with torch.no_grad(), fused.stream(spec.layers, lambda _l, lay: lay.rows([ctx - 1])):
            fused(tokens)

    fns: dict[str, Callable[[], object]] = {
        "plain": plain,
        "rows": rows_only,
        "sdpa": lambda: run_window(fused, tokens, spec, 1),
        "sdpa0": lambda: run_window(fused, tokens, replace(spec, draws=0), 1),
    }
    loops = kernels.enabled(tokens.new_zeros(1, dtype=torch.float64))
    if loops:

        def torch_passes() -> None:
            with kernels.use_numba(False):
                run_window(fused, tokens, spec, 1)

        fns["sdpa_torch"] = torch_passes
    if bridge is not None:
        fns["hooks"] = lambda: run_window(bridge, tokens, spec, 1)
    t = timed(fns, rep)
    if all_queries:  # minutes: once, no warm-up (the model is warm)
        for key, on in (("all", True), ("all_torch", False))[: 2 if loops else 1]:
            gc.collect()
            t0 = time.perf_counter()
            with kernels.use_numba(on and loops):
                run_window(fused, tokens, replace(spec, queries="all"), 1)
            t[key] = time.perf_counter() - t0
    return t


COLUMNS = {
    "rows": "+ rows streamed",
    "sdpa": "run_window sdpa",
    "sdpa0": "sdpa, draws 0",
    "all": "sdpa, all queries",
    "sdpa_torch": "sdpa, torch passes",
    "all_torch": "all queries, torch passes",
    "hooks": "run_window hooks",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ctx", default="1024,8192", help="context lengths L")
    parser.add_argument("--hooks-max", type=int, default=1024, help="largest L for hooks")
    parser.add_argument("--all-max", type=int, default=1024, help="largest L for all queries")
    parser.add_argument("--repeat", type=int, default=3, help="timed repeats (median)")
    parser.add_argument("--long-ctx", type=int, default=8192, help="L of the memory run")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--skip-long", action="store_true", help="skip the memory run")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU here: measuring on the CPU instead")
        args.device = "cpu"
    if args.child:
        child(args.child, args.device)
        return 0
    print(
        f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"CUDA {'available' if torch.cuda.is_available() else 'not available'}; counting "
        f"loops: {'numba' if kernels.enabled(torch.zeros(1)) else 'torch passes'}"
    )
    fused = load_fused_model("smollm2-135m", device=args.device)
    bridge = load_model("smollm2-135m", device=args.device)
    text = load_corpus("war_and_peace")
    rows: list[tuple[int, dict[str, float]]] = []
    for ctx in (int(c) for c in args.ctx.split(",")):
        tokens = token_windows(fused.tokenizer, text, ctx=ctx, windows=2)[1:].to(args.device)
        rep = args.repeat if ctx <= 2048 else 1
        hooks_model = bridge if ctx <= args.hooks_max else None
        t = measure(fused, hooks_model, tokens, rep, ctx <= args.all_max)
        rows.append((ctx, t))
        shown = "; ".join(
            f"{name} {t[k]:.2f} s ({t[k] / t['plain']:.2f}x)"
            for k, name in COLUMNS.items()
            if k in t
        )
        print(f"L={ctx}: plain forward {t['plain']:.2f} s; {shown}", flush=True)
    print("\n| L | plain SDPA forward | " + " | ".join(COLUMNS.values()) + " |")
    print("|---:|---:|" + "---:|" * len(COLUMNS))
    for ctx, t in rows:
        cells = [f"{t[k]:.2f} s ({t[k] / t['plain']:.2f}x)" if k in t else "-" for k in COLUMNS]
        print(f"| {ctx} | {t['plain']:.2f} s | " + " | ".join(cells) + " |")
    if not args.skip_long:
        del fused, bridge
        cmd = [sys.executable, __file__, "--child", str(args.long_ctx), "--device", args.device]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        line = next((x for x in out.stdout.splitlines() if x.startswith(MARK)), None)
        if line is None:
            print(f"memory run failed: {out.stderr.strip().splitlines()[-1:]}")
        else:
            r = json.loads(line[len(MARK) :])
            print(
                f"\none sdpa window at L={r['ctx']} in a fresh process: peak RSS "
                f"{r['peak_rss_gib']:.2f} GiB, {r['wall_s']:.1f} s"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
