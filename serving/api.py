"""The HTTP API as a FastAPI app over a :class:`Backend`: the Serve ingress builds it over
the model deployments' handles, ``serving.local`` over an in-process predictor (the bare
uvicorn baseline of the benchmark), tests over fakes. Routes, validation, auth and error
bodies are therefore identical everywhere.

Every answer carries a ``Server-Timing`` header (W3C): ``app`` is the time this process
spent on the request (body read included), and on /recommend and /fraud ``model`` is the
time of the model call (in the split topology the hop to the model deployment included);
a client's latency minus ``app`` is the proxy's hop. ``benchmarks/serve_latency.py`` reads
them for its per-hop breakdown.

Outermost first: server timing, bearer-token check (401; /healthz, /docs and
/openapi.json stay open, and it runs before any of the body is read), early load
shedding, body guard (400 for an unreadable Content-Length, 413 for too large, 408 when
the body takes longer than ``body_timeout_s``; all before the body is parsed), a model
slot (503 with Retry-After once ``max_inflight`` model requests are in flight, see
:mod:`serving.shedding`), then FastAPI (422 for invalid bodies). Every answer, errors
included, is JSON. Without the token /healthz says only whether the app is ready (200) or
not (503). ``GET /metrics`` (behind the token like /version) serves the replica's online
counters per version in Prometheus text format (:mod:`serving.metrics`).
"""

from __future__ import annotations

import hmac
import time
from typing import Any, Protocol

import anyio
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.config import DEFAULT_BODY_TIMEOUT_S, ServeConfig
from serving.errors import (
    BadRequestError,
    PayloadTooLargeError,
    RequestTimeoutError,
    ServingError,
    UnauthorizedError,
    error_response,
    install_error_handlers,
)
from serving.metrics import OnlineMetrics, canary_lines
from serving.schemas import (
    ErrorResponse,
    FraudListResponse,
    FraudRequest,
    FraudResponse,
    HealthResponse,
    RecommendRequest,
    RecommendResponse,
    ReplicaStatus,
    VersionResponse,
    pin_fraud_features,
)
from serving.shedding import HoldSlot, ShedEarly, Slots

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"

OPEN_PATHS = frozenset({"/healthz", "/docs", "/docs/oauth2-redirect", "/openapi.json"})


class Backend(Protocol):
    """What the routes need from whatever holds the model(s)."""

    async def recommend(self, request: RecommendRequest) -> RecommendResponse: ...

    async def fraud(self, request: FraudRequest) -> FraudResponse | FraudListResponse: ...

    async def statuses(self) -> dict[str, ReplicaStatus]: ...


def _relative_path(scope: Scope) -> str:
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", ""))
    if root and path.startswith(root):
        return path[len(root):] or "/"
    return path


