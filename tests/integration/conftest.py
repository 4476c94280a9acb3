"""Shared integration fixtures: a moto S3 server in a child process, and fresh buckets.

``moto_server`` (session) starts ``moto.server.ThreadedMotoServer`` on 127.0.0.1 with a
free port in a child process: the server's state, threads and warnings stay out of the
test process, and the child exits when its stdin closes, so a killed pytest leaves no
server behind. ``moto_s3`` (per test) sets fake credentials through monkeypatch, so they
never leak into other tests, and yields the endpoint URL. ``AWS_ENDPOINT_URL`` is left
unset on purpose: pass the endpoint explicitly, or set it yourself in the test.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from serving.config import SERVE_START_ENV
from serving.loopback import haproxy_env
from tests.support.ports import haproxy_port_env
from training.cli import LOCAL_RAY_ENV

_SERVER = """
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()  # returns when the test process closes our stdin (or dies)
server.stop()
"""
_START_TIMEOUT_S = 60.0


def _read_port(proc: subprocess.Popen[bytes], log: Path) -> int:
    assert proc.stdout is not None
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline().strip()
            if line.isdigit():
                return int(line)
            break
        if proc.poll() is not None:
            break
    raise RuntimeError(f"moto server did not start; its log: {log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Endpoint URL of a moto S3 server shared by the whole session (no env changes)."""
    log = tmp_path_factory.mktemp("moto") / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with open(log, "wb") as log_fh:
        proc = subprocess.Popen([sys.executable, "-c", _SERVER], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=log_fh, env=env)
    try:
        yield f"http://127.0.0.1:{_read_port(proc, log)}"
    finally:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


@pytest.fixture
def moto_s3(moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The moto endpoint URL, with fake credentials and region set for this test only."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # Keep a developer's ~/.aws profiles (and their endpoints) out of the test.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    return moto_server


@pytest.fixture
def s3_client(moto_s3: str) -> Iterator[Any]:
    """A plain boto3 S3 client on the moto server, for arranging and inspecting buckets."""
    import boto3

    client = boto3.session.Session().client("s3", endpoint_url=moto_s3)
    yield client
    client.close()


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    """``s3://<fresh bucket>/<prefix>`` on the moto server."""
    bucket = f"test-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=bucket)
    return f"s3://{bucket}/shopstream/ckpt"


# Ray must stay on loopback and quiet; set before ray.init so every worker inherits it.
# RAY_worker_niceness: Ray starts its workers at nice 15, so any nice-0 process (this pytest
# driver's client loops, another job on a CI box) starves Serve's proxy and replicas, which
# then miss Serve's start-up and health deadlines; at 0 they share the CPU on equal terms.
RAY_ENV = {**LOCAL_RAY_ENV, "RAY_AUTH_MODE": "disabled",
           "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2", "RAY_worker_niceness": "0",
           **SERVE_START_ENV}


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One real local Ray instance (2 CPUs, 127.0.0.1) shared by the session's tests."""
    import ray

    # Own HAProxy ports, chosen when the session's Ray starts (not at collection).
    RAY_ENV.update(haproxy_port_env())
    RAY_ENV.update(haproxy_env("127.0.0.1"))  # the app's stats and metrics ports on loopback
    os.environ.update(RAY_ENV)
    # Worker, replica and Ray Train logs stay in the session's log files (tests that look for
    # leaked secrets read those) instead of flooding the pytest output between tests.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": RAY_ENV})
    node_ip = ray.nodes()[0]["NodeManagerAddress"]
    assert node_ip == "127.0.0.1", f"Ray bound to {node_ip}, not loopback"
    try:
        yield None
    finally:
        ray.shutdown()


@pytest.fixture
def idle_ray(ray_cluster: None) -> None:
    """Every CPU of the session's Ray free before a test that trains on it.

    Ray frees a finished test's actors (Tune trials, Train workers, Serve replicas)
    asynchronously; a Ray Train run started before they go waits for its workers' CPUs
    (start_retries bounds that wait in the product).
    Bounded: after 60 s the test fails naming the actors that still hold resources."""
    import ray

    total = ray.cluster_resources().get("CPU", 0.0)
    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0.0) < total:
        if time.monotonic() > deadline:
            pytest.fail(f"Ray CPUs still held 60 s after the previous test: "
                        f"{ray.available_resources().get('CPU', 0.0)}/{total} free; "
                        f"{ray_holders()}")
        time.sleep(0.2)


def ray_holders() -> str:
    """The live actors and placement groups of the session's Ray, from the GCS (the state
    API needs the dashboard, which the tests do not start)."""
    import ray
    import ray._private.state as gcs_state

    actors = [(a["ActorClassName"], a["Pid"]) for a in gcs_state.actors().values()
              if a["State"] == "ALIVE"]
    groups = [(g.get("name"), g.get("state"), g.get("bundles"))
              for g in ray.util.placement_group_table().values()
              if g.get("state") != "REMOVED"]
    return f"live actors: {actors}; placement groups: {groups}"


@pytest.fixture(scope="module")
def serve_http(ray_cluster: None) -> Iterator[str]:
    """Ray Serve on the session's Ray, its HTTP proxy on 127.0.0.1 at a free port; yields the
    base URL. Shut down at the end of the module, so its replicas free their CPUs."""
    import socket

    from ray import serve

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test on the session's Ray shows the end of the Ray Train controller log it
    wrote (placement waits and start retries live there, not in the pytest output)."""
    report = yield
    if report.failed and call.when == "call" and "ray_cluster" in getattr(item, "fixturenames", ()):
        tail = ray_train_log_tail(since=call.start)
        if tail:
            report.sections.append(("Ray Train controller log (tail)", tail))
    return report


def ray_train_log_tail(since: float, lines: int = 12) -> str:
    logs = Path("/tmp/ray/session_latest/logs/train")
    found = [p for p in logs.glob("ray-train-sys-controller-*.log")
             if p.stat().st_mtime >= since] if logs.is_dir() else []
    if not found:
        return ""
    newest = max(found, key=lambda p: p.stat().st_mtime)
    return "\n".join(line[:300] for line in newest.read_text().splitlines()[-lines:])
