"""The HTTP layer over a fake backend (no Ray, no model): schemas, errors, auth, body limit."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serving.api import create_api
from serving.errors import (
    InvalidRequestError,
    NotReadyError,
    UnavailableError,
    field_path,
    status_of,
)
from serving.schemas import (
    FraudListResponse,
    FraudRequest,
    FraudResponse,
    FraudResult,
    RecommendedItem,
    RecommendRequest,
    RecommendResponse,
    ReplicaStatus,
    Thresholds,
)

pytestmark = pytest.mark.unit

TOKEN = "unit-test-token-123"
THRESHOLDS = Thresholds(review=0.5, decline=0.9, basis="test")


class FakeBackend:
    def __init__(self) -> None:
        self.ready = True
        self.pointer_error: str | None = None
        self.error: Exception | None = None
        self.seen: list[Any] = []

    async def recommend(self, request: RecommendRequest) -> RecommendResponse:
        self.seen.append(request)
        if self.error is not None:
            raise self.error
        items = [RecommendedItem(item_id=f"i{n}", title=f"item {n}", score=1.0 / (n + 1))
                 for n in range(request.k)]
        return RecommendResponse(user_id=request.user_id, items=items, strategy="popularity",
                                 model_version="v1")

    async def fraud(self, request: FraudRequest) -> FraudResponse | FraudListResponse:
        self.seen.append(request)
        results = [FraudResult(txn_id=t.txn_id, fraud_probability=0.25, decision="approve")
                   for t in request.transactions]
        if request.is_list:
            return FraudListResponse(results=results, model_version="v1",
                                     thresholds=THRESHOLDS)
        return FraudResponse(**results[0].model_dump(), model_version="v1",
                             thresholds=THRESHOLDS)

    async def statuses(self) -> dict[str, ReplicaStatus]:
        return {"Recommender": ReplicaStatus(
            deployment="Recommender", replica="r1", ready=self.ready,
            version="v1" if self.ready else None, loaded_at=None, poll_interval_s=1.0,
            pointer_error=self.pointer_error,
            skipped={"latest.json": self.pointer_error} if self.pointer_error else {})}


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def client(backend: FakeBackend) -> Iterator[TestClient]:
    app = create_api(backend, max_body_bytes=4096, token=None)
    with TestClient(app) as test_client:
        yield test_client


def test_valid_bodies_reach_the_backend_typed(client: TestClient, backend: FakeBackend) -> None:
    body = client.post("/recommend", json={"user_id": "u1", "k": 3}).json()
    assert [i["item_id"] for i in body["items"]] == ["i0", "i1", "i2"]
    assert backend.seen[-1] == RecommendRequest(user_id="u1", k=3)
    assert backend.seen[-1].exclude_purchased is False and backend.seen[-1].recent_item_ids == []
    one = client.post("/fraud", json={"amount": 2, "features": {"a": 1}}).json()
    assert one["decision"] == "approve" and one["thresholds"]["basis"] == "test"
    many = client.post("/fraud", json=[{"amount": -3.5}, {"amount": 1, "txn_id": "t"}]).json()
    assert [r["txn_id"] for r in many["results"]] == [None, "t"]
    assert backend.seen[-1].transactions[0].amount == -3.5


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/recommend", {"user_id": "u1", "k": True}, "k"),
    ("/recommend", {"user_id": " padded "}, "user_id"),
    ("/recommend", {"user_id": "u", "recent_item_ids": "i1"}, "recent_item_ids"),
    ("/fraud", {"amount": 1, "features": {"a": "1"}}, "features.a"),
    ("/fraud", {"amount": None}, "amount"),
    ("/fraud", [{"amount": 1}, {"amount": 2, "user_id": 5}], "transactions[1].user_id"),
    ("/fraud", 17, "body"),
    ("/fraud", "[" * 1_500 + "]" * 1_500, "body"),  # nested past the JSON parser limit
])
def test_invalid_bodies_are_422_naming_the_field(client: TestClient, backend: FakeBackend,
                                                path: str, body: Any, field: str) -> None:
    if isinstance(body, str):
        response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    else:
        response = client.post(path, json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and error["field"] == field
    assert error["message"].startswith(f"{field}: ")
    assert error["details"][0]["field"] == field
    assert backend.seen == []


def test_backend_errors_map_to_their_status(backend: FakeBackend) -> None:
    client = TestClient(create_api(backend, max_body_bytes=4096, token=None),
                        raise_server_exceptions=False)
    for error, status in ((InvalidRequestError("bad", field="features.x"), 422),
                          (NotReadyError("no model"), 503), (UnavailableError("gone"), 503),
                          (RuntimeError("bug"), 500)):
        backend.error = error
        response = client.post("/recommend", json={"user_id": "u1"})
        assert response.status_code == status
        assert set(response.json()["error"]) == {"code", "message", "field"}
    assert response.json()["error"] == {"code": "internal", "message": "internal error",
                                        "field": None}


def test_health_is_503_until_every_deployment_is_ready(client: TestClient,
                                                       backend: FakeBackend) -> None:
    backend.ready = False
    loading = client.get("/healthz")
    assert loading.status_code == 503 and loading.json()["status"] == "loading"
    backend.ready = True
    ready = client.get("/healthz")
    assert ready.status_code == 200 and ready.json()["deployments"]["Recommender"]["version"] \
        == "v1"
    assert client.get("/version").json()["deployments"]["Recommender"]["replica"] == "r1"


def test_unknown_routes_use_the_error_body(client: TestClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "Not Found",
                                         "field": None}}
    assert client.get("/recommend").status_code == 405


def test_bodies_over_the_limit_are_413_declared_or_streamed(client: TestClient,
                                                           backend: FakeBackend) -> None:
    big = b'{"user_id": "' + b"u" * 5000 + b'"}'
    declared = client.post("/recommend", content=big,
                           headers={"Content-Type": "application/json"})
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "payload_too_large"

    def stream() -> Iterator[bytes]:
        yield big[:3000]
        yield big[3000:]

    streamed = client.post("/recommend", content=stream(),
                           headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413 and backend.seen == []
    bad_length = client.post("/recommend", content=b"{}", headers={"Content-Length": "x"})
    assert bad_length.status_code == 400 and bad_length.headers["Connection"] == "close"
    assert bad_length.json() == {"error": {
        "code": "bad_request", "message": "Content-Length must be a non-negative integer",
        "field": "Content-Length"}}
    assert backend.seen == []


def test_the_bearer_token_guards_everything_but_health_and_docs(backend: FakeBackend) -> None:
    app = create_api(backend, max_body_bytes=4096, token=TOKEN)
    with TestClient(app) as client:
        assert client.post("/recommend", json={"user_id": "u"}).status_code == 401
        wrong = client.post("/recommend", json={"user_id": "u"},
                            headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
        assert wrong.json()["error"]["field"] == "Authorization"
        basic = client.get("/version", headers={"Authorization": f"Basic {TOKEN}"})
        assert basic.status_code == 401
        good = client.post("/recommend", json={"user_id": "u"},
                           headers={"Authorization": f"bearer {TOKEN}"})
        assert good.status_code == 200
        health = client.get("/healthz")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        detailed = client.get("/healthz", headers={"Authorization": f"Bearer {TOKEN}"})
        assert detailed.json()["deployments"]["Recommender"]["version"] == "v1"
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/docs").status_code == 200


def test_openapi_documents_the_bodies_and_their_bounds(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    k = schemas["RecommendRequest"]["properties"]["k"]
    assert (k["minimum"], k["maximum"], k["default"]) == (1, 100, 20)
    assert schemas["RecommendRequest"]["additionalProperties"] is False
    assert schemas["Transaction"]["additionalProperties"] is False
    amount = schemas["Transaction"]["properties"]["amount"]
    assert (amount["exclusiveMinimum"], amount["exclusiveMaximum"]) == (-3.4e38, 3.4e38)
    probability = schemas["FraudResult"]["properties"]["fraud_probability"]
    assert (probability["type"], probability["minimum"], probability["maximum"]) == \
        ("number", 0.0, 1.0)
    assert {"400", "401", "408", "413", "422", "503"} <= \
        set(spec["paths"]["/fraud"]["post"]["responses"])
    assert "422" in spec["paths"]["/fraud"]["post"]["responses"]


@pytest.mark.parametrize(("loc", "field"), [
    (("body", "k"), "k"), (("body", "transaction", "amount"), "amount"),
    (("body", "transactions", 3, "features", "V1"), "transactions[3].features.V1"),
    (("body",), "body"), (("body", "recent_item_ids", 0), "recent_item_ids[0]")])
def test_field_paths(loc: tuple[Any, ...], field: str) -> None:
    assert field_path(loc) == field


def test_status_mapping_follows_the_class_hierarchy() -> None:
    class Narrower(InvalidRequestError):
        pass

    assert status_of(Narrower("x")) == 422
    assert status_of(NotReadyError("x")) == 503


@pytest.mark.parametrize(("ready", "pointer_error", "expected"), [
    (True, None, (200, "ok")),
    (False, None, (503, "loading")),
    (True, "InvalidPointerError: latest.json is empty", (503, "degraded")),
    (False, "InvalidPointerError: latest.json is empty", (503, "loading")),
])
def test_healthz_is_readiness_and_a_broken_store_pointer_flips_it(
        client: TestClient, backend: FakeBackend, ready: bool, pointer_error: str | None,
        expected: tuple[int, str]) -> None:
    backend.ready, backend.pointer_error = ready, pointer_error
    response = client.get("/healthz")
    assert (response.status_code, response.json()["status"]) == expected
    status = response.json()["deployments"]["Recommender"]
    assert status["pointer_error"] == pointer_error
    assert status["skipped"] == ({"latest.json": pointer_error} if pointer_error else {})
    # a degraded replica keeps answering with the version it has
    assert client.post("/recommend", json={"user_id": "u1", "k": 1}).status_code == 200


def _timings(header: str) -> dict[str, float]:
    parts = [p.strip().split(";dur=") for p in header.split(",")]
    return {name: float(ms) for name, ms in parts}


def test_every_answer_says_where_its_time_went(client: TestClient) -> None:
    # Server-Timing: the app's whole time, and on model routes the model call within it.
    for path, body in (("/recommend", {"user_id": "u1", "k": 3}),
                       ("/fraud", {"amount": 2, "features": {"a": 1}})):
        answer = client.post(path, json=body)
        timing = _timings(answer.headers["server-timing"])
        assert answer.status_code == 200 and set(timing) == {"model", "app"}
        assert 0.0 <= timing["model"] <= timing["app"]
    for answer in (client.get("/healthz"), client.post("/fraud", json={"amount": None})):
        assert set(_timings(answer.headers["server-timing"])) == {"app"}


def test_metrics_count_answers_per_version_in_prometheus_text(backend: FakeBackend) -> None:
    app = create_api(backend, max_body_bytes=4096, token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(app) as client:
        for path, body in (("/recommend", {"user_id": "u1", "k": 3}),
                           ("/fraud", [{"amount": 1}, {"amount": 2}])):
            assert client.post(path, json=body, headers=auth).status_code == 200
        assert client.post("/fraud", json={"amount": None}, headers=auth).status_code == 422
        assert client.get("/metrics").status_code == 401  # behind the token, like /version
        client.get("/no-such-path", headers=auth)
        page = client.get("/metrics", headers=auth)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain")
    lines = set(page.text.splitlines())
    assert {
        'shopstream_requests_total{route="/recommend",version="v1",status="200"} 1',
        'shopstream_requests_total{route="/fraud",version="v1",status="200"} 1',
        'shopstream_requests_total{route="/fraud",version="none",status="422"} 1',
        'shopstream_requests_total{route="/metrics",version="none",status="401"} 1',
        'shopstream_requests_total{route="other",version="none",status="404"} 1',
        'shopstream_recommend_strategy_total{version="v1",strategy="popularity"} 1',
        'shopstream_fraud_decisions_total{version="v1",decision="approve"} 2',
        'shopstream_fraud_probability_bucket{version="v1",le="0.3"} 2',
        'shopstream_fraud_probability_bucket{version="v1",le="0.2"} 0',
        'shopstream_fraud_probability_count{version="v1"} 2',
        'shopstream_recommend_top_score_count{version="v1"} 1',
        '# TYPE shopstream_request_seconds histogram',
    } <= lines, page.text
    assert 'shopstream_request_seconds_count{route="/fraud",version="v1"} 1' in lines
