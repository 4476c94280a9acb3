"""Support for tests that start their own Ray nodes with `ray start` (a head from
cluster/start_local.sh, a second node joining it): free loopback ports, and finding and
killing a node's processes by PID through its temp dir, never `ray stop` (which would end
the test session's own Ray)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RAY = str(REPO / ".venv" / "bin" / "ray")


def short_temp_dir(prefix: str) -> str:
    """A node's temp dir under /tmp: Ray's socket paths must stay under ~100 characters."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def node_groups(temp_dir: str) -> set[int]:
    """Process groups of the node started with ``temp_dir``: `ray start` puts its daemons in
    one group, and some of them (the client server, the agents) do not name the node's
    session dir, so the group of those that do is what identifies them all."""
    named = subprocess.run(["pgrep", "-f", f"{temp_dir}/session_"], capture_output=True,
                           text=True, check=False).stdout.split()
    groups = set()
    for pid in named:
        try:
            groups.add(os.getpgid(int(pid)))
        except ProcessLookupError:
            pass
    return groups - {os.getpgrp()}  # never this test session's own group


def group_pids(groups: set[int]) -> list[int]:
    """Live (not zombie) processes in ``groups`` and their descendants (a raylet's workers
    lead process groups of their own)."""
    table = subprocess.run(["ps", "-eo", "pid=,ppid=,pgid=,stat="], capture_output=True,
                           text=True, check=True).stdout.splitlines()
    rows = [[int(x) for x in line.split()[:3]] + [line.split()[3]]
            for line in table if line.strip()]
    found = {pid for pid, _, pgid, _ in rows if pgid in groups}
    while True:
        more = {pid for pid, ppid, _, _ in rows if ppid in found} - found
        if not more:
            break
        found |= more
    return sorted(pid for pid, _, _, stat in rows if pid in found and not stat.startswith("Z"))


def start_node(args: list[str], cwd: Path, env: dict[str, str]) -> None:
    """`ray start ARGS` in a new session, so the node's daemons form a process group of
    their own (they inherit the caller's otherwise)."""
    done = subprocess.run([RAY, "start", "--disable-usage-stats", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180, check=False,
                          start_new_session=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def node_pids(temp_dir: str) -> list[int]:
    return group_pids(node_groups(temp_dir))


def kill_node(temp_dir: str, timeout_s: float = 30.0) -> list[int]:
    """SIGKILL every process of the node by PID, wait until they are gone (zombies aside),
    remove the temp dir; returns the PIDs still alive after ``timeout_s``.

    The PIDs are taken before the first kill: a dead raylet's workers are re-parented and
    no longer found through it."""
    groups = node_groups(temp_dir)
    doomed = set(group_pids(groups))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        doomed |= set(group_pids(groups))
        running = [pid for pid in doomed if alive(pid)]
        if not running:
            break
        for pid in running:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    shutil.rmtree(temp_dir, ignore_errors=True)
    return sorted(pid for pid in doomed if alive(pid))


def alive(pid: int) -> bool:
    """Running (a zombie only waits for its parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
