"""`torchrun -m tl_geom analyze`: windows split over ranks, the tables of a single process."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tl_geom.app.cli import main
from tl_geom.jobs.distributed import Ranks


def _torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600, check=False
    )


def _analyze_args(tiny_dir: Path, corpus_file: Path, out: Path) -> list[str]:
    return [
        "analyze",
        "--model",
        str(tiny_dir),
        "--corpus",
        str(corpus_file),
        "--windows",
        "5",
        "--ctx",
        "24",
        "--out",
        str(out),
        "--no-report",
    ]


@pytest.mark.slow
def test_two_ranks_write_the_tables_of_one_process(
    tiny_dir: Path, corpus_file: Path, tmp_path: Path
) -> None:
    assert main(_analyze_args(tiny_dir, corpus_file, tmp_path / "one")) == 0
    proc = _torchrun(
        "-m", "tl_geom", *_analyze_args(tiny_dir, corpus_file, tmp_path / "two"), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("5 windows run, 0 resumed") == 1  # rank 0 alone prints
    for table in ("metrics.csv", "heads.csv", "envelope.csv"):
        one, two = pd.read_csv(tmp_path / "one" / table), pd.read_csv(tmp_path / "two" / table)
        pd.testing.assert_frame_equal(one, two)
    assert len(list((tmp_path / "two" / "windows").glob("w*.pt"))) == 5

    # A killed run resumes across ranks: drop two windows, rerun with --resume.
    for w in (1, 4):
        (tmp_path / "two" / "windows" / f"w{w:06d}.pt").unlink()
    resume = [*_analyze_args(tiny_dir, corpus_file, tmp_path / "two"), "--resume"]
    proc = _torchrun("-m", "tl_geom", *resume, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 windows run, 3 resumed" in proc.stdout
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "one" / "metrics.csv"), pd.read_csv(tmp_path / "two" / "metrics.csv")
    )


@pytest.mark.slow
def test_ranks_that_disagree_on_arguments_fail(
    tiny_dir: Path, corpus_file: Path, tmp_path: Path
) -> None:
    script = tmp_path / "disagree.py"
    script.write_text(
        "import os, sys\n"
        "from tl_geom import TlGeomError\n"
        "from tl_geom.jobs.analyze import analyze\n"
        "try:\n"
        f"    analyze({str(tiny_dir)!r}, {str(corpus_file)!r}, ctx=24, progress=False,\n"
        "            windows=2 + int(os.environ['RANK']), out='out')\n"
        "except TlGeomError as exc:\n"
        "    print('ERROR', exc)\n"
        "    sys.exit(2)\n",
        encoding="utf-8",
    )
    proc = _torchrun(str(script), cwd=tmp_path)
    assert proc.returncode != 0
    assert proc.stdout.count("disagree on the arguments") == 2, proc.stdout + proc.stderr[-2000:]


def test_a_single_process_is_rank_0_of_1() -> None:
    alone = Ranks()
    assert alone.mine([0, 1, 2]) == [0, 1, 2]
    assert Ranks(rank=1, world=3).mine(list(range(8))) == [1, 4, 7]
    alone.agree("anything", object())  # nothing to compare with
    assert alone.from_rank0("x") == "x"
