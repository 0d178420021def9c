"""Benchmark of tl_geom.geometry.top_n on SmolLM2-shaped tensors (prints figures, asserts nothing).

Final-query tensors: 30 layers x 9 heads, L = 1024, d_head = 64, N = 1, 2, 4, ..., 512.
Measured in one run:
  * ``separability`` over all heads at once vs a per-head Python loop that is
    vectorised over positions (same math, one head at a time; and the same loop
    calling ``separability`` itself, checks included);
  * float64 vs float32 accumulation;
  * ``random_separability`` (16 draws), its scores in float64 and in certified float32;
  * ``separability_all_queries`` at L = 1024 for one layer and all 30 layers.

Synthetic inputs by default: softmax rows with a sink at position 0 (mean weight
about 0.6) and a compressed sink value. ``--real`` takes the tensors from
SmolLM2-135M via ``tl_geom.capture_attention`` instead (skipped if unavailable).

    .venv/bin/python benchmarks/bench_separability.py [--real] [--device cuda]
"""

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

from tl_geom.geometry.all_queries import separability_all_queries
from tl_geom.geometry.baseline import random_separability
from tl_geom.geometry.top_n import separability, separation_counts, top_n_rank

LAYERS, HEADS, LENGTH, D_HEAD = 30, 9, 1024, 64


