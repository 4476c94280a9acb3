"""Calls from the ingress to a model deployment: one time budget, a resend when a replica
dies, and a hedge when an answer is late.

A model call is a read (scoring), so sending it again is safe. Measured on real Serve (see
``tests/integration/test_serve_faults.py``), a call can fail in three ways, and each gets
its own answer within the one budget ``request_timeout_s``:

* the replica died and says so (``RayActorError``): the call is sent again after a short
  pause, to whichever replica the router now picks;
* the call *hangs* without an error — it reached a replica that was killed or that a
  redeploy is stopping, and Serve notices only at its next health check, seconds later: a
  copy is sent after ``hedge_after_s`` (a hedged request, Dean & Barroso, "The Tail at
  Scale", CACM 2013) and the first answer wins; the router prefers the replica whose queue
  is not stuck, so a redeploy loses no request;
* no answer within the budget: 503 with Retry-After, so no client waits longer than the
  budget for an answer even while Serve replaces a dead replica.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError

from serving.errors import ErrorInfo, OverloadedError, ServingError, UnavailableError

logger = logging.getLogger(__name__)

# Pause before a call that met a dead replica is sent again: the router learns of the
# death within moments, and an immediate resend would likely pick the same replica.
RETRY_PAUSE_S = 0.1


async def _send(send: Callable[[], Awaitable[Any]], pause_s: float = 0.0) -> Any:
    if pause_s:
        await asyncio.sleep(pause_s)
    return await send()


class ModelCaller:
    """The time budget and hedging of one ingress replica's calls to model deployments."""

    def __init__(self, request_timeout_s: float, hedge_after_s: float) -> None:
        self.request_timeout_s = request_timeout_s
        self.hedge_after_s = hedge_after_s
        self.hedged = 0
        self.resent = 0

    async def call(self, deployment: str, send: Callable[[], Awaitable[Any]],
                   timeout_s: float | None = None) -> Any:
        """``send()``'s answer (an :class:`ErrorInfo` is raised as its error) or a
        :class:`ServingError`: 503 ``unavailable`` past the budget (``timeout_s``, default
        ``request_timeout_s``), 503 ``overloaded`` at the deployment's queue limit."""
        budget = self.request_timeout_s if timeout_s is None else timeout_s
        began = time.monotonic()
        pending = {asyncio.ensure_future(_send(send))}
        hedge_at = began + self.hedge_after_s if 0 < self.hedge_after_s < budget else None
        try:
            while True:
                now = time.monotonic()
                until = began + budget if hedge_at is None else min(hedge_at, began + budget)
                done, pending = await asyncio.wait(pending, timeout=max(0.0, until - now),
                                                   return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    answer = self._outcome(deployment, task)
                    if answer is not _RESEND:
                        return _unwrap(answer)
                    self.resent += 1
                    pending.add(asyncio.ensure_future(_send(send, RETRY_PAUSE_S)))
                now = time.monotonic()
                if now >= began + budget:
                    raise UnavailableError(f"{deployment} did not answer within {budget} s")
                if hedge_at is not None and now >= hedge_at:
                    self.hedged += 1
                    hedge_at = None
                    pending.add(asyncio.ensure_future(_send(send)))
        finally:
            for task in pending:
                task.cancel()

    @staticmethod
    def _outcome(deployment: str, task: asyncio.Future[Any]) -> Any:
        """The answer of a finished attempt, or :data:`_RESEND` when its replica died."""
        exc = task.exception()
        if exc is None:
            return task.result()
        if isinstance(exc, ServingError):
            raise exc
        if isinstance(exc, BackPressureError):
            raise OverloadedError(f"{deployment} is at its queue limit") from exc
        if isinstance(exc, RayActorError):  # the replica died: another one may answer
            logger.warning("%s: a replica died (%s); sending again", deployment,
                           type(exc).__name__)
            return _RESEND
        logger.warning("%s call failed: %s", deployment, exc)  # the client did no wrong
        raise UnavailableError(f"{deployment} is unavailable, retry later") from exc


_RESEND = object()


def _unwrap(answer: Any) -> Any:
    if isinstance(answer, ErrorInfo):
        raise answer.to_exception()
    return answer
