"""`ray job submit` exactly as the README shows it, from a shell without the venv: a real Ray
head started by cluster/start_local.sh on its own ports and temp dir, one update submitted as
a job, the version it published read back, and the head stopped by PID (`ray stop` would end
this test session's own Ray too)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.config import SERVE_START_ENV
from serving.loopback import HAPROXY_BINARY_ENV, WRAPPER_NAME
from tests.integration.ray_nodes import (
    REPO,
    alive,
    group_pids,
    kill_node,
    node_groups,
    short_temp_dir,
)
from tests.support.ports import free_ports
from training.store import open_store

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

MARKER = "<!-- job-submit:"
# No .venv on PATH, no Ray address: what a new user's shell has.
BARE_PATH = "/usr/local/bin:/usr/bin:/bin"


def readme_block() -> list[str]:
    """The commands of the README's job-submit block, continuation lines joined."""
    text = (REPO / "README.md").read_text()
    block = text[text.index(MARKER):].split("```bash\n", 1)[1].split("```", 1)[0]
    return [re.sub(r"\s+#.*$", "", line).strip()
            for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def bare_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "VIRTUAL_ENV", "PYTHON"))}
    return {**env, "PATH": BARE_PATH}


@pytest.fixture
def head(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A head on free ports with its own temp dir (short: Ray's socket paths are limited)."""
    gcs, dashboard, agent, client, metrics = free_ports(5)
    temp_dir = short_temp_dir("ss-head-")
    started = subprocess.run(
        ["bash", "cluster/start_local.sh", "--port", str(gcs), "--dashboard-port",
         str(dashboard), "--num-cpus", "2", "--temp-dir", temp_dir, "--",
         "--dashboard-agent-listen-port", str(agent), "--ray-client-server-port", str(client),
         "--metrics-export-port", str(metrics)],
        cwd=REPO, env=bare_env(), capture_output=True, text=True, timeout=180, check=False)
    try:
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        assert f"{REPO}/.venv/bin/python" in started.stdout  # the jobs' interpreter
        yield dashboard, temp_dir
    finally:
        assert kill_node(temp_dir) == []


def test_the_readme_job_submit_publishes_a_version_from_a_shell_without_the_venv(
        head: tuple[int, str], tmp_path: Path) -> None:
    dashboard, temp_dir = head
    start, export, submit, stop = readme_block()
    assert start.startswith("cluster/start_local.sh") and stop.startswith("cluster/stop_local.sh")
    # This test's ports and folders; everything else as documented.
    submit = submit.replace("127.0.0.1:8265", f"127.0.0.1:{dashboard}").replace(
        '"$PWD/runs/', f'"{tmp_path}/runs/')
    assert shutil.which("ray", path=BARE_PATH) is None and "python -m" in submit
    job = subprocess.run(["bash", "-c", f"{export} && {submit}"], cwd=REPO, env=bare_env(),
                         capture_output=True, text=True, timeout=600, check=False)
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-4000:]
    assert "succeeded" in job.stdout
    summary = re.search(r"SUMMARY version=(\S+) window=(\S+)", job.stdout)
    assert summary is not None, job.stdout[-4000:]
    latest = open_store(str(tmp_path / "runs" / "store")).latest()
    assert latest is not None and latest.version == summary.group(1)
    assert summary.group(2) == "2024-01-01"

    head_pids = group_pids(node_groups(temp_dir))
    assert len(head_pids) >= 5  # GCS, raylet, dashboard, agents, ...: the script's group
    assert_serves_like_the_app(head_pids)
    stopped = subprocess.run(["bash", stop.split()[0], "--temp-dir", temp_dir], cwd=REPO,
                             env=bare_env(), capture_output=True, text=True, timeout=60,
                             check=False)
    assert stopped.returncode == 0, stopped.stderr
    assert [pid for pid in head_pids if alive(pid)] == []


def process_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0")
                if "=" in item)


def assert_serves_like_the_app(head_pids: list[int]) -> None:
    """The head's raylet (whose environment every Serve actor a job starts inherits) has
    serving.config.SERVE_START_ENV and the loopback HAProxy wrapper (serving.loopback), as
    `python -m serving.app` sets them on a local Ray: a job's Serve app must not listen
    beyond loopback."""
    raylets = [pid for pid in head_pids
               if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet"]
    assert len(raylets) == 1, head_pids
    env = process_env(raylets[0])
    assert {k: env.get(k) for k in SERVE_START_ENV} == SERVE_START_ENV
    wrapper = Path(env[HAPROXY_BINARY_ENV])
    assert wrapper.name.startswith(WRAPPER_NAME) and os.access(wrapper, os.X_OK), wrapper
