"""Runs that cannot be mixed, torn or lost (issue 19): window fingerprints, the --out
lock and checks, atomic writes, and every failure as one line naming what failed."""

import errno
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from conftest import TEXT

import tl_geom.jobs.results as results_mod
from tl_geom import TlGeomError
from tl_geom.app.cli import main
from tl_geom.jobs.analyze import analyze
from tl_geom.jobs.outdir import LOCK_NAME, OutLock, check_out
from tl_geom.jobs.results import Analysis, atomic_write_bytes

OTHER = "A quiet evening fell on the harbour while the gulls circled the masts. " * 60
KW: dict[str, Any] = {"windows": 3, "ctx": 16, "n": [1, 2, 4], "draws": 2, "progress": False}
TABLES = ("metrics.csv", "heads.csv", "envelope.csv")


@pytest.fixture(scope="module")
def model(tiny_dir: Path) -> Any:
    from tl_geom import load_model

    return load_model(str(tiny_dir))


@pytest.fixture(scope="module")
def clean(model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run: the reference every repaired run must equal."""
    out = tmp_path_factory.mktemp("clean") / "run"
    analyze(model, text=TEXT, out=out, **KW)
    return out


@pytest.fixture(scope="module")
def foreign(model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run over other text: its window files are valid files of another run."""
    out = tmp_path_factory.mktemp("foreign") / "run"
    analyze(model, text=OTHER, out=out, **KW)
    return out


def _same_tables(a: Path, b: Path) -> None:
    for name in TABLES:
        pd.testing.assert_frame_equal(pd.read_csv(a / name), pd.read_csv(b / name))


def _window(out: Path, w: int) -> Path:
    return out / "windows" / f"w{w:06d}.pt"


def _truncate(out: Path, w: int) -> None:
    path = _window(out, w)
    path.write_bytes(path.read_bytes()[:100])


def _garbage(out: Path, w: int) -> None:
    _window(out, w).write_bytes(b"not a torch file at all")


def _empty(out: Path, w: int) -> None:
    _window(out, w).write_bytes(b"")


def _swap(out: Path, w: int) -> None:
    a, b = _window(out, w), _window(out, (w + 1) % 3)
    tmp = a.with_suffix(".x")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)


def _copy_next(out: Path, w: int) -> None:  # a valid window in the wrong slot
    shutil.copy(_window(out, (w + 1) % 3), _window(out, w))


def _delete(out: Path, w: int) -> None:
    _window(out, w).unlink()


def _plain_tensors(out: Path, w: int) -> None:  # an old-format file: no fingerprint
    torch.save({"f1": torch.zeros(2)}, _window(out, w))


CORRUPT = {
    "truncate": _truncate,
    "garbage": _garbage,
    "empty": _empty,
    "swap": _swap,
    "wrong_slot": _copy_next,
    "delete": _delete,
    "no_fingerprint": _plain_tensors,
}


@pytest.mark.parametrize(
    ("damage", "config"),
    [
        (["truncate"], "keep"),
        (["garbage", "swap"], "keep"),
        (["empty"], "delete"),
        (["wrong_slot", "delete"], "keep"),
        (["no_fingerprint", "foreign"], "delete"),
        (["swap"], "garbage"),
        (["foreign"], "foreign"),
        (["delete", "truncate"], "delete"),
    ],
)
def test_out_fuzz_equals_the_clean_run_or_names_the_file(
    model: Any, clean: Path, foreign: Path, tmp_path: Path, damage: list[str], config: str
) -> None:
    """Damage window files (and windows/config.json), resume: the tables equal the clean
    run's, or a one-line TlGeomError names the damaged file."""
    out = tmp_path / "run"
    shutil.copytree(clean, out)
    for k, kind in enumerate(damage):
        if kind == "foreign":
            shutil.copy(_window(foreign, k), _window(out, k))
        else:
            CORRUPT[kind](out, k)
    cfg = out / "windows" / "config.json"
    if config == "delete":
        cfg.unlink()
    elif config == "garbage":
        cfg.write_text("{not json")
    elif config == "foreign":
        shutil.copy(foreign / "windows" / "config.json", cfg)
    try:
        analyze(model, text=TEXT, out=out, resume=True, **KW)
    except TlGeomError as exc:
        msg = str(exc)
        assert "\n" not in msg
        assert config in ("garbage", "foreign") and str(cfg) in msg
        return
    assert config in ("keep", "delete")
    _same_tables(clean, out)
    res = Analysis.load(out)
    assert res.run["timings_s"]["windows_resumed"] + res.run["timings_s"]["windows_run"] == 3
    bad = [k for k, kind in enumerate(damage) if kind not in ("delete",)]
    if bad:  # every damaged file was moved aside, none deleted
        assert len(res.run["rejected_windows"]) >= 1
        assert (out / "windows" / "rejected").is_dir()


