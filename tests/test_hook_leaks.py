"""The suite's own guard: a test that leaves a hook behind fails (tests/conftest.py)."""

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]


def test_a_test_leaving_a_hook_behind_fails(pytester: pytest.Pytester) -> None:
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(
        """
        from tl_geom import tiny_model

        def test_leaks():
            model = tiny_model()
            model.blocks[0].attn.hook_v.add_hook(lambda x, hook: None)

        def test_cleans_up():
            model = tiny_model()
            with model.hooks(fwd_hooks=[("blocks.0.attn.hook_v", lambda x, hook: None)]):
                pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*left 1 hook(s) behind*hook_v*"])
