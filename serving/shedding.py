"""Load shedding at the front door: a bounded number of model requests in flight, the rest
answered 503 at once.

Without a bound, an overloaded app queues every request: at 200 concurrent clients every
answer is slow (seconds) and none fails fast, so a client or a load balancer cannot back
off. ``max_inflight`` :class:`Slots` per ingress replica bound the requests that reach a
model deployment; the next ones get :class:`~serving.errors.OverloadedError` (503,
``Retry-After``, JSON) at once, so a shed request costs microseconds and the admitted ones
keep a bounded latency. Health, version and docs routes are never shed: an overloaded app
must still say whether it is alive.

Two middlewares share the slots, around the body guard of :mod:`serving.api`:
:class:`ShedEarly` (outside it) refuses a request while every slot is taken *before its
body is read* — under overload, reading bodies is itself the work to avoid — and
:class:`HoldSlot` (inside it) takes a slot only once the whole body has arrived, so a slow
or stalled client holds a cheap ingress connection, never a model slot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from serving.errors import OverloadedError, error_response

# The routes that reach a model deployment: the only ones that queue work.
SHED_PATHS = frozenset({"/recommend", "/fraud"})
# A request shed before its body was read keeps its connection when it declared a body of at
# most this many bytes: the server drops those few bytes as they come, and the client (or
# HAProxy) sends its next request without connecting again. A larger or chunked body closes
# the connection instead: reading it is the work shedding avoids.
KEEP_ALIVE_BODY_BYTES = 16_384


def declared_small_body(scope: Scope) -> bool:
    """Whether the request's Content-Length is at most :data:`KEEP_ALIVE_BODY_BYTES`."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return value.isdigit() and int(value) <= KEEP_ALIVE_BODY_BYTES
    return False


@dataclass
class Slots:
    """``limit`` model slots of one ingress replica (``0`` = no limit). One event loop runs
    every request of the replica, so plain counters are exact."""

    limit: int
    path_of: Callable[[Scope], str]
    taken: int = 0
    shed: int = 0

    def applies(self, scope: Scope) -> bool:
        return self.limit > 0 and scope["type"] == "http" and self.path_of(scope) in SHED_PATHS

    @property
    def full(self) -> bool:
        return self.taken >= self.limit

    async def refuse(self, scope: Scope, receive: Receive, send: Send, close: bool) -> None:
        self.shed += 1
        response = error_response(OverloadedError(
            f"more than {self.limit} requests in flight (max_inflight); retry after the "
            "Retry-After seconds"))
        if close:  # a large unread body may still be on its way: not worth reading
            response.headers["Connection"] = "close"
        await response(scope, receive, send)


class ShedEarly:
    """Refuse before the body is read while every slot is taken."""

    def __init__(self, app: ASGIApp, slots: Slots) -> None:
        self.app = app
        self.slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.slots.applies(scope) and self.slots.full:
            await self.slots.refuse(scope, receive, send, close=not declared_small_body(scope))
            return
        await self.app(scope, receive, send)


class HoldSlot:
    """Hold a slot from the moment the body is complete until the answer is sent."""

    def __init__(self, app: ASGIApp, slots: Slots) -> None:
        self.app = app
        self.slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.slots.applies(scope):
            await self.app(scope, receive, send)
            return
        if self.slots.full:
            await self.slots.refuse(scope, receive, send, close=False)
            return
        self.slots.taken += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.slots.taken -= 1