@pytest.mark.parametrize("kind", ["truncate", "garbage", "wrong_slot", "foreign"])
def test_strict_refuses_a_bad_window_naming_it(
    model: Any, clean: Path, foreign: Path, tmp_path: Path, kind: str
) -> None:
    out = tmp_path / "run"
    shutil.copytree(clean, out)
    if kind == "foreign":
        shutil.copy(_window(foreign, 1), _window(out, 1))
    else:
        CORRUPT[kind](out, 1)
    with pytest.raises(TlGeomError, match=r"w000001\.pt") as info:
        from tl_geom.jobs.analyze import run_analysis
        from tl_geom.jobs.config import AnalyzeConfig

        config = AnalyzeConfig(
            model="<model object>", corpus="<text>", windows=3, ctx=16, n=(1, 2, 4), draws=2
        )
        run_analysis(config, TEXT, model=model, out=out, resume=True, progress=False, strict=True)
    assert "\n" not in str(info.value)
    assert _window(out, 1).exists()  # strict leaves the file where it is


def test_window_of_another_corpus_is_not_resumed_without_config(
    model: Any, foreign: Path, tmp_path: Path
) -> None:
    """The probe: config.json deleted, rerun over another text with --resume: every
    foreign window is moved aside and recomputed; nothing of the other text survives."""
    out = tmp_path / "run"
    shutil.copytree(foreign, out)
    (out / "windows" / "config.json").unlink()
    res = analyze(model, text=TEXT, out=out, resume=True, **KW)
    assert res.run["timings_s"]["windows_run"] == 3
    assert len(res.run["rejected_windows"]) == 3
    fresh = analyze(model, text=TEXT, **KW)
    pd.testing.assert_frame_equal(res.metrics, fresh.metrics)


def test_an_ablated_model_is_another_model(model: Any, clean: Path, tmp_path: Path) -> None:
    """analyze(model object) fingerprints weights and active hooks, not the class name:
    resuming a clean run with an ablated model is refused, and without config.json its
    windows are recomputed (tables of the ablated model, not a mix)."""
    from tl_geom import ablate_heads

    out = tmp_path / "run"
    shutil.copytree(clean, out)
    with ablate_heads(model, [(0, 0), (0, 1), (0, 2)]):  # layer 1 sees the change
        with pytest.raises(TlGeomError, match=r"other arguments .*model_identity"):
            analyze(model, text=TEXT, out=out, resume=True, **KW)
        (out / "windows" / "config.json").unlink()
        res = analyze(model, text=TEXT, out=out, resume=True, **KW)
        fresh = analyze(model, text=TEXT, **KW)
    assert res.run["timings_s"]["windows_run"] == 3
    pd.testing.assert_frame_equal(res.metrics, fresh.metrics)
    assert not res.metrics.equals(Analysis.load(clean).metrics)


def test_concurrent_writers_never_tear_a_file(tmp_path: Path) -> None:
    """A simulated second writer: two threads replace one file 200 times each while a
    reader reads it; every read is one writer's whole content, none fails."""
    path = tmp_path / "f.bin"
    payloads = [bytes([k]) * 200_000 for k in (1, 2)]
    atomic_write_bytes(path, payloads[0])
    stop = threading.Event()
    bad: list[str] = []

    def write(data: bytes) -> None:
        for _ in range(200):
            atomic_write_bytes(path, data)

    def read() -> None:
        while not stop.is_set():
            try:
                if path.read_bytes() not in payloads:
                    bad.append("torn")
            except FileNotFoundError:
                bad.append("missing")

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    reader = threading.Thread(target=read)
    reader.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    reader.join()
    assert bad == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]  # no temporary left