async def _send_error(send: Send, err: ServingError) -> None:
    response = error_response(err)
    await send({"type": "http.response.start", "status": response.status_code,
                "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def has_token(scope: Scope, token: bytes) -> bool:
    """Whether the request carries ``Authorization: Bearer <token>`` (constant-time)."""
    header = dict(scope.get("headers") or []).get(b"authorization", b"")
    scheme, _, given = header.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token)


class BearerAuth:
    """401 unless ``Authorization: Bearer <token>`` matches (constant-time compare)."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self._token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._token is None or scope["type"] != "http" or _relative_path(scope) in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if not has_token(scope, self._token):
            await _send_error(send, UnauthorizedError(
                "missing or wrong bearer token", field="Authorization"))
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """Reads the whole body before the app sees it (so the app never gets a partial one):
    413 over ``max_bytes`` by Content-Length or by counting the stream, 400 for a
    Content-Length that is not a number, 408 when the body takes over ``timeout_s`` (a
    client that declares a body and never sends it must not hold a request slot)."""

    # A longer number is over any limit; int() of over 4300 digits would raise.
    MAX_LENGTH_DIGITS = 18

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    def _check_declared(self, scope: Scope) -> None:
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is None:
            return
        if not declared.isdigit():
            raise BadRequestError("Content-Length must be a non-negative integer",
                                  field="Content-Length")
        if len(declared) > self.MAX_LENGTH_DIGITS or int(declared) > self.max_bytes:
            raise self._too_large()

    def _too_large(self) -> PayloadTooLargeError:
        return PayloadTooLargeError(f"request body exceeds {self.max_bytes} bytes",
                                    field="body")

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or None when the client went away first."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                raise self._too_large()
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self._check_declared(scope)
            with anyio.fail_after(self.timeout_s):
                body = await self._read(receive)
        except ServingError as err:
            await _send_error(send, err)
            return
        except TimeoutError:
            await _send_error(send, RequestTimeoutError(
                f"request body not received within {self.timeout_s:g} s", field="body"))
            return
        if body is None:
            return  # nobody to answer
        replay: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

        async def replayed() -> Message:
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)


class ServerTiming:
    """Adds ``Server-Timing: app;dur=<ms>`` (time from the request's arrival in this app to
    its response start) to every HTTP answer, and counts the answer in ``metrics`` by route
    (paths outside ``routes`` count as ``other``), answering version and status."""

    def __init__(self, app: ASGIApp, metrics: OnlineMetrics | None = None,
                 routes: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                seconds = time.perf_counter() - began
                message = {**message, "headers": [*message.get("headers", []), (
                    b"server-timing", f"app;dur={seconds * 1000.0:.2f}".encode())]}
                if self.metrics is not None:
                    path = _relative_path(scope)
                    version = scope.get("state", {}).get(VERSION_STATE)
                    self.metrics.request(path if path in self.routes else "other", version,
                                         int(message["status"]), seconds)
            await send(message)

        await self.app(scope, receive, timed)


VERSION_STATE = "model_version"  # request.state key: the version that answered


def answered(request: Request, response: Response, began: float, version: str) -> None:
    """Marks a model route's answer: the model call's time (``Server-Timing: model``) and
    the answering version (for the metrics)."""
    model_timing(response, began)
    setattr(request.state, VERSION_STATE, version)


def model_timing(response: Response, began: float) -> None:
    """Sets ``Server-Timing: model;dur=<ms>`` on a route's response (since ``began``)."""
    response.headers.append("server-timing",
                            f"model;dur={(time.perf_counter() - began) * 1000.0:.2f}")


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text} for code, text in (
        (400, "unreadable Content-Length header"),
        (401, "missing or wrong bearer token"),
        (408, "the body did not arrive within body_timeout_s"), (413, "body too large"),
        (422, "invalid body, or values the model cannot score; error.field names the "
              "offending field"),
        (503, "no model loaded yet, a model deployment did not answer within "
              "request_timeout_s, or overloaded (max_inflight); Retry-After says when to "
              "retry"))}


def served_fraud_features(statuses: dict[str, ReplicaStatus]) -> list[str] | None:
    """The fraud_features every ready replica agrees on; None before the first load or
    while replicas serve versions with different features (a rollout)."""
    found = {tuple(s.fraud_features) for s in statuses.values()
             if s.ready and s.fraud_features is not None}
    return list(found.pop()) if len(found) == 1 else None


def _add_openapi_route(app: FastAPI, backend: Backend) -> None:
    """/openapi.json with the loaded version's feature names pinned into ``Transaction``
    (FastAPI's own route serves a static schema, which cannot name them); it goes first
    so it shadows FastAPI's. /docs reads it."""

    async def openapi(request: Request) -> JSONResponse:
        schema = app.openapi()
        names = served_fraud_features(await backend.statuses())
        if names is not None:
            schema = pin_fraud_features(schema, names)
        root_path = str(request.scope.get("root_path", "")).rstrip("/")
        if root_path and root_path not in {s.get("url") for s in schema.get("servers", [])}:
            schema = {**schema, "servers": [{"url": root_path}, *schema.get("servers", [])]}
        return JSONResponse(schema)

    app.router.routes.insert(0, Route("/openapi.json", openapi, include_in_schema=False))


