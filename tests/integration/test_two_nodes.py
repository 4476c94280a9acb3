"""A two-node Ray cluster on this machine: a head with no CPUs (so every Ray Train worker
must run on the other node), a second node joined with `ray start --address`, each with its
own ports and temp dir, and an update whose store and Ray Train storage are on the moto S3
server. The driver and the second node run in different empty folders: nothing may pass
through a local filesystem they share. Both nodes are torn down by PID."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from tests.integration.ray_nodes import REPO, kill_node, short_temp_dir, start_node
from tests.support.ports import free_ports
from training.store import open_store

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

SHOP = ["--synth-n-windows", "2", "--synth-interactions-per-window", "1200",
        "--synth-transactions-per-window", "500", "--synth-n-users", "300",
        "--synth-n-items", "150"]


def ray_env(moto_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in moto_env.items() if k != "RAY_ADDRESS"}
    return {**env, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture
def two_nodes(tmp_path: Path, moto_s3: str) -> Iterator[tuple[str, str, Path]]:
    """(the head's GCS address, its temp dir, its working folder).

    The head (127.0.0.2, 2 CPUs) is where Ray Train's workers can run; the second node
    (127.0.0.1, no CPUs) is where the driver attaches. Ray rewrites a join address of
    127.0.0.1 into the machine's outward IP, so the head takes another loopback address."""
    gcs, dashboard, client, *agent_ports = free_ports(7)
    head_tmp, node_tmp = short_temp_dir("ss-head-"), short_temp_dir("ss-node-")
    head_dir, node_dir = tmp_path / "head", tmp_path / "node"
    head_dir.mkdir()
    node_dir.mkdir()
    env = ray_env(dict(os.environ))
    try:
        start_node(["--head", "--node-ip-address", "127.0.0.2", "--port", str(gcs),
               "--num-cpus", "2", "--temp-dir", head_tmp,
               "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
               "--ray-client-server-port", str(client),
               "--dashboard-agent-listen-port", str(agent_ports[0]),
               "--metrics-export-port", str(agent_ports[1])], head_dir, env)
        # Ray refuses to join a node while this is 0 (its "no multi-node" switch); the node
        # still binds to loopback through --node-ip-address.
        start_node(["--address", f"127.0.0.2:{gcs}", "--node-ip-address", "127.0.0.1",
               "--num-cpus", "0", "--temp-dir", node_tmp,
               "--dashboard-agent-listen-port", str(agent_ports[2]),
               "--metrics-export-port", str(agent_ports[3])], node_dir,
              {**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"})
        yield f"127.0.0.2:{gcs}", head_tmp, head_dir
    finally:
        assert kill_node(node_tmp) == [] and kill_node(head_tmp) == []


def test_an_update_trains_on_the_other_node_through_s3_only(
        two_nodes: tuple[str, str, Path], tmp_path: Path, moto_s3: str,
        s3_bucket: str) -> None:
    address, head_tmp, head_dir = two_nodes
    driver_dir = tmp_path / "driver"
    driver_dir.mkdir()
    bucket = s3_bucket.split("/")[2]
    run = subprocess.run(
        [str(REPO / ".venv" / "bin" / "python"), "-m", "training.incremental",
         "--ray-address", address, "--trainer", "ray", "--num-workers", "2",
         "--store", s3_bucket, "--endpoint-url", moto_s3,
         "--storage-path", f"s3://{bucket}/ray-runs", "--model-finetune-layers", "0",
         "--source", "synthetic", *SHOP],
        cwd=driver_dir, env=ray_env(dict(os.environ)), capture_output=True, text=True,
        timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    summary = re.search(r"SUMMARY version=(\S+) ", run.stdout)
    assert summary is not None and "trainer=ray (trainer=ray)" in run.stdout

    store = open_store(s3_bucket, moto_s3)
    latest = store.latest()
    assert latest is not None and latest.version == summary.group(1)
    assert store.read_meta(latest.version)["window"] == "2024-01-01"
    # The driver's node has no CPUs: both Ray Train workers ran on the head...
    logs = "\n".join(p.read_text(errors="replace")
                     for p in Path(head_tmp).glob("session_*/logs/worker-*"))
    assert len(re.findall(r"RayTrainWorker", logs)) >= 2, logs[-2000:]
    # ...and their checkpoint went to S3, not to a folder the driver could read.
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=moto_s3).list_objects_v2(
        Bucket=bucket, Prefix="ray-runs/").get("Contents", [])]
    assert any("checkpoint" in k for k in keys), keys[:20]
    # Nothing was written next to the driver or the head (no local store or runs/).
    assert sorted(p.name for p in driver_dir.iterdir()) == []
    assert sorted(p.name for p in head_dir.iterdir()) == []
