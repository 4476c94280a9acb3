"""Hostile clients against the HTTP layer (fake backend, no Ray, no model): float32
overflow, OpenAPI-vs-validation agreement, malformed and stalled bodies, auth before the
body, and what an unauthenticated /healthz reveals."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import anyio
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from serving.api import create_api, served_fraud_features
from serving.config import AppArgs, ServeConfig
from serving.errors import (
    ERROR_CLASSES,
    ErrorInfo,
    InvalidRequestError,
    UnscorableError,
    status_of,
)
from serving.predictor import Predictor, Thresholds
from serving.schemas import (
    ID_PATTERN,
    FraudListResponse,
    FraudRequest,
    FraudResponse,
    FraudResult,
    RecommendedItem,
    RecommendRequest,
    RecommendResponse,
    ReplicaStatus,
)
from serving.schemas import Thresholds as ThresholdsBody
from training.cli import ConfigError

pytestmark = pytest.mark.unit

TOKEN = "hostile-test-token-1"
FEATURES = ["V1", "V2", "V3"]
THRESHOLDS = ThresholdsBody(review=0.5, decline=0.9, basis="test")
Receive = Callable[[], Awaitable[dict[str, Any]]]


class FeatureBackend:
    """Answers like a loaded version with ``FEATURES``: exactly those features or 422 (the
    predictor's rule), so schema-valid-means-accepted can be checked end to end."""

    def __init__(self, ready: bool = True, probability: float = 0.25) -> None:
        self.ready = ready
        self.probability = probability
        self.seen: list[Any] = []

    async def recommend(self, request: RecommendRequest) -> RecommendResponse:
        self.seen.append(request)
        items = [RecommendedItem(item_id=f"i{n}", title="t", score=0.5) for n in range(request.k)]
        return RecommendResponse(user_id=request.user_id, items=items, strategy="popularity",
                                 model_version="v1")

    async def fraud(self, request: FraudRequest) -> FraudResponse | FraudListResponse:
        self.seen.append(request)
        for txn in request.transactions:
            if sorted(txn.features) != FEATURES:
                raise InvalidRequestError("wrong features", field="features")
        results = [FraudResult(txn_id=t.txn_id, decision="approve",
                               fraud_probability=self.probability)
                   for t in request.transactions]
        if request.is_list:
            return FraudListResponse(results=results, model_version="v1", thresholds=THRESHOLDS)
        return FraudResponse(**dict(results[0]), model_version="v1", thresholds=THRESHOLDS)

    async def statuses(self) -> dict[str, ReplicaStatus]:
        return {"FraudScorer": ReplicaStatus(
            deployment="FraudScorer", replica="host:42", ready=self.ready,
            version="v1" if self.ready else None, loaded_at=None,
            fraud_features=FEATURES if self.ready else None,
            skipped={"v0": "s3://secret-bucket/v0: checksum mismatch"}, poll_interval_s=1.0)}


@pytest.fixture
def backend() -> FeatureBackend:
    return FeatureBackend()


@pytest.fixture
def client(backend: FeatureBackend) -> Iterator[TestClient]:
    with TestClient(create_api(backend, max_body_bytes=4096, token=None)) as test_client:
        yield test_client


def txn(amount: float = 1.0, **features: float) -> dict[str, Any]:
    return {"amount": amount, "features": {**dict.fromkeys(FEATURES, 0.5), **features}}


# ---- 1. fraud fails closed ---------------------------------------------------------------

@pytest.mark.parametrize(("body", "field"), [
    (txn(3.5e38), "amount"), (txn(-3.5e38), "amount"), (txn(1e308), "amount"),
    (txn(3.4e38), "amount"), (txn(V3=1e39), "features.V3"), (txn(V1=-3.4e38), "features.V1"),
    ([txn(), txn(V2=1e39)], "transactions[1].features.V2")])
def test_numbers_beyond_float32_are_422_naming_the_field(client: TestClient,
                                                         backend: FeatureBackend,
                                                         body: Any, field: str) -> None:
    response = client.post("/fraud", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and error["field"] == field
    assert error["details"][0]["type"] in ("less_than", "greater_than")
    assert backend.seen == []


def test_the_largest_float32_safe_numbers_are_scored(client: TestClient,
                                                     backend: FeatureBackend) -> None:
    response = client.post("/fraud", json=txn(3.39e38, V1=-3.39e38))
    assert response.status_code == 200 and response.json()["fraud_probability"] == 0.25
    assert backend.seen[-1].transactions[0].amount == 3.39e38


@pytest.mark.parametrize("probability", [math.nan, math.inf, -0.01, 1.01])
def test_a_bad_probability_never_leaves_as_approve(probability: float) -> None:
    with pytest.raises(ValidationError, match="fraud_probability"):
        FraudResult(txn_id=None, fraud_probability=probability, decision="approve")
    backend = FeatureBackend(probability=probability)
    client = TestClient(create_api(backend, max_body_bytes=4096, token=None),
                        raise_server_exceptions=False)
    response = client.post("/fraud", json=txn())  # building the answer fails: no 200
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal", "message": "internal error",
                                         "field": None}}