def test_full_disk_is_one_error_and_leaves_no_temporary(tmp_path: Path, monkeypatch: Any) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    (tmp_path / "a.csv").write_text("old")
    monkeypatch.setattr(results_mod.os, "fsync", full)
    with pytest.raises(TlGeomError, match=r"could not write .*a\.csv: No space left on device"):
        results_mod.atomic_write_text(tmp_path / "a.csv", "new")
    assert [p.name for p in tmp_path.iterdir()] == ["a.csv"]
    assert (tmp_path / "a.csv").read_text() == "old"  # the old file untouched


def test_full_disk_from_the_cli(
    tiny_dir: Path, corpus_file: Path, tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(results_mod.os, "fsync", full)
    out = tmp_path / "run"
    assert main([*_cli(tiny_dir, corpus_file, out)]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and err.count("\n") == 1
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not (out / LOCK_NAME).exists()


def test_second_live_run_meets_the_lock_and_a_stale_lock_is_taken(
    model: Any, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    host = __import__("socket").gethostname()
    (out / LOCK_NAME).write_text(f"{os.getppid()} {host}")  # a live process holds it
    with pytest.raises(TlGeomError, match="in use by another live run") as info:
        analyze(model, text=TEXT, out=out, **KW)
    assert "\n" not in str(info.value) and not (out / "windows").exists()
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    (out / LOCK_NAME).write_text(f"{int(done.stdout)} {host}")  # its process is gone
    analyze(model, text=TEXT, out=out, **KW)
    assert not (out / LOCK_NAME).exists() and (out / "metrics.csv").exists()
    with OutLock(out), pytest.raises(TlGeomError, match="in use"):
        OutLock(out).acquire()  # a second run in this very process, too


def test_out_with_other_files_is_refused_and_untouched(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "metrics.csv").write_text("my own numbers")
    (out / "notes.txt").write_text("keep")
    with pytest.raises(TlGeomError, match=r"not a tl-geom analyze run .*notes\.txt"):
        check_out(out, "analyze")
    for name in ("metrics.csv", "run.json", "report.html"):
        (tmp_path / "an").mkdir(exist_ok=True)
        (tmp_path / "an" / name).write_text("x")
    check_out(tmp_path / "an", "analyze")  # a run of the same command
    with pytest.raises(TlGeomError, match=r"not a tl-geom sparsify run .*metrics\.csv"):
        check_out(tmp_path / "an", "sparsify")  # sparsify never replaces analyze's report
    (tmp_path / "file").write_text("x")
    with pytest.raises(TlGeomError, match="is an existing file"):
        check_out(tmp_path / "file", "analyze")


def _cli(tiny_dir: Path, corpus_file: Path, out: Path, *extra: str) -> list[str]:
    args = ["analyze", "--model", str(tiny_dir), "--corpus", str(corpus_file), "--windows"]
    return [*args, "3", "--ctx", "16", "--out", str(out), "--no-report", *extra]


@pytest.fixture(scope="module")
def broken_models(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("broken")
    shutil.copytree(tiny_dir, root / "badcfg")
    (root / "badcfg" / "config.json").write_text("{not json")
    shutil.copytree(tiny_dir, root / "noweights")
    for f in (root / "noweights").glob("*.safetensors"):
        f.unlink()
    return root


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--device", "banana"], "is not a torch device"),
        (["--device", "meta"], "holds no data"),
        (["--seed", "99999999999999999999999"], "0..2**63-1"),
        (["--model", "{broken}/badcfg"], "cannot load the model in"),
        (["--model", "{broken}/noweights"], "cannot load the model in"),
        (["--out", "{tmp}/a_file"], "is an existing file"),
        (["--out", "/dev/null/run"], "cannot create the directory /dev/null/run"),
    ],
)
def test_cli_failures_are_one_line_and_write_nothing(
    tiny_dir: Path,
    corpus_file: Path,
    broken_models: Path,
    tmp_path: Path,
    capsys: Any,
    extra: list[str],
    message: str,
) -> None:
    (tmp_path / "a_file").write_text("mine")
    extra = [e.format(broken=broken_models, tmp=tmp_path) for e in extra]
    out = tmp_path / "run"
    assert main([*_cli(tiny_dir, corpus_file, out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
    assert not out.exists()  # nothing written before validation passed
    assert (tmp_path / "a_file").read_text() == "mine"


def test_provenance_records_what_ran(
    tiny_dir: Path, corpus_file: Path, tmp_path: Path, capsys: Any
) -> None:
    """--layers "" records the layers analysed; --resume --backend hooks on an sdpa run
    records each window's backend."""
    out = tmp_path / "run"
    assert main(_cli(tiny_dir, corpus_file, out, "--layers", "", "--backend", "sdpa")) == 0
    run = Analysis.load(out).run
    assert run["config"]["layers"] == [0, 1] and run["facts"]["layers"] == [0, 1]
    assert run["facts"]["window_backends"] == ["sdpa"] * 3
    _window(out, 2).unlink()
    assert main(_cli(tiny_dir, corpus_file, out, "--resume", "--backend", "hooks")) == 0
    run = Analysis.load(out).run
    assert run["facts"]["window_backends"] == ["sdpa", "sdpa", "hooks"]
    assert run["backend"] == "hooks+sdpa"


def test_row_tolerance_follows_the_input_dtype() -> None:
    """bf16 rounds 1/3 to 0.333984375: three such weights sum to 1.00195, off by more
    than 1e-3 but within bf16's own rounding; the same sum in float64 is an error whose
    message says what was measured."""
    from tl_geom._checks import row_sum_atol
    from tl_geom.geometry.top_n import separability

    row = torch.full((1, 3), 1 / 3, dtype=torch.bfloat16)
    assert abs(float(row.double().sum()) - 1) > 1e-3
    values = torch.randn(1, 3, 4, dtype=torch.float64)
    res = separability(row, values, [1, 2])
    assert res.f1[0, 0] == 1.0  # N = 1 is always separable
    assert row_sum_atol(torch.float16) == 4 * torch.finfo(torch.float16).eps
    with pytest.raises(TlGeomError, match=r"measured: the worst row .* sums to 1\.00195"):
        separability(row.double(), values, [1, 2])


@pytest.mark.parametrize("atol", [float("nan"), float("inf"), -1.0])
def test_nan_or_negative_atol_is_an_error(atol: float) -> None:
    from tl_geom.geometry.top_n import separability

    alpha = torch.full((1, 4), 0.5, dtype=torch.float64)  # rows sum to 2: not weights
    with pytest.raises(TlGeomError, match="pass a finite row-sum tolerance"):
        separability(alpha, torch.randn(1, 4, 3, dtype=torch.float64), [1], atol=atol)


@pytest.mark.parametrize("scale", [1e160, 1e155])
def test_overflowing_values_are_an_error_not_inf(scale: float) -> None:
    """Values of 1e160 gave a random-baseline P of inf; now both metrics refuse them."""
    from tl_geom.geometry.baseline import random_separability
    from tl_geom.geometry.top_n import separability

    alpha = torch.softmax(torch.randn(2, 16, dtype=torch.float64), -1)
    values = torch.randn(2, 16, 8, dtype=torch.float64) * scale
    with pytest.raises(TlGeomError, match="overflow float64"):
        separability(alpha, values, [1, 4])
    with pytest.raises(TlGeomError, match="overflow float64"):
        random_separability(alpha, values, [1, 4], draws=2)
    ok = separability(alpha, values / scale * 1e150, [1, 4])  # large but safe: finite
    assert torch.isfinite(ok.f1).all()


def test_ablate_heads_with_nan_means_is_an_error(model: Any) -> None:
    from tl_geom import ablate_heads
    from tl_geom.lens.hooks import model_dims

    dims = model_dims(model)
    means = torch.zeros(dims.n_layers, dims.n_heads, dims.d_head)
    means[0, 1, 0] = float("nan")
    with pytest.raises(TlGeomError, match="means holds 1 NaN/inf"):
        ablate_heads(model, [(0, 1)], "mean", means=means)