def powers_of_two(length: int) -> list[int]:
    return [2**k for k in range(length.bit_length()) if 2**k <= length // 2]


def synthetic(
    lead: tuple[int, ...], query: int | None, length: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal softmax rows with a sink at 0; values with a compressed sink value."""
    gen = torch.Generator().manual_seed(seed)
    q = 1 if query is None else query
    scores = torch.randn(*lead, q, length, generator=gen) * 1.5
    scores[..., 0] += 8.5
    future = torch.arange(length) > torch.arange(q).unsqueeze(-1) + length - q
    pattern = scores.masked_fill(future, float("-inf")).softmax(-1)
    values = torch.randn(*lead, length, D_HEAD, generator=gen)
    values[..., 0, :] *= 0.1
    return (pattern[..., 0, :] if query is None else pattern), values


def real(length: int, all_queries: bool) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Final-query (or all-query) pattern and values of SmolLM2-135M, or None."""
    try:
        from tl_geom import capture_attention, load_model  # type: ignore[attr-defined]
    except ImportError as err:
        print(f"--real skipped: tl_geom.capture_attention/load_model unavailable ({err})")
        return None
    try:
        model = load_model("smollm2-135m")
        corpus = Path(__file__).parents[1] / "tl_geom" / "corpora" / "war_and_peace.txt"
        text = corpus.read_text(encoding="utf-8")[: 20 * length]
        tokens = model.to_tokens(text)[:, :length]
        cap = capture_attention(model, tokens, queries=None if all_queries else -1)
    except Exception as err:  # a benchmark: report and go on with synthetic figures
        print(f"--real skipped: {type(err).__name__}: {err}")
        return None
    pattern, values = cap.pattern[0].float(), cap.values[0].float()
    print(f"real: pattern {tuple(pattern.shape)}, values {tuple(values.shape)}")
    return (pattern if all_queries else pattern[..., -1, :]), values


def one_head(alpha: torch.Tensor, values: torch.Tensor, ns: list[int], dtype: torch.dtype):
    """The same math as ``separability`` for one head, vectorised over positions only."""
    a, v = alpha.to(dtype), values.to(dtype)
    n_t = torch.tensor(ns)
    rank = top_n_rank(a)
    order = torch.argsort(rank)
    y = a.unsqueeze(-1) * v
    s = y[order].cumsum(0)[n_t - 1]
    selected = rank < n_t.view(-1, 1)
    g = 2.0 * s @ y.T - (y * y).sum(-1)
    return separation_counts(g, selected, n_t)


def best_of(fn: Callable[[], object], repeat: int, device: str) -> float:
    times = []
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="SmolLM2-135M tensors")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--length", type=int, default=LENGTH)
    parser.add_argument("--chunk", type=int, default=64, help="all-query rows per step")
    parser.add_argument("--skip-all-layers", action="store_true", help="skip 30-layer all-query")
    args = parser.parse_args(argv)
    dev, length, ns = args.device, args.length, powers_of_two(args.length)
    print(
        f"torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}, "
        f"{LAYERS} layers x {HEADS} heads, L={length}, d={D_HEAD}, N={ns}"
    )

    got = real(length, all_queries=False) if args.real else None
    alpha, values = got if got is not None else synthetic((LAYERS, HEADS), None, length)
    alpha, values = alpha.to(dev), values.to(dev)
    print(f"final query: mean sink weight {alpha[..., 0].mean():.3f}")

    rows: list[tuple[str, float]] = []

    def measure(name: str, fn: Callable[[], object], repeat: int = args.repeat) -> float:
        fn()  # warm-up
        t = best_of(fn, repeat, dev)
        rows.append((name, t))
        print(f"  {name:<52s} {t * 1e3:10.1f} ms", flush=True)
        return t

    heads = [(i, j) for i in range(alpha.shape[0]) for j in range(alpha.shape[1])]
    print(f"final-query separability, all heads (best of {args.repeat}):")
    t64 = measure("separability, batched, float64", lambda: separability(alpha, values, ns))
    t32 = measure(
        "separability, batched, float32",
        lambda: separability(alpha, values, ns, dtype=torch.float32),
    )
    loop64 = measure(
        "per-head loop (same math, no checks), float64",
        lambda: [one_head(alpha[h], values[h], ns, torch.float64) for h in heads],
    )
    loop_sep = measure(
        "per-head loop calling separability, float64",
        lambda: [separability(alpha[h], values[h], ns) for h in heads],
    )
    t_rand = measure(
        "random_separability, 16 draws, float64",
        lambda: random_separability(alpha, values, ns, draws=16, score_dtype=torch.float64),
    )
    t_rand32 = measure(
        "random_separability, 16 draws, certified float32 g",
        lambda: random_separability(alpha, values, ns, draws=16, score_dtype=torch.float32),
    )
    rnd64 = random_separability(alpha, values, ns, draws=16, score_dtype=torch.float64)
    rnd32 = random_separability(alpha, values, ns, draws=16, score_dtype=torch.float32)
    same = all(
        torch.equal(getattr(rnd64, k), getattr(rnd32, k)) for k in ("precision", "recall", "f1")
    )
    res64 = separability(alpha, values, ns)
    res32 = separability(alpha, values, ns, dtype=torch.float32)
    flips = int((res64.precision.float() != res32.precision).sum()) + int(
        (res64.recall.float() != res32.recall).sum()
    )
    print(
        f"  ratios: loop/batched {loop64 / t64:.1f}x (separability loop {loop_sep / t64:.1f}x), "
        f"float64/float32 {t64 / t32:.2f}x, random/top-N {t_rand / t64:.1f}x; "
        f"float32 changed {flips} of {2 * res64.precision.numel()} P/R values"
    )
    print(
        f"  baseline float64/certified float32 scores {t_rand / t_rand32:.2f}x; "
        f"P, R, F identical: {same}"
    )

    print(f"all-query separability, L={length}, chunk={args.chunk}:")
    got = real(length, all_queries=True) if args.real else None
    if got is not None:
        pattern_all, values_all = got[0].to(dev), got[1].to(dev)
        pattern, v_layer = pattern_all[0], values_all[0]
    else:
        pattern, v_layer = synthetic((HEADS,), length, length, seed=1)
        pattern, v_layer = pattern.to(dev), v_layer.to(dev)
        pattern_all = values_all = None
    one = measure(
        "one layer (9 heads x 1024 queries), float64",
        lambda: separability_all_queries(pattern, v_layer, ns, chunk=args.chunk),
        repeat=1,
    )
    one32 = measure(
        "one layer (9 heads x 1024 queries), float32",
        lambda: separability_all_queries(
            pattern, v_layer, ns, chunk=args.chunk, dtype=torch.float32
        ),
        repeat=1,
    )
    if not args.skip_all_layers:
        if pattern_all is None:  # one synthetic layer per seed, made before timing
            layers = [synthetic((HEADS,), length, length, seed=i) for i in range(LAYERS)]
            pattern_all = torch.stack([p for p, _ in layers]).to(dev)
            values_all = torch.stack([v for _, v in layers]).to(dev)
            del layers
        pa, va = pattern_all, values_all
        assert va is not None

        def all_layers() -> None:  # streamed per layer, as the pipeline's hooks do
            for layer in range(pa.shape[0]):
                separability_all_queries(pa[layer], va[layer], ns, chunk=args.chunk)

        t0 = time.perf_counter()
        all_layers()
        if dev == "cuda":
            torch.cuda.synchronize()
        t_all = time.perf_counter() - t0
        rows.append(("all 30 layers, float64 (per-layer calls)", t_all))
        print(f"  {'all 30 layers, float64 (per-layer calls)':<52s} {t_all * 1e3:10.1f} ms")
        print(f"  ratios: 30 layers / one layer {t_all / one:.1f}x")
    print(
        f"  ratios: all-query one layer / final-query all layers {one / t64:.0f}x, "
        f"float64/float32 {one / one32:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
