"""Final-query analysis of a Llama-2-7B-shaped model at long context vs a plain forward.

Random weights (shapes are what cost): 32 layers, 32 heads of 128, hidden 4096, MLP 11008,
in bfloat16, one window of ``--ctx`` random token ids (default 32768). Side by side:

  a. a plain forward with transformers' ``sdpa`` attention (flash/efficient kernels on CUDA);
  b. ``run_window`` through the ``sdpa`` backend with every metric of ``tl-geom analyze``
     (16-draw random baseline) and with ``draws = 0`` (no baseline);
  c. the ``g``-form cost: ``separability`` + ``random_separability`` of one layer's final
     row with the baseline's scores in float64 and in certified float32 (the default on
     an accelerator: ``baseline.default_score_dtype``), on the same device.

Peak device memory (``torch.cuda.max_memory_allocated``) per variant. Caching patterns
instead cannot fit: the ``[32 layers, 32 heads, L, L]`` patterns are 32 GiB in bfloat16 at
L = 4096 and 2 TiB at L = 32768.

Prints figures, asserts nothing. Without CUDA it says so and runs on the CPU; there
``--shape tiny`` (2 layers, 4 heads of 16) is the smoke test the suite runs.

    .venv/bin/python benchmarks/bench_gpu_7b.py [--ctx 32768] [--shape 7b|tiny]
        [--repeat 2] [--device cuda]
"""

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from tl_geom.geometry.baseline import random_separability
from tl_geom.geometry.top_n import separability
from tl_geom.jobs.config import default_n
from tl_geom.jobs.window import WindowSpec, run_window
from tl_geom.lens.hooks import expand_kv
from tl_geom.lens.sdpa import ATTN_NAME, FusedModel

SHAPES = {
    "7b": {"hidden_size": 4096, "intermediate_size": 11008, "layers": 32, "heads": 32},
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "layers": 2, "heads": 4},
}


def build(shape: str, ctx: int, device: str, dtype: torch.dtype) -> FusedModel:
    """A randomly initialised ``LlamaModel`` of ``shape`` on ``device``, as a FusedModel."""
    from transformers import LlamaConfig, LlamaModel

    s = SHAPES[shape]
    config = LlamaConfig(
        hidden_size=s["hidden_size"],
        intermediate_size=s["intermediate_size"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        num_key_value_heads=s["heads"],
        vocab_size=32000,
        max_position_embeddings=max(ctx, 4096),
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            hf = LlamaModel(config).eval()
    finally:
        torch.set_default_dtype(default)
    return FusedModel(hf)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str, repeat: int) -> tuple[float, float]:
    """(median seconds, peak device GiB or NaN on the CPU) of ``fn`` after a warm-up."""
    fn()
    times = []
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    return statistics.median(times), peak


def g_form_cost(fused: FusedModel, tokens: torch.Tensor, device: str, ctx: int) -> dict[str, Any]:
    """Seconds of top-N + 16-draw baseline on one layer's final row, the baseline's scores
    in float64 vs certified float32 (``s`` and the top-N in float64 either way)."""
    got: dict[str, torch.Tensor] = {}
    last = fused.cfg.n_layers - 1

    def keep(layer: int, lay: Any) -> None:
        got["alpha"] = lay.rows([ctx - 1])[0][:, 0]
        got["v"] = lay.v

    with torch.no_grad(), fused.stream([last], keep):
        fused(tokens)
    alpha = got["alpha"]
    values = expand_kv(got["v"], alpha.shape[0])[0].transpose(0, 1)  # [H, L, d]
    n = default_n(ctx)
    out: dict[str, Any] = {}
    for name, dt in (("float64", torch.float64), ("float32", torch.float32)):

        def metrics(dt: torch.dtype = dt) -> None:
            separability(alpha, values, n)
            random_separability(alpha, values, n, draws=16, score_dtype=dt)

        out[name] = timed(metrics, device, 2)[0]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ctx", type=int, default=32768, help="tokens in the window")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="7b", help="model shape")
    parser.add_argument("--repeat", type=int, default=2, help="timed repeats (median)")
    parser.add_argument("--device", default="cuda", help="cuda or cpu")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        if args.shape != "tiny":  # a 7B model at 32k tokens would take hours on a CPU
            print(
                f"no CUDA GPU here: the {args.shape} shape is a GPU benchmark; run it on a "
                "CUDA machine, or pass --shape tiny (smoke test) or --device cpu (slow)",
                file=sys.stderr,
            )
            return 2
        print("no CUDA GPU here: measuring on the CPU instead (figures are not the GPU's)")
        args.device = "cpu"
    dtype = torch.bfloat16
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"device {where}, torch {torch.__version__}, shape {args.shape}, L={args.ctx}, bf16")
    fused = build(args.shape, args.ctx, args.device, dtype)
    n_params = sum(p.numel() for p in fused.parameters())
    tokens = torch.randint(0, 32000, (1, args.ctx), generator=torch.Generator().manual_seed(0))
    tokens = tokens.to(args.device)
    layers = tuple(range(fused.cfg.n_layers))

    def spec(draws: int) -> WindowSpec:
        n = default_n(args.ctx)
        return WindowSpec(n=n, queries="last", draws=draws, seed=0, causal=True, layers=layers)

    def plain() -> None:
        fused.hf.set_attn_implementation("sdpa")
        try:
            with torch.no_grad():
                fused(tokens)
        finally:
            fused.hf.set_attn_implementation(ATTN_NAME)

    rows = {
        "plain forward (sdpa)": timed(plain, args.device, args.repeat),
        "run_window sdpa, 16 draws": timed(
            lambda: run_window(fused, tokens, spec(16), 1), args.device, args.repeat
        ),
        "run_window sdpa, draws 0": timed(
            lambda: run_window(fused, tokens, spec(0), 1), args.device, args.repeat
        ),
    }
    base = rows["plain forward (sdpa)"][0]
    print(f"\n{n_params / 1e9:.2f} B parameters\n")
    print("| variant | wall | vs forward | peak device memory |")
    print("|---|---:|---:|---:|")
    for name, (sec, peak) in rows.items():
        mem = f"{peak:.1f} GiB" if peak == peak else "- (cpu)"
        print(f"| {name} | {sec:.2f} s | {sec / base:.2f}x | {mem} |")
    cost = g_form_cost(fused, tokens, args.device, args.ctx)
    print(
        f"\nmetrics of one layer's final row (top-N + 16-draw baseline, {len(default_n(args.ctx))}"
        f" N), the baseline's scores in float64 {cost['float64'] * 1e3:.1f} ms, in certified "
        f"float32 {cost['float32'] * 1e3:.1f} ms "
        f"({cost['float64'] / cost['float32']:.1f}x)"
    )
    summary = {k: {"s": v[0], "peak_gib": v[1]} for k, v in rows.items()}
    summary |= {"g_form_s": cost, "device": where, "ctx": args.ctx, "shape": args.shape}
    print("BENCH_RESULT " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