def _bare_predictor(probabilities: list[float]) -> Predictor:
    """Only the request bookkeeping of :meth:`Predictor.fraud`; the model's output is given."""
    predictor = object.__new__(Predictor)
    predictor.version = "v7"
    predictor.fraud_features = tuple(FEATURES)
    predictor.thresholds = Thresholds(0.5, 0.9, "test")
    predictor.fraud_probabilities = lambda features, txns: probabilities  # type: ignore[method-assign]
    return predictor


def test_the_predictor_refuses_a_non_finite_probability() -> None:
    requests = [FraudRequest.model_validate(b) for b in (
        txn(2.0), [txn(5.0), txn(1.0, V3=-3e38)], txn(1e30))]
    answers = _bare_predictor([0.1, 0.95, math.nan, math.inf]).fraud(requests)
    assert isinstance(answers[0], FraudResponse) and answers[0].fraud_probability == 0.1
    assert answers[0].decision == "approve"
    assert answers[1] == ErrorInfo("unscorable", answers[1].message,  # type: ignore[union-attr]
                                   "transactions[1].features.V3")
    assert answers[2] == ErrorInfo("unscorable", answers[2].message, "amount")  # type: ignore[union-attr]
    assert answers[2].message.startswith("amount: fraud probability is inf")  # type: ignore[union-attr]
    err = answers[1].to_exception()  # type: ignore[union-attr]
    assert isinstance(err, UnscorableError) and status_of(err) == 422
    assert ERROR_CLASSES["unscorable"] is UnscorableError


# ---- 2. the OpenAPI schema and validation agree ----------------------------------------

@pytest.mark.parametrize(("k", "status", "expected"), [
    (71.0, 200, 71), (1e2, 200, 100), (71, 200, 71), (71.5, 422, None), (True, 422, None),
    ("5", 422, None), (1e300, 422, None), (0.0, 422, None)])
def test_k_accepts_what_json_schema_calls_an_integer(client: TestClient, backend: FeatureBackend,
                                                     k: Any, status: int,
                                                     expected: int | None) -> None:
    response = client.post("/recommend", json={"user_id": "u", "k": k})
    assert response.status_code == status
    if expected is None:
        assert response.json()["error"]["field"] == "k"
    else:
        assert len(response.json()["items"]) == expected
        assert type(backend.seen[-1].k) is int and backend.seen[-1].k == expected


@pytest.mark.parametrize(("user_id", "ok"), [
    ("u1", True), ("a b", True), ("ü\u00a0ß", True), ("a\rb", False), ("u\n", False),
    ("u\n\n", False), (" u", False), ("u ", False), ("a\nb", False), ("\t", False),
    ("\x1e", False), ("a\x1cb", False), ("\x7f", False)])
def test_ids_are_matched_as_python_json_schema_tools_match_them(
        client: TestClient, user_id: str, ok: bool) -> None:
    assert (re.search(ID_PATTERN, user_id) is not None) is ok
    response = client.post("/recommend", json={"user_id": user_id})
    assert response.status_code == (200 if ok else 422)
    if not ok:
        assert response.json()["error"]["field"] == "user_id"


def test_openapi_pins_the_loaded_feature_names(client: TestClient,
                                               backend: FeatureBackend) -> None:
    pinned = client.get("/openapi.json").json()["components"]["schemas"]["Transaction"]
    features = pinned["properties"]["features"]
    assert features["required"] == FEATURES and features["additionalProperties"] is False
    assert features["properties"]["V2"] == {"type": "number", "exclusiveMinimum": -3.4e38,
                                            "exclusiveMaximum": 3.4e38}
    assert pinned["required"] == ["amount", "features"]
    backend.ready = False
    loose = client.get("/openapi.json").json()["components"]["schemas"]["Transaction"]
    assert loose["required"] == ["amount"]
    assert loose["properties"]["features"]["additionalProperties"]["exclusiveMaximum"] == 3.4e38
    assert "exactly the served version's fraud_features" in \
        loose["properties"]["features"]["description"]
    assert client.get("/docs").status_code == 200


