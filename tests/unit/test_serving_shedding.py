"""Load shedding (serving.shedding): beyond max_inflight, model requests get a fast 503."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from serving.api import create_api
from serving.schemas import (
    FraudListResponse,
    FraudRequest,
    FraudResponse,
    RecommendRequest,
    RecommendResponse,
    ReplicaStatus,
)

pytestmark = pytest.mark.unit


class GatedBackend:
    """Recommendations that wait for ``gate``: requests pile up in flight."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.entered = 0

    async def recommend(self, request: RecommendRequest) -> RecommendResponse:
        self.entered += 1
        await self.gate.wait()
        return RecommendResponse(user_id=request.user_id, items=[], strategy="popularity",
                                 model_version="v1")

    async def fraud(self, request: FraudRequest) -> FraudResponse | FraudListResponse:
        raise AssertionError("not called")

    async def statuses(self) -> dict[str, ReplicaStatus]:
        return {"Recommender": ReplicaStatus(deployment="Recommender", replica="r", ready=True,
                                             version="v1", loaded_at=None, poll_interval_s=1)}


async def _overload(max_inflight: int, clients: int, pad: int = 0
                    ) -> tuple[list[httpx.Response], Any]:
    """``clients`` concurrent /recommend calls, each body padded by ``pad`` spaces."""
    backend = GatedBackend()
    app = create_api(backend, max_body_bytes=65_536, token=None, max_inflight=max_inflight)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        calls = [asyncio.create_task(client.post(
            "/recommend", content=f'{{"user_id": "u{i}"}}{" " * pad}',
            headers={"Content-Type": "application/json"})) for i in range(clients)]
        for _ in range(200):  # until the admitted ones wait at the gate
            await asyncio.sleep(0.005)
            if backend.entered == min(clients, max_inflight or clients):
                break
        shed = [c for c in calls if c.done()]
        health = await client.get("/healthz")  # never shed
        backend.gate.set()
        answers = await asyncio.gather(*calls)
    return answers, (len(shed), health.status_code, backend.entered)


def test_beyond_max_inflight_requests_get_a_fast_503_with_retry_after() -> None:
    answers, (shed_early, health, entered) = asyncio.run(_overload(max_inflight=3, clients=10))
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] * 3 + [503] * 7 and entered == 3
    assert shed_early == 7  # answered while the admitted three were still running
    assert health == 200
    rejected = next(r for r in answers if r.status_code == 503)
    assert rejected.headers["Retry-After"] == "1"
    assert "Connection" not in rejected.headers  # a small unread body: kept alive
    error = rejected.json()["error"]
    assert error["code"] == "overloaded" and "max_inflight" in error["message"]


def test_a_shed_request_with_a_large_unread_body_closes_its_connection() -> None:
    answers, _ = asyncio.run(_overload(max_inflight=2, clients=5, pad=20_000))
    rejected = [r for r in answers if r.status_code == 503]
    assert len(rejected) == 3 and {r.headers["Connection"] for r in rejected} == {"close"}


def test_max_inflight_zero_sheds_nothing() -> None:
    answers, (shed_early, _, entered) = asyncio.run(_overload(max_inflight=0, clients=10))
    assert [r.status_code for r in answers] == [200] * 10 and entered == 10 and shed_early == 0


def test_slots_are_given_back_after_each_request() -> None:
    async def run() -> list[int]:
        backend = GatedBackend()
        backend.gate.set()
        app = create_api(backend, max_body_bytes=4096, token=None, max_inflight=1)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://t") as client:
            codes = [(await client.post("/recommend", json={"user_id": "u"})).status_code
                     for _ in range(5)]
            codes.append((await client.post("/recommend", json={"user_id": 5})).status_code)
            codes.append((await client.post("/recommend", json={"user_id": "u"})).status_code)
        return codes

    assert asyncio.run(run()) == [200] * 5 + [422, 200]


def test_shedding_settings_are_validated() -> None:
    import math

    from serving.config import ServeConfig
    from training.cli import ConfigError

    config = ServeConfig()
    assert (config.max_inflight, config.request_timeout_s, config.hedge_after_s) == \
        (64, 1.5, 0.75)
    for bad in ({"max_inflight": -1}, {"request_timeout_s": 0.0},
                {"request_timeout_s": math.inf}, {"hedge_after_s": -1.0},
                {"hedge_after_s": 1.5}):
        with pytest.raises(ConfigError, match=f"^{next(iter(bad))}: "):
            ServeConfig(**bad)  # type: ignore[arg-type]


def test_a_stalled_body_holds_no_model_slot() -> None:
    """The body guard reads the whole body before shedding counts the request."""

    async def run() -> tuple[int, int]:
        backend = GatedBackend()
        backend.gate.set()
        app = create_api(backend, max_body_bytes=4096, token=None, max_inflight=1,
                         body_timeout_s=0.5)
        stalled_in = asyncio.Event()

        async def stalled_receive() -> dict[str, Any]:
            stalled_in.set()
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

        async def ignore(message: Any) -> None:
            return None

        scope = {"type": "http", "method": "POST", "path": "/recommend", "root_path": "",
                 "headers": [(b"content-length", b"100")], "query_string": b""}
        stalled = asyncio.create_task(app(scope, stalled_receive, ignore))  # type: ignore[arg-type]
        await stalled_in.wait()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://t") as client:
            code = (await client.post("/recommend", json={"user_id": "u"})).status_code
        await stalled
        return code, backend.entered

    assert asyncio.run(run()) == (200, 1)
