"""Cost of one analysis window on SmolLM2-135M vs a plain forward (prints figures, asserts nothing).

War and Peace windows (``[BOS] + L - 1`` tokens, as ``tl-geom analyze`` cuts them).
Measured side by side in one run (median of ``--repeat`` runs after a warm-up):

  a. a plain forward of the bridge, no hooks, under ``torch.no_grad``;
  b. ``capture_attention(model, tokens, queries=-1)`` alone;
  c. capture + ``separability`` of all heads at N = 1, 2, 4, ..., L/2;
  d. ``run_window`` with the spec ``analyze`` uses by default (final query, 16 random
     draws, head diagnostics);
  e. ``run_window`` with ``queries="all"`` at a shorter ``--all-ctx`` vs its own forward.

Then the peak memory of one window at ``--long-ctx`` (default 8192, SmolLM2's n_ctx):
a plain forward and ``run_window`` (final query), each in a fresh subprocess so the
peaks do not mix; peak RSS is ``getrusage(RUSAGE_SELF).ru_maxrss`` of that process
(model load included). The parent polls each child's RSS and kills it above
``--mem-cap-gib`` (default 90% of the memory available at start), so an oversized run
is reported instead of taking the machine down.

On a shared machine pass ``--threads 1``: with as many torch threads as cores, another
process on one core stalls every OpenMP barrier and single forwards vary several-fold.

    .venv/bin/python benchmarks/bench_analyze.py [--ctx 1024] [--all-ctx 256]
        [--long-ctx 8192] [--repeat 5] [--threads 1] [--skip-long] [--profile]
"""

import argparse
import cProfile
import gc
import json
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from tl_geom.geometry.top_n import separability
from tl_geom.jobs.config import default_n
from tl_geom.jobs.window import WindowSpec, run_window
from tl_geom.lens.capture import capture_attention
from tl_geom.lens.data import load_corpus, token_windows
from tl_geom.lens.hooks import model_dims
from tl_geom.lens.models import load_model

GIB = 1024**3
CHILD_MARK = "BENCH_CHILD_RESULT "
TARGET_GIB = 12.0


def default_spec(model: Any, ctx: int, queries: str = "last", draws: int = 16) -> WindowSpec:
    """The WindowSpec ``analyze`` builds with its defaults (seed 0, all layers)."""
    dims = model_dims(model)
    return WindowSpec(
        n=default_n(ctx),
        queries=queries,  # type: ignore[arg-type]
        draws=draws,
        seed=0,
        causal=getattr(model.cfg, "attention_dir", "causal") != "bidirectional",
        layers=tuple(range(dims.n_layers)),
    )


def window_tokens(model: Any, ctx: int, window: int) -> torch.Tensor:
    """Window ``window`` of War and Peace at ``ctx`` tokens, shape ``[1, ctx]``."""
    body = load_corpus("war_and_peace")
    return token_windows(model.tokenizer, body, ctx=ctx, windows=window + 1)[window : window + 1]


def plain_forward(model: Any, tokens: torch.Tensor) -> None:
    with torch.no_grad():
        model(tokens)


def capture_and_separability(model: Any, tokens: torch.Tensor, ns: tuple[int, ...]) -> None:
    cap = capture_attention(model, tokens, queries=-1)
    separability(cap.pattern[0, :, :, -1], cap.values[0], ns)


def rss_now_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / GIB


def maxrss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # KiB on Linux


def mem_available_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / GIB
    return float("nan")


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    with open("/proc/meminfo") as f:
        total = int(f.readline().split()[1]) * 1024 / GIB
    return (
        f"{cpu}; {len(os.sched_getaffinity(0))} cores usable (os.cpu_count {os.cpu_count()}), "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, device cpu "
        f"(no GPU), {total:.1f} GiB RAM, Python {platform.python_version()}"
    )


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# --------------------------------------------------------------------------- child
def child(mode: str, ctx: int, window: int) -> int:
    """One window at ``ctx`` in this (fresh) process; prints a JSON result line."""
    model = load_model("smollm2-135m")
    tokens = window_tokens(model, ctx, window)
    spec = default_spec(model, ctx)
    gc.collect()
    loaded = {"maxrss_loaded_gib": maxrss_gib(), "rss_loaded_gib": rss_now_gib()}
    t0 = time.perf_counter()
    if mode == "forward":
        plain_forward(model, tokens)
    else:
        res = run_window(model, tokens, spec, window)
        assert res["precision"].shape[:2] == (len(spec.layers), model_dims(model).n_heads)
    wall = time.perf_counter() - t0
    out = {**loaded, "maxrss_gib": maxrss_gib(), "wall_s": wall, "mode": mode, "ctx": ctx}
    print(CHILD_MARK + json.dumps(out), flush=True)
    return 0


