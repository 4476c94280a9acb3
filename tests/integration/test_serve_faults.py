"""The Serve app as a shop gets it (the fused topology, two ShopStream replicas behind
HAProxy) under faults, on a real local Ray over real HTTP on 127.0.0.1: stalled request
bodies, overload, a broken store pointer, reloads and a redeploy under a client loop, and a
replica killed with SIGKILL.

Every load here is bounded in count and time. The app sheds beyond ``max_inflight=8`` so
that 200 concurrent clients are sure to meet the limit on any machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from serving.config import FUSED
from tests.integration.serve_support import (
    AUTH,
    POLL_S,
    SWITCH_MARGIN_S,
    TOKEN,
    TXNS,
    App,
    deploy_app,
    kill_under_load,
    loop_running,
    publish_next,
    redeploy_under_load,
    replica_pids,
)
from tests.support.published import wait_serving

pytestmark = pytest.mark.integration

MAX_INFLIGHT = 8
BODY_TIMEOUT_S = 5.0  # the default
RECOVERY_S = 120.0  # a restarted replica loads MiniLM and the model on a busy machine


@pytest.fixture(scope="module")
def app(serve_http: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    yield from deploy_app(serve_http, tmp_path_factory.mktemp("serve-faults"),
                          max_inflight=MAX_INFLIGHT)


def stalled_connection(url: str, path: str, token: str | None) -> socket.socket:
    """A connection whose request declares a 100-byte body and never sends it."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    sock.sendall((f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{auth}"
                  "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n").encode())
    return sock


def test_stalled_bodies_leave_health_and_recommend_answering(app: App) -> None:
    socks: list[socket.socket] = []
    try:
        for n in range(300):  # authenticated ones, and the open /healthz with a body
            socks.append(stalled_connection(app.url, "/recommend" if n % 2 else "/healthz",
                                            TOKEN if n % 2 else None))
        time.sleep(1.5)  # past the burst of opening them: now they only hold their slots
        with app.client() as client:
            began = time.monotonic()
            health = client.get("/healthz")
            health_s = time.monotonic() - began
            began = time.monotonic()
            answer = client.post("/recommend", json={"user_id": "u3", "k": 3})
            answer_s = time.monotonic() - began
        print(f"with 300 stalled bodies: /healthz {health_s:.3f} s, /recommend {answer_s:.3f} s")
        assert health.status_code == 200 and health_s < 1.0, health.text
        assert answer.status_code == 200 and answer_s < 1.0
        first = socks[1]  # a stalled /recommend is answered 408 once body_timeout_s passes
        first.settimeout(BODY_TIMEOUT_S + 20)
        head = first.recv(4096).split(b"\r\n", 1)[0]
        assert head.startswith(b"HTTP/1.1 408"), head
    finally:
        for sock in socks:
            sock.close()


async def _hammer(url: str, clients: int, per_client: int
                  ) -> list[tuple[int, float, dict[str, str]]]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, limits=limits,
                                 timeout=30.0) as client:
        async def one(n: int) -> list[tuple[int, float, dict[str, str]]]:
            out = []
            for i in range(per_client):
                began = time.monotonic()
                if (n + i) % 2:
                    response = await client.post("/fraud", json=TXNS)
                else:
                    response = await client.post("/recommend", json={"user_id": "u3", "k": 6})
                out.append((response.status_code, time.monotonic() - began,
                            dict(response.headers)))
            return out

        runs = await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(clients))), 180)
    return [sample for run in runs for sample in run]


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def test_overload_gets_only_200s_and_fast_503s(app: App) -> None:
    samples = asyncio.run(_hammer(app.url, clients=200, per_client=5))
    codes = {code for code, _, _ in samples}
    ok = [s for code, s, _ in samples if code == 200]
    shed = [s for code, s, _ in samples if code == 503]
    print(f"200 clients x 5: {len(ok)} x 200 (p99 {p99(ok):.3f} s), "
          f"{len(shed)} x 503 (p99 {p99(shed) if shed else 0:.3f} s)")
    assert codes <= {200, 503} and len(samples) == 1000
    assert shed and ok  # 200 clients against max_inflight=8: some shed, some admitted
    assert all(h["retry-after"] == "1" for code, _, h in samples if code == 503)
    # The latency targets (p99 of 503s < 100 ms, of 200s < 2 s) are not asserted: on this
    # 2-core machine 200 httpx clients in this process and the replicas share the CPU, so
    # the client's own queue dominates; benchmarks/serve_latency.py's overload phase
    # records them with a cheaper client (benchmarks/recorded/serve_latency.md, issue #11).


