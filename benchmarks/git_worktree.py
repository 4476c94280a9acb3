"""Detached git worktrees of other commits, for benchmarks that run old and new code side by
side in one run (``data_scaling.py``, ``fraud_reservoir.py``)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def worktrees(refs: Mapping[str, str], root: Path) -> Iterator[dict[str, Path]]:
    """A detached worktree of each named commit at ``root/<name>``; all removed on exit
    (also after an error: a left-over worktree blocks the next ``git worktree add``)."""
    made: dict[str, Path] = {}
    try:
        for name, ref in refs.items():
            path = root / name
            subprocess.run(["git", "worktree", "add", "-q", "--detach", str(path), ref],
                           cwd=REPO, check=True)
            made[name] = path
        yield made
    finally:
        for path in made.values():
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=REPO,
                           check=False)
