"""Named serving errors and the one place that maps them to HTTP responses.

Every error the API returns has the body ``{"error": {"code", "message", "field"}}``
(``field`` is the offending request field, ``null`` when none applies). Client mistakes are
4xx, never 500: validation 422, oversized bodies 413, missing or wrong token 401, an
unreadable ``Content-Length`` 400, a body that does not arrive in time 408.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

# Tags of the /fraud body's two shapes (see serving.schemas.FraudRequest); the single
# transaction's tag is dropped from field paths, the list's names the list.
SINGLE_TAG = "transaction"
LIST_TAG = "transactions"


class ServingError(Exception):
    """Base of the errors the API answers with; ``field`` names the offending input."""

    code = "internal"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidRequestError(ServingError):
    """The body is well-formed JSON but a value is unusable (e.g. an unknown feature)."""

    code = "invalid_request"


class UnscorableError(InvalidRequestError):
    """The values are valid but the model's float32 arithmetic overflows on them (the
    probability would be NaN): refused, never approved."""

    code = "unscorable"


class BadRequestError(ServingError):
    """The HTTP request itself is malformed (e.g. a non-numeric ``Content-Length``)."""

    code = "bad_request"


class RequestTimeoutError(ServingError):
    """The body did not arrive within ``body_timeout_s`` (a slow or stalled client)."""

    code = "request_timeout"


class PayloadTooLargeError(ServingError):
    """The body exceeds ``max_body_bytes``."""

    code = "payload_too_large"


class UnauthorizedError(ServingError):
    """A bearer token is configured and the request lacks it or has another one."""

    code = "unauthorized"


class NotReadyError(ServingError):
    """No model version is loaded yet (empty store, or the first load is running)."""

    code = "not_ready"


class UnavailableError(ServingError):
    """A model deployment could not be reached or failed internally."""

    code = "unavailable"


class OverloadedError(UnavailableError):
    """More requests in flight than ``max_inflight``: shed at once, retry after a moment."""

    code = "overloaded"


class NoRecommenderError(UnavailableError):
    """The served version has no items to recommend (trained on fraud data only)."""

    code = "no_recommender"


class VersionRejectedError(Exception):
    """A version failed to load or verify; the replica skips it and keeps the old one."""


# The single mapping from error class to HTTP status (subclasses inherit their parent's).
HTTP_STATUS: dict[type[ServingError], int] = {
    InvalidRequestError: 422,
    UnscorableError: 422,
    BadRequestError: 400,
    RequestTimeoutError: 408,
    PayloadTooLargeError: 413,
    UnauthorizedError: 401,
    NotReadyError: 503,
    UnavailableError: 503,
    NoRecommenderError: 503,
    OverloadedError: 503,
    ServingError: 500,
}
ERROR_CLASSES: dict[str, type[ServingError]] = {cls.code: cls for cls in HTTP_STATUS}


@dataclass(frozen=True)
class ErrorInfo:
    """A :class:`ServingError` as plain data, for crossing from a model replica to the
    ingress (exceptions raised through Ray handles lose their fields)."""

    code: str
    message: str
    field: str | None = None

    @classmethod
    def of(cls, err: ServingError) -> ErrorInfo:
        return cls(err.code, err.message, err.field)

    def to_exception(self) -> ServingError:
        return ERROR_CLASSES.get(self.code, ServingError)(self.message, self.field)


def status_of(err: ServingError) -> int:
    for cls in type(err).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]  # type: ignore[index]
    return 500


def error_body(code: str, message: str, field: str | None,
               details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message, "field": field}
    if details:
        body["details"] = details
    return {"error": body}


# Seconds a client is told to wait (Retry-After) after a 503.
RETRY_AFTER_S = 1


def error_response(err: ServingError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(err, UnauthorizedError) else None
    if status_of(err) == 503:
        headers = {"Retry-After": str(RETRY_AFTER_S)}
    if isinstance(err, (BadRequestError, RequestTimeoutError)):
        # The rest of the body may still be in flight: this connection cannot be reused.
        headers = {**(headers or {}), "Connection": "close"}
    return JSONResponse(error_body(err.code, err.message, err.field), status_of(err),
                        headers=headers)


def field_path(loc: Sequence[Any]) -> str:
    """``("body", "transactions", 0, "features", "V1")`` -> ``"transactions[0].features.V1"``."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    if parts and parts[0] == SINGLE_TAG:
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


def _error_field(error: dict[str, Any]) -> str:
    if error.get("type") == "json_invalid":  # its loc holds a character offset, not a field
        return "body"
    return field_path(error.get("loc", ()))


def validation_response(exc: RequestValidationError) -> JSONResponse:
    """422 naming the first offending field; every problem listed under ``details``."""
    details = [{"field": _error_field(e), "message": str(e.get("msg", "")),
                "type": str(e.get("type", ""))} for e in exc.errors()]
    first = details[0] if details else {"field": "body", "message": "invalid request"}
    message = f"{first['field']}: {first['message']}"
    return JSONResponse(error_body(InvalidRequestError.code, message, first["field"], details),
                        422)


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception an endpoint can raise to the JSON error body."""

    async def on_serving_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServingError)
        return error_response(exc)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return validation_response(exc)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400:  # FastAPI could not parse the body (e.g. nested too deep)
            detail = {"field": "body", "message": str(exc.detail), "type": "body_unparsable"}
            return JSONResponse(error_body(InvalidRequestError.code, f"body: {exc.detail}",
                                           "body", [detail]), 422)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail), None), exc.status_code,
                            headers=getattr(exc, "headers", None))

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unhandled error on %s %s", request.method, request.url.path,
                     exc_info=exc)
        return JSONResponse(error_body("internal", "internal error", None), 500)

    app.add_exception_handler(ServingError, on_serving_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