def _add_health_routes(app: FastAPI, backend: Backend, token: bytes | None) -> None:

    @app.get("/healthz", response_model=HealthResponse)
    async def healthz(request: Request) -> JSONResponse:
        """Readiness: 200 once every model deployment serves a version and follows the
        store; 503 while one is loading or cannot follow ``latest.json`` (degraded: it keeps
        answering with its version, but new versions stop). Per-replica detail only with
        the bearer token (or when none is configured): the route is open."""
        statuses = await backend.statuses()
        loaded = bool(statuses) and all(s.ready for s in statuses.values())
        stuck = any(s.pointer_error for s in statuses.values())
        ready = loaded and not stuck
        detail = token is None or has_token(request.scope, token)
        body = HealthResponse(status="loading" if not loaded else "degraded" if stuck else "ok",
                              deployments=statuses if detail else None)
        content = body.model_dump(mode="json", exclude=None if detail else {"deployments"})
        return JSONResponse(content, 200 if ready else 503)

    @app.get("/version", response_model=VersionResponse)
    async def version() -> VersionResponse:
        """The version each model deployment serves, when it was loaded, what it skipped."""
        return VersionResponse(deployments=await backend.statuses())


def api_for(backend: Backend, config: ServeConfig) -> FastAPI:
    """:func:`create_api` with ``config``'s limits and bearer token (every HTTP front)."""
    return create_api(backend, max_body_bytes=config.max_body_bytes,
                      token=config.bearer_token(), body_timeout_s=config.body_timeout_s,
                      max_inflight=config.max_inflight)


def create_api(backend: Backend, *, max_body_bytes: int, token: str | None,
               body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S, max_inflight: int = 0,
               title: str = "ShopStream") -> FastAPI:
    """The FastAPI app (OpenAPI at /docs) answering through ``backend``."""
    app = FastAPI(title=title, version="1", responses=ERRORS,
                  description="Recommendations and fraud scores from the latest published "
                              "ShopStream model version, hot-reloaded as new ones appear.")
    install_error_handlers(app)

    metrics = OnlineMetrics()

    @app.post("/recommend", response_model=RecommendResponse)
    async def recommend(body: RecommendRequest, request: Request,
                        response: Response) -> RecommendResponse:
        """Top-k items for a user (cold-start users too), with the version that ranked them."""
        began = time.perf_counter()
        answer = await backend.recommend(body)
        answered(request, response, began, answer.model_version)
        metrics.recommended(answer)
        return answer

    @app.post("/fraud", response_model=FraudResponse | FraudListResponse)
    async def fraud(body: FraudRequest, request: Request,
                    response: Response) -> FraudResponse | FraudListResponse:
        """Fraud probability and decision for one transaction or a list of them."""
        began = time.perf_counter()
        answer = await backend.fraud(body)
        answered(request, response, began, answer.model_version)
        metrics.scored(answer)
        return answer

    @app.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
    async def prometheus() -> PlainTextResponse:
        """Online counters per version (serving.metrics), Prometheus text format."""
        text = metrics.render() + "".join(
            f"{line}\n" for line in canary_lines(await backend.statuses()))
        return PlainTextResponse(text, media_type=PROMETHEUS_TYPE)

    _add_health_routes(app, backend, token.encode() if token else None)
    _add_openapi_route(app, backend)
    # Outermost last: timing, auth (nothing of an unauthenticated body is read), early shedding
    # (under overload no body is read either), the body guard, then a model slot taken
    # only by a complete request (a slow client holds a cheap ingress connection, never a
    # model slot); see serving.shedding.
    slots = Slots(max_inflight, _relative_path)
    app.add_middleware(HoldSlot, slots=slots)  # type: ignore[arg-type]
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes,  # type: ignore[arg-type]
                       timeout_s=body_timeout_s)
    app.add_middleware(ShedEarly, slots=slots)  # type: ignore[arg-type]
    app.add_middleware(BearerAuth, token=token)  # type: ignore[arg-type]
    app.add_middleware(ServerTiming, metrics=metrics,  # type: ignore[arg-type]
                       routes=frozenset({"/recommend", "/fraud", "/healthz", "/version",
                                         "/metrics", "/openapi.json", "/docs"}))
    return app