def wait_pointer_error(client: httpx.Client, reason: str | None,
                       timeout_s: float = 30.0, in_a_row: int = 4) -> dict[str, Any]:
    """/version once every deployment reports a pointer error containing ``reason`` (None:
    none) in ``in_a_row`` answers running: the replicas poll the store independently and
    each answer comes from one of them."""
    deadline = time.monotonic() + timeout_s
    agreed = 0
    while True:
        status: dict[str, Any] = client.get("/version").json()["deployments"]
        errors = [s.get("pointer_error") for s in status.values()]
        met = all((e is None) if reason is None else (e is not None and reason in e)
                  for e in errors)
        agreed = agreed + 1 if met else 0
        if agreed >= in_a_row or time.monotonic() > deadline:
            return status
        time.sleep(0.05 if met else 0.1)


@pytest.mark.parametrize(("content", "reason"), [
    (b"\x00garbage", "latest.json"), (b"", "Expecting value"),
    (b"[]", "expected a JSON object"),
    (b'{"version": "../../etc"}', "../../etc"), (b'{"version": "v-missing"}', "v-missing"),
])
def test_a_broken_store_pointer_is_listed_and_flips_readiness(app: App, content: bytes,
                                                              reason: str) -> None:
    pointer = Path(app.store.root) / "latest.json"
    good = pointer.read_bytes()
    with app.client() as client:
        assert wait_pointer_error(client, None) and client.get("/healthz").status_code == 200
        pointer.write_bytes(content)
        try:
            status = wait_pointer_error(client, reason)
            for replica in status.values():
                assert reason in replica["skipped"]["latest.json"], replica
                assert replica["pointer_error"] == replica["skipped"]["latest.json"]
                assert replica["version"] == app.latest  # still serving it
            health = client.get("/healthz")
            assert (health.status_code, health.json()["status"]) == (503, "degraded")
            assert client.post("/recommend", json={"user_id": "u3"}).status_code == 200
        finally:
            pointer.write_bytes(good)
        wait_pointer_error(client, None)
    wait_serving(app.url, app.latest, 30.0, headers=AUTH)


def test_five_hot_reloads_under_load_fail_no_request(app: App) -> None:
    """(The redeploy under the same kind of loop: test_serve.py's redeploy test.)"""
    with loop_running(app, 4000, 240.0) as samples:
        for seed in range(11, 16):  # five hot reloads, each waited for
            app.latest = publish_next(app, seed=seed, thresholds=(0.3, 0.8))
            wait_serving(app.url, app.latest, POLL_S + SWITCH_MARGIN_S, headers=AUTH)
        time.sleep(1.0)
    failed = [s for s in samples if s.status != 200]
    print(f"5 hot reloads: {len(samples)} requests, {len(failed)} failed")
    assert len(samples) > 20 and not failed, failed[:3]
    assert samples[-1].body["model_version"] == app.latest


SCHEMATHESIS_CHECKS = ("not_a_server_error,response_schema_conformance,"
                       "positive_data_acceptance,status_code_conformance,"
                       "content_type_conformance")


