"""Every stage runs as `python -m <module> --help` and as its console script."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import tomllib

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_console_script_module_has_help(
        name: str, help_of: Callable[[str], subprocess.CompletedProcess[str]]) -> None:
    module, func = SCRIPTS[name].split(":")
    assert func == "main"
    proc = help_of(module)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout
    first_line = (REPO / (module.replace(".", "/") + ".py")).read_text().split("\n")[0]
    assert "python -m" in first_line or "python -m " + module in \
        (REPO / (module.replace(".", "/") + ".py")).read_text()[:400]


def test_bad_setting_exits_2_naming_it() -> None:
    proc = subprocess.run([sys.executable, "-m", "training.train", "--source", "online_retail"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "path" in proc.stderr