def test_only_agreeing_ready_replicas_pin_features() -> None:
    def status(ready: bool, names: list[str] | None) -> ReplicaStatus:
        return ReplicaStatus(deployment="d", replica="r", ready=ready, version=None,
                             loaded_at=None, fraud_features=names, poll_interval_s=1.0)

    assert served_fraud_features({"a": status(True, ["x"]), "b": status(True, ["x"])}) == ["x"]
    assert served_fraud_features({"a": status(True, ["x"]), "b": status(True, ["y"])}) is None
    assert served_fraud_features({"a": status(False, None)}) is None
    assert served_fraud_features({"a": status(True, [])}) == []


HOSTILE_BODIES: list[tuple[str, Any]] = [
    ("/recommend", {"user_id": "u", "k": 71.0}), ("/recommend", {"user_id": "u", "k": 71.5}),
    ("/recommend", {"user_id": "u", "k": True}), ("/recommend", {"user_id": "u\n"}),
    ("/recommend", {"user_id": "x" * 257}), ("/recommend", {"user_id": "u", "extra": 1}),
    ("/recommend", {"user_id": "u", "recent_item_ids": ["i"] * 101}),
    ("/fraud", txn()), ("/fraud", {"amount": 1.0, "features": {}}), ("/fraud", {"amount": 1}),
    ("/fraud", txn(V4=1.0)), ("/fraud", txn(3.5e38)), ("/fraud", [txn(), txn(V1=2e38)]),
    ("/fraud", []), ("/fraud", [txn()] * 257), ("/fraud", {"amount": "1", "features": {}}),
]


def test_schema_valid_means_accepted_and_schema_invalid_means_422(
        backend: FeatureBackend) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    client = TestClient(create_api(backend, max_body_bytes=2**20, token=None))
    spec = client.get("/openapi.json").json()
    outcomes = []
    for path, body in HOSTILE_BODIES:
        ref = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        validator = jsonschema.Draft202012Validator({**ref, "components": spec["components"]})
        status = client.post(path, json=body).status_code
        outcomes.append((path, validator.is_valid(body), status))
    assert [(p, 200 if valid else 422) for p, valid, _ in outcomes] == \
        [(p, status) for p, _, status in outcomes]
    assert [valid for _, valid, _ in outcomes].count(True) == 3


# ---- 3 and 4. malformed and stalled bodies ------------------------------------------------

async def _call(app: FastAPI, receive: Receive, headers: Sequence[tuple[bytes, bytes]],
                path: str = "/recommend", method: str = "POST") -> tuple[int, dict[bytes, bytes],
                                                                          bytes]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "root_path": "", "query_string": b"", "headers": list(headers),
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}
    with anyio.fail_after(5):
        await app(scope, receive, send)  # type: ignore[arg-type]
    if not sent:
        return 0, {}, b""
    return (sent[0]["status"], dict(sent[0]["headers"]),
            b"".join(m.get("body", b"") for m in sent[1:]))


def call(app: FastAPI, receive: Receive, headers: Sequence[tuple[bytes, bytes]],
         path: str = "/recommend", method: str = "POST") -> tuple[int, dict[bytes, bytes],
                                                                  bytes]:
    return anyio.run(_call, app, receive, headers, path, method)


def body_of(*chunks: bytes, then_stall: bool = False) -> tuple[Receive, list[int]]:
    """An ASGI receive sending ``chunks``, then stalling forever (or disconnecting); the
    list counts the calls."""
    calls: list[int] = []
    queue = list(chunks)

    async def receive() -> dict[str, Any]:
        calls.append(1)
        if queue:
            chunk = queue.pop(0)
            return {"type": "http.request", "body": chunk,
                    "more_body": bool(queue) or then_stall}
        if then_stall:
            await anyio.sleep_forever()
        return {"type": "http.disconnect"}

    return receive, calls


JSON = (b"content-type", b"application/json")


@pytest.mark.parametrize(("length", "status", "code"), [
    (b"x", 400, "bad_request"), (b"-1", 400, "bad_request"), (b"", 400, "bad_request"),
    (b"1e3", 400, "bad_request"), (b"9" * 5000, 413, "payload_too_large"),
    (b"4097", 413, "payload_too_large")])
