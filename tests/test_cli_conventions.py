"""CLI conventions: --version from package metadata, defaults in --help, no abbreviations."""

from importlib.metadata import version
from typing import Any

import pytest

import tl_geom
from tl_geom.app.cli import main


def test_version_is_the_package_metadata(capsys: Any) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"tl-geom {version('tl-geom')}"
    assert tl_geom.__version__ == version("tl-geom")


@pytest.mark.parametrize("command", ["analyze", "sparsify", "summary", "headnorm"])
def test_help_shows_defaults(command: str, capsys: Any) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert "(default: " in out
    assert "(default " not in out.replace("(default: ", "")  # no doubled default texts


def test_abbreviated_options_are_errors(capsys: Any) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "--window", "3"])
    assert exc.value.code == 2
    assert "--window" in capsys.readouterr().err
