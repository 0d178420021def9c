"""Peak RSS per stage of a whole ``tl-geom analyze`` process (prints a table, asserts nothing).

Runs the CLI in this process (``tl_geom.app.cli.main``) with a thread sampling
``VmRSS`` every few milliseconds; the stages are marked by wrapping the functions that
run them (model load, each window's forward with its per-layer reductions, aggregate,
saving the tables, the report). The process peak (``ru_maxrss``, what
``/usr/bin/time -v`` reports as "Maximum resident set size") is printed at the end.

    .venv/bin/python benchmarks/memory_stages.py [--ctx 8192] [--windows 1]
        [--tracemalloc] [-- other analyze arguments]

With ``--tracemalloc`` the Python-level allocations (numpy, pandas, lists; not torch
tensors) of each stage are also traced and their peak printed.
"""

import argparse
import resource
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

STAGES = (
    ("tl_geom.jobs.analyze", "open_run", "load model"),
    ("tl_geom.jobs.resume", "run_window", "window forward"),
    ("tl_geom.jobs.window", "reduce_layer", "reduce_layer (in the forward)"),
    ("tl_geom.jobs.analyze", "aggregate", "aggregate"),
    ("tl_geom.jobs.results", "Analysis.save", "save tables"),
    ("tl_geom.app.report", "write_report", "report"),
)


def rss_bytes() -> int:
    """Resident set size of this process now (``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


class Sampler:
    """Peak RSS per named stage, sampled by a background thread."""

    def __init__(self) -> None:
        self.stage = "start"
        self.peaks: dict[str, int] = {}
        self.traced: dict[str, int] = {}
        self.order: list[str] = []
        self.events: list[tuple[float, str, int]] = []
        self._t0 = time.perf_counter()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop:
            self.note()
            time.sleep(0.002)

    def note(self) -> None:
        rss = rss_bytes()
        if self.stage not in self.peaks:
            self.order.append(self.stage)
        self.peaks[self.stage] = max(self.peaks.get(self.stage, 0), rss)

    def event(self, what: str) -> None:
        self.events.append((time.perf_counter() - self._t0, what, rss_bytes()))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop = True
        self._thread.join()


def wrap(sampler: Sampler, name: str, fn: Callable[..., Any], trace: bool) -> Callable[..., Any]:
    def staged(*args: Any, **kwargs: Any) -> Any:
        outer = sampler.stage
        sampler.note()
        sampler.stage = name
        sampler.event(f"enter {name}")
        if trace:
            tracemalloc.reset_peak()
        try:
            return fn(*args, **kwargs)
        finally:
            sampler.note()
            sampler.event(f"leave {name}")
            if trace:
                peak = tracemalloc.get_traced_memory()[1]
                sampler.traced[name] = max(sampler.traced.get(name, 0), peak)
            sampler.stage = outer

    return staged


def install(sampler: Sampler, trace: bool) -> None:
    import importlib

    for module, attr, name in STAGES:
        mod = importlib.import_module(module)
        owner, leaf = mod, attr
        if "." in attr:
            cls, leaf = attr.split(".")
            owner = getattr(mod, cls)
        setattr(owner, leaf, wrap(sampler, name, getattr(owner, leaf), trace))
    # the CLI imports write_report inside _analyze, so the patched attribute is what it gets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ctx", type=int, default=8192)
    parser.add_argument("--windows", type=int, default=1)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--timeline", action="store_true", help="RSS at each stage boundary")
    args, rest = parser.parse_known_args()
    from tl_geom.app.cli import main as cli

    sampler = Sampler()
    install(sampler, args.tracemalloc)
    if args.tracemalloc:
        tracemalloc.start()
    sampler.start()
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["analyze", "--windows", str(args.windows), "--ctx", str(args.ctx)]
        argv += ["--out", f"{tmp}/out", *[r for r in rest if r != "--"]]
        t0 = time.perf_counter()
        rc = cli(argv)
        wall = time.perf_counter() - t0
    sampler.stop()
    gib = 2.0**30
    print(f"\nanalyze {' '.join(argv[1:-2])}: rc {rc}, {wall:.1f} s")
    print("| stage | peak RSS GiB |" + (" tracemalloc peak GiB |" if args.tracemalloc else ""))
    print("|---|---:|" + ("---:|" if args.tracemalloc else ""))
    for stage in sampler.order:
        line = f"| {stage} | {sampler.peaks[stage] / gib:.2f} |"
        if args.tracemalloc:
            line += f" {sampler.traced.get(stage, 0) / gib:.3f} |"
        print(line)
    if args.timeline:
        last = ""
        for t, what, rss in sampler.events:
            if what != last:  # one line per change (reduce_layer enters 30 times per window)
                print(f"  {t:7.1f} s  {what:<40} RSS {rss / gib:.2f} GiB")
            last = what
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"process peak RSS (ru_maxrss): {maxrss / gib:.2f} GiB")
    return rc


if __name__ == "__main__":
    sys.exit(main())
