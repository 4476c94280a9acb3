"""The HTTP API as a FastAPI app over a :class:`Backend`: the Serve ingress builds it over
the model deployments' handles, ``serving.local`` over an in-process predictor (the bare
uvicorn baseline of the benchmark), tests over fakes. Routes, validation, auth and error
bodies are therefore identical everywhere.

Outermost first: bearer-token check (401; /healthz, /docs and /openapi.json stay open),
body-size limit (413, before the body is parsed), then FastAPI (422 for invalid bodies).
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Protocol

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.errors import (
    PayloadTooLargeError,
    ServingError,
    UnauthorizedError,
    error_response,
    install_error_handlers,
)
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
)

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


class BearerAuth:
    """401 unless ``Authorization: Bearer <token>`` matches (constant-time compare)."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self._token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._token is None or scope["type"] != "http" or _relative_path(scope) in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self._token):
            await _send_error(send, UnauthorizedError(
                "missing or wrong bearer token", field="Authorization"))
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """413 for bodies over ``max_bytes``, by Content-Length or by counting the stream; the
    whole body is read before the app sees it, so the app never gets a partial one."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = PayloadTooLargeError(
            f"request body exceeds {self.max_bytes} bytes", field="body")
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _send_error(send, too_large)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await _send_error(send, too_large)
                return
            if not message.get("more_body", False):
                break
        replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks),
                                  "more_body": False}]

        async def replayed() -> Message:
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text} for code, text in (
        (401, "missing or wrong bearer token"), (413, "body too large"),
        (422, "invalid body; error.field names the offending field"),
        (503, "no model loaded yet, or a model deployment is unavailable"))}


def create_api(backend: Backend, *, max_body_bytes: int, token: str | None,
               title: str = "ShopStream") -> FastAPI:
    """The FastAPI app (OpenAPI at /docs) answering through ``backend``."""
    app = FastAPI(title=title, version="1", responses=ERRORS,
                  description="Recommendations and fraud scores from the latest published "
                              "ShopStream model version, hot-reloaded as new ones appear.")
    install_error_handlers(app)

    @app.post("/recommend", response_model=RecommendResponse)
    async def recommend(request: RecommendRequest) -> RecommendResponse:
        """Top-k items for a user (cold-start users too), with the version that ranked them."""
        return await backend.recommend(request)

    @app.post("/fraud", response_model=FraudResponse | FraudListResponse)
    async def fraud(request: FraudRequest) -> FraudResponse | FraudListResponse:
        """Fraud probability and decision for one transaction or a list of them."""
        return await backend.fraud(request)

    @app.get("/healthz", response_model=HealthResponse)
    async def healthz() -> JSONResponse:
        """200 once every model deployment serves a version, else 503."""
        statuses = await backend.statuses()
        ready = bool(statuses) and all(s.ready for s in statuses.values())
        body = HealthResponse(status="ok" if ready else "loading", deployments=statuses)
        return JSONResponse(json.loads(body.model_dump_json()), 200 if ready else 503)

    @app.get("/version", response_model=VersionResponse)
    async def version() -> VersionResponse:
        """The version each model deployment serves, when it was loaded, what it skipped."""
        return VersionResponse(deployments=await backend.statuses())

    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)  # type: ignore[arg-type]
    app.add_middleware(BearerAuth, token=token)  # type: ignore[arg-type]
    return app
