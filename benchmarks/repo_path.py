"""Puts the repository root on ``sys.path`` when imported.

Benchmark scripts run as ``python benchmarks/<name>.py``, which puts only ``benchmarks/`` on
the path; the serving benchmarks publish their test versions with ``tests.support``, which is
not an installed package. Importing this module first lets them run from any directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