def test_unreadable_content_lengths_get_json_errors(backend: FeatureBackend, length: bytes,
                                                    status: int, code: str) -> None:
    app = create_api(backend, max_body_bytes=4096, token=None)
    receive, calls = body_of(b'{"user_id": "u"}')
    got, headers, body = call(app, receive, [JSON, (b"content-length", length)])
    assert (got, headers[b"content-type"]) == (status, b"application/json")
    error = json.loads(body)["error"]
    assert error["code"] == code
    assert error["field"] == ("Content-Length" if status == 400 else "body")
    assert calls == [] and backend.seen == []


def test_a_declared_body_that_never_comes_is_408(backend: FeatureBackend) -> None:
    app = create_api(backend, max_body_bytes=4096, token=None, body_timeout_s=0.2)
    for receive, _ in (body_of(then_stall=True), body_of(b'{"user_', then_stall=True)):
        started = time.monotonic()
        status, headers, body = call(app, receive, [JSON, (b"content-length", b"100")])
        assert 0.2 <= time.monotonic() - started < 2.0
        assert (status, headers[b"connection"]) == (408, b"close")
        assert json.loads(body) == {"error": {
            "code": "request_timeout", "message": "request body not received within 0.2 s",
            "field": "body"}}
    assert backend.seen == []


def test_a_client_gone_mid_body_is_not_answered(backend: FeatureBackend) -> None:
    app = create_api(backend, max_body_bytes=4096, token=None)
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"user_id": "u"}', "more_body": True},
        {"type": "http.disconnect"}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    # The part received is a valid body on its own: it must still not reach the backend.
    assert call(app, receive, [JSON]) == (0, {}, b"")
    assert messages == [] and backend.seen == []


@pytest.mark.parametrize("path", ["/recommend", "/fraud", "/version"])
def test_auth_is_checked_before_any_of_the_body_is_read(backend: FeatureBackend,
                                                       path: str) -> None:
    app = create_api(backend, max_body_bytes=4096, token=TOKEN, body_timeout_s=30.0)
    for auth in ([], [(b"authorization", b"Bearer wrong-token-00")]):
        receive, calls = body_of(then_stall=True)
        started = time.monotonic()
        status, headers, body = call(app, receive, [JSON, (b"content-length", b"100"), *auth])
        assert (status, calls, headers[b"www-authenticate"]) == (401, [], b"Bearer")
        assert json.loads(body)["error"]["code"] == "unauthorized"
        assert time.monotonic() - started < 1.0
    assert backend.seen == []


def test_body_timeout_is_a_validated_setting() -> None:
    assert ServeConfig().body_timeout_s == 5.0
    assert AppArgs.model_validate({"body_timeout_s": "0.5"}).root.body_timeout_s == 0.5
    for bad in (0.0, -1.0, math.nan, math.inf, 3601.0):
        with pytest.raises(ConfigError, match="^body_timeout_s: "):
            ServeConfig(body_timeout_s=bad)


# ---- 5. what /healthz says to whom ---------------------------------------------------------

@pytest.mark.parametrize("ready", [True, False])
def test_healthz_without_the_token_reveals_only_readiness(backend: FeatureBackend,
                                                          ready: bool) -> None:
    backend.ready = ready
    expected = (200, {"status": "ok"}) if ready else (503, {"status": "loading"})
    with TestClient(create_api(backend, max_body_bytes=4096, token=TOKEN)) as client:
        for headers in ({}, {"Authorization": "Bearer wrong-token-00"},
                        {"Authorization": f"Basic {TOKEN}"}):
            response = client.get("/healthz", headers=headers)
            assert (response.status_code, response.json()) == expected
            assert "host:42" not in response.text and "secret-bucket" not in response.text
        full = client.get("/healthz", headers={"Authorization": f"Bearer {TOKEN}"})
        assert full.status_code == expected[0]
        assert full.json()["deployments"]["FraudScorer"]["replica"] == "host:42"
        assert full.json()["deployments"]["FraudScorer"]["skipped"] == {
            "v0": "s3://secret-bucket/v0: checksum mismatch"}
        assert client.get("/version").status_code == 401


def test_healthz_keeps_its_detail_when_auth_is_off(client: TestClient) -> None:
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["deployments"]["FraudScorer"]["fraud_features"] == FEATURES
