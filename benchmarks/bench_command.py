"""The whole ``tl-geom analyze`` run, phase by phase, against plain forwards (prints figures).

``bench_backends.py`` times one window; a run also aggregates the windows (the
envelope's Monte Carlo), takes the report's heads to look at, and writes the report.
Here, in one process on SmolLM2-135M and War and Peace (the ``analyze`` defaults: 16
draws, every diagnostic, the sdpa backend):

  a. plain forwards of the run's windows (transformers' own SDPA attention, no LM head),
     before and after the run (their mean: the machine's drift lands on both sides);
  b. ``run_analysis`` on the same loaded model (so loading is not in it), its phases
     from ``run.json``'s ``timings_s``: the windows, ``aggregate`` (tables, envelope),
     ``head_rows`` (the report's heads to look at);
  c. ``write_report`` of that analysis.

Each phase in seconds and as a multiple of (a). The model load and the imports, paid
once per process, are printed apart.

    .venv/bin/python benchmarks/bench_command.py [--windows 8] [--ctx 1024]
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

from tl_geom.app.report import write_report
from tl_geom.geometry import kernels
from tl_geom.jobs.analyze import run_analysis
from tl_geom.jobs.config import AnalyzeConfig
from tl_geom.lens.data import load_corpus, token_windows
from tl_geom.lens.sdpa import ATTN_NAME, load_fused_model


def plain_forwards(fused: object, tokens: torch.Tensor) -> float:
    """Seconds of one plain forward per window, transformers' own SDPA attention."""
    hf = fused.hf  # type: ignore[attr-defined]
    hf.set_attn_implementation("sdpa")
    try:
        t0 = time.perf_counter()
        with torch.no_grad():
            for w in range(tokens.shape[0]):
                fused(tokens[w : w + 1])  # type: ignore[operator]
        return time.perf_counter() - t0
    finally:
        hf.set_attn_implementation(ATTN_NAME)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--windows", type=int, default=AnalyzeConfig.windows)
    parser.add_argument("--ctx", type=int, default=AnalyzeConfig.ctx)
    args = parser.parse_args()
    loops = "numba" if kernels.enabled(torch.zeros(1)) else "torch passes"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, counting loops: {loops}")
    t0 = time.perf_counter()
    fused = load_fused_model("smollm2-135m")
    load = time.perf_counter() - t0
    body = load_corpus("war_and_peace")
    config = AnalyzeConfig(windows=args.windows, ctx=args.ctx, backend="sdpa")
    tokens = token_windows(fused.tokenizer, body, ctx=args.ctx, windows=args.windows)
    plain_forwards(fused, tokens[:1])  # warm-up
    before = plain_forwards(fused, tokens)
    with tempfile.TemporaryDirectory() as tmp:
        analysis = run_analysis(config, body, model=fused, out=Path(tmp) / "run", progress=False)
        t0 = time.perf_counter()
        write_report(analysis, Path(tmp) / "report.html")
        report = time.perf_counter() - t0
    after = plain_forwards(fused, tokens)
    plain = (before + after) / 2
    t = analysis.run["timings_s"]
    phases = {
        f"windows ({args.windows} x {args.ctx} tokens)": t["windows_total"],
        "aggregate (tables, envelope)": t["aggregate"],
        "head rows (heads to look at)": t["head_rows"],
        "report": report,
    }
    phases["the run, all phases"] = sum(phases.values())
    print(
        f"\nplain forwards of the {args.windows} windows: {plain:.2f} s "
        f"({before:.2f} before the run, {after:.2f} after)\n"
    )
    print("| phase | s | x plain forwards |\n| --- | ---: | ---: |")
    for name, sec in phases.items():
        print(f"| {name} | {sec:.2f} | {sec / plain:.2f}x |")
    print(f"\nonce per process, not above: loading the model {load:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
