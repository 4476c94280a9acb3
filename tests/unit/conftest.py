"""Fixtures shared by the unit tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
HELP_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "RAY_USAGE_STATS_ENABLED": "0", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models train faster on one thread than contending for a busy machine (use with
    ``pytest.mark.usefixtures("one_thread")`` in a module's ``pytestmark``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def help_of() -> Callable[[str], subprocess.CompletedProcess[str]]:
    """``python -m <module> --help``, run once per module and test process, shared by every
    test file that checks it (a start-up still costs about a second of CPU)."""
    cache: dict[str, subprocess.CompletedProcess[str]] = {}

    def run(module: str) -> subprocess.CompletedProcess[str]:
        if module not in cache:
            cache[module] = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO,
                                           env=HELP_ENV, capture_output=True, text=True,
                                           timeout=120)
        return cache[module]
    return run