def run_child(mode: str, ctx: int, window: int, cap_gib: float) -> dict[str, Any]:
    """Run :func:`child` in a fresh interpreter, killing it if its RSS passes ``cap_gib``."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", mode]
    cmd += ["--long-ctx", str(ctx), "--window", str(window)]
    cmd += ["--threads", str(torch.get_num_threads())]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    polled, killed = 0.0, False
    page = os.sysconf("SC_PAGE_SIZE")
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/statm") as f:
                rss = int(f.read().split()[1]) * page / GIB
        except (OSError, IndexError, ValueError):
            rss = 0.0
        polled = max(polled, rss)
        if rss > cap_gib:
            proc.kill()
            killed = True
            break
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    total = time.perf_counter() - t0
    res: dict[str, Any] = {"mode": mode, "ctx": ctx, "polled_gib": polled, "process_s": total}
    if killed:
        res["error"] = f"killed: RSS passed the cap of {cap_gib:.1f} GiB"
        return res
    for line in stdout.splitlines():
        if line.startswith(CHILD_MARK):
            res.update(json.loads(line[len(CHILD_MARK) :]))
            return res
    tail = (stderr.strip().splitlines() or ["no output"])[-1]
    res["error"] = f"exit {proc.returncode}: {tail}"
    return res


# --------------------------------------------------------------------------- timing
def median_time(
    fn: Callable[[], object], repeat: int, warmup: int = 1
) -> tuple[float, float, float]:
    """(median, min, max) seconds of ``repeat`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), max(times)


def profile_run_window(model: Any, tokens: torch.Tensor, spec: WindowSpec, top: int) -> None:
    """cProfile one ``run_window``: where its time goes (tl_geom functions, cumulative)."""
    prof = cProfile.Profile()
    prof.enable()
    run_window(model, tokens, spec, 1)
    prof.disable()
    stats = pstats.Stats(prof)
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (file, _line, name), (_cc, _nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if "tl_geom" in file or name in ("forward", "softmax", "_call_impl"):
            rows.append((ct, tt, f"{os.path.basename(file)}:{name}"))
    rows.sort(reverse=True)
    print(f"\ncProfile of one run_window (L={tokens.shape[1]}), total {total:.2f} s:")
    print(f"  {'cumulative s':>12s} {'own s':>8s}  function")
    seen = set()
    for ct, tt, name in rows:
        if name in seen:
            continue
        seen.add(name)
        print(f"  {ct:12.3f} {tt:8.3f}  {name}")
        if len(seen) >= top:
            break
    print("  top own-time functions (any module):")
    own = sorted(
        (
            (tt, ct, f"{os.path.basename(f)}:{n}")
            for (f, _l, n), (_a, _b, tt, ct, _c) in stats.stats.items()
        ),  # type: ignore[attr-defined]
        reverse=True,
    )[:10]
    for tt, ct, name in own:
        print(f"  {ct:12.3f} {tt:8.3f}  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ctx", type=int, default=1024, help="L of the final-query timings")
    parser.add_argument("--all-ctx", type=int, default=256, help="L of the all-query timing")
    parser.add_argument("--long-ctx", type=int, default=8192, help="L of the memory runs")
    parser.add_argument("--repeat", type=int, default=5, help="timed repeats (median)")
    parser.add_argument("--all-repeat", type=int, default=3, help="repeats of the all-query run")
    parser.add_argument("--window", type=int, default=1, help="corpus window (0 adds the view)")
    parser.add_argument("--skip-long", action="store_true", help="skip the memory runs")
    parser.add_argument("--mem-cap-gib", type=float, default=None, help="kill a child above")
    parser.add_argument("--profile", action="store_true", help="cProfile one run_window")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's own)"
    )
    parser.add_argument("--child", choices=["forward", "run_window"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return child(args.child, args.long_ctx, args.window)

    print(f"machine: {machine()}")
    print(f"load average at start: {loadavg()}")
    t0 = time.perf_counter()
    model = load_model("smollm2-135m")
    dims = model_dims(model)
    print(
        f"SmolLM2-135M loaded in {time.perf_counter() - t0:.1f} s: {dims.n_layers} layers, "
        f"{dims.n_heads} heads, {dims.n_kv_heads} KV heads, d_head {dims.d_head}, "
        f"n_ctx {dims.n_ctx}; War and Peace window {args.window}"
    )

    ctx = args.ctx
    tokens = window_tokens(model, ctx, args.window)
    spec = default_spec(model, ctx)
    ns = spec.n
    print(f"\nL={ctx}, final query, N={list(ns)}, median of {args.repeat} after a warm-up:")
    rows: list[tuple[str, int, float, float, float, float]] = []

    def measure(name: str, fn: Callable[[], object], base: float | None, length: int, rep: int):
        med, lo, hi = median_time(fn, rep)
        ratio = med / base if base else 1.0
        rows.append((name, length, med, lo, hi, ratio))
        print(
            f"  {name:<58s} {med:8.3f} s  (min {lo:.3f}, max {hi:.3f})  {ratio:5.2f}x",
            flush=True,
        )
        return med

    base = measure(
        "(a) plain forward, no hooks", lambda: plain_forward(model, tokens), None, ctx, args.repeat
    )
    measure(
        "(b) capture_attention(queries=-1)",
        lambda: capture_attention(model, tokens, queries=-1),
        base,
        ctx,
        args.repeat,
    )
    measure(
        f"(c) capture + separability ({dims.n_layers * dims.n_heads} heads)",
        lambda: capture_and_separability(model, tokens, ns),
        base,
        ctx,
        args.repeat,
    )
    measure(
        f"(d) run_window, final query, {spec.draws} draws, diagnostics",
        lambda: run_window(model, tokens, spec, args.window),
        base,
        ctx,
        args.repeat,
    )

    actx = args.all_ctx
    atokens = window_tokens(model, actx, args.window)
    aspec = default_spec(model, actx, queries="all")
    print(f"\nL={actx}, all queries, N={list(aspec.n)}, median of {args.all_repeat}:")
    abase = measure(
        "(e0) plain forward, no hooks",
        lambda: plain_forward(model, atokens),
        None,
        actx,
        args.all_repeat,
    )
    measure(
        "(e) run_window, all queries",
        lambda: run_window(model, atokens, aspec, args.window),
        abase,
        actx,
        args.all_repeat,
    )
    print(f"load average after timings: {loadavg()}")

    if args.profile:
        profile_run_window(model, tokens, spec, top=25)

    mem: list[dict[str, Any]] = []
    if not args.skip_long:
        del model
        gc.collect()
        avail = mem_available_gib()
        cap = args.mem_cap_gib if args.mem_cap_gib is not None else 0.9 * avail
        print(
            f"\npeak memory, one window at L={args.long_ctx}, each in a fresh process "
            f"({avail:.1f} GiB available, children killed above {cap:.1f} GiB):"
        )
        for mode in ("forward", "run_window"):
            r = run_child(mode, args.long_ctx, args.window, cap)
            mem.append(r)
            if "error" in r:
                print(f"  {mode:<12s} {r['error']} (polled RSS peak {r['polled_gib']:.2f} GiB)")
                continue
            print(
                f"  {mode:<12s} peak RSS {r['maxrss_gib']:6.2f} GiB "
                f"(after load {r['maxrss_loaded_gib']:.2f}, polled {r['polled_gib']:.2f}), "
                f"window {r['wall_s']:7.1f} s, process {r['process_s']:.1f} s",
                flush=True,
            )
        print(f"load average after memory runs: {loadavg()}")

    print("\n| measurement | L | median s (min-max) | vs plain forward |")
    print("|---|---:|---:|---:|")
    for name, length, med, lo, hi, ratio in rows:
        print(f"| {name} | {length} | {med:.3f} ({lo:.3f}-{hi:.3f}) | {ratio:.2f}x |")
    if mem:
        print("\n| one window, fresh process | L | peak RSS GiB | window wall s |")
        print("|---|---:|---:|---:|")
        for r in mem:
            label = "plain forward" if r["mode"] == "forward" else "run_window, final query"
            if "error" in r:
                print(f"| {label} | {r['ctx']} | > {r['polled_gib']:.1f} ({r['error']}) | - |")
            else:
                print(f"| {label} | {r['ctx']} | {r['maxrss_gib']:.2f} | {r['wall_s']:.1f} |")
        ok = [r for r in mem if r["mode"] == "run_window" and "error" not in r]
        if ok:
            verdict = "meets" if ok[0]["maxrss_gib"] <= TARGET_GIB else "misses"
            print(
                f"\nrun_window peak {ok[0]['maxrss_gib']:.2f} GiB {verdict} the "
                f"{TARGET_GIB:.0f} GiB target at L={args.long_ctx}"
            )
    print(f"\nmachine: {machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