def fuzz_round(app: App, tmp_path: Path, seed: int, budget_s: int) -> list[dict[str, Any]]:
    """One schemathesis run of ``budget_s`` seconds (fuzzing repeats until it is spent);
    fails on any check, returns the requests it sent."""
    har = tmp_path / f"schemathesis-{seed}.har"
    command = [str(Path(sys.executable).parent / "schemathesis"), "run",
               f"{app.url}/openapi.json", "-H", f"Authorization: Bearer {TOKEN}",
               "--checks", SCHEMATHESIS_CHECKS, "--max-examples", "50", "--seed", str(seed),
               "--workers", "1", "--request-timeout", "10", "--max-time", str(budget_s),
               "--report", "har", "--report-har-path", str(har), "--no-color"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=budget_s + 120,
                         check=False)
    print(run.stdout[-3000:])
    assert run.returncode == 0, run.stdout[-3000:]
    entries: list[dict[str, Any]] = json.loads(har.read_text())["log"]["entries"]
    return entries


def test_schemathesis_finds_no_5xx_schema_violation_or_rejected_valid_body(
        app: App, tmp_path: Path) -> None:
    """Property-based requests from the served OpenAPI (feature names pinned once loaded):
    every answer is a documented 2xx/4xx matching its schema, and every schema-valid body is
    accepted."""
    # #11's acceptance asks for >= 1,000 requests: ~36/s here on a quiet machine (one 40 s
    # round), ~10/s on a loaded one, so rounds with new seeds run until 1,000 are sent
    # (at most 4). Longer runs: SHOPSTREAM_FUZZ_S=300.
    budget_s = int(os.environ.get("SHOPSTREAM_FUZZ_S", "40"))
    entries: list[dict[str, Any]] = []
    for seed in range(7, 11):
        entries += fuzz_round(app, tmp_path, seed, budget_s)
        if len(entries) >= 1000:
            break
    statuses = Counter(e["response"]["status"] for e in entries)
    print(f"schemathesis: {len(entries)} requests, statuses {dict(statuses)}")
    assert len(entries) >= 1000 and not [s for s in statuses if s >= 500]


def test_a_killed_replica_makes_no_request_wait_over_2s(app: App) -> None:
    """One of the two replicas dies under four client loops: HAProxy resends the requests
    it held unanswered to the other (serving.config.HAPROXY_RETRY_ON), and no request
    waits 2 s for an answer. Serve then reloads HAProxy twice (the dead replica out, its
    replacement in); a request that meets a reload may still end in an error (HAProxy's
    500 page, or its keep-alive connection closed): measured 0-3 of 2,003 in 9 runs, so
    up to 0.5% are allowed here, each of them answered as fast as the rest."""
    pids = replica_pids(FUSED)
    assert len(pids) == 2, pids
    samples = kill_under_load(app, pids[0])
    slowest = max(s for _, s in samples)
    codes = Counter(c for c, _ in samples)
    errors = sum(n for code, n in codes.items() if code not in (200, 503))
    print(f"kill -9 of one of two ShopStream replicas: {len(samples)} requests, "
          f"{dict(codes)}, slowest {slowest:.2f} s")
    assert len(samples) > 100 and slowest < 2.0
    assert errors <= 0.005 * len(samples), codes
    wait_serving(app.url, app.latest, RECOVERY_S, headers=AUTH)  # Serve replaced it


def test_a_redeploy_keeps_serving_and_applies_user_config(app: App) -> None:
    """Serve replaces both replicas; with max_surge_percent=100 the new ones load their model
    before the old ones stop and drain, so no request fails."""
    user_config = {"user_config": {"poll_interval_s": 0.25, "generation": 1}}
    samples = redeploy_under_load(app, {FUSED: user_config})
    failed = [s for s in samples if s.status != 200]
    print(f"fused redeploy: {len(samples)} requests, {len(failed)} failed")
    assert len(samples) > 10 and not failed, failed[:3]
    assert {s.body["model_version"] for s in samples} == {app.latest}
    with app.client() as client:
        status = client.get("/version").json()["deployments"]
    assert {s["poll_interval_s"] for s in status.values()} == {0.25}
    wait_serving(app.url, app.latest, RECOVERY_S, headers=AUTH)
