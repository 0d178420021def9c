"""The benchmark scripts run (tiny sizes, CPU): they print figures and assert nothing,
so this checks only that they do not rot; the figures in docs/performance.md come from full runs."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_7b_benchmark_runs_at_a_tiny_shape_on_the_cpu() -> None:
    script = ROOT / "benchmarks" / "bench_gpu_7b.py"
    cmd = [sys.executable, str(script), "--shape", "tiny", "--ctx", "128", "--repeat", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300)
    assert "| run_window sdpa, draws 0 |" in out.stdout  # the table of docs/performance.md
    line = next(x for x in out.stdout.splitlines() if x.startswith("BENCH_RESULT "))
    res = json.loads(line.removeprefix("BENCH_RESULT "))
    assert res["shape"] == "tiny" and res["ctx"] == 128
    for variant in (
        "plain forward (sdpa)",
        "run_window sdpa, 16 draws",
        "run_window sdpa, draws 0",
    ):
        assert res[variant]["s"] > 0
    assert res["g_form_s"]["float64"] > 0 and res["g_form_s"]["float32"] > 0


def test_command_benchmark_runs_on_one_short_window() -> None:
    script = ROOT / "benchmarks" / "bench_command.py"
    cmd = [sys.executable, str(script), "--windows", "1", "--ctx", "64"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
    assert "| the run, all phases |" in out.stdout  # the table of docs/performance.md
    assert "| head rows (heads to look at) |" in out.stdout
