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


# What a stage loads only once it runs: `--help` and a bad flag must not wait for them.
HEAVY = ("torch", "ray", "transformers", "sklearn", "lightgbm")
PROBE = f"""
import runpy, sys
HEAVY = {HEAVY!r}
module = sys.argv[1]
sys.argv = [module, "--help"]
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as stop:
    assert stop.code in (0, None), stop.code
print("LOADED=" + ",".join(name for name in HEAVY if name in sys.modules))
"""


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_parses_before_importing_the_runtime(name: str) -> None:
    module = SCRIPTS[name].split(":")[0]
    proc = subprocess.run([sys.executable, "-c", PROBE, module], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout
    loaded = proc.stdout.rsplit("LOADED=", 1)[-1].strip()
    assert "LOADED=" in proc.stdout and loaded == "", \
        f"`python -m {module} --help` imported {loaded}"
