"""serving.calls: deadlines, retries on a dead replica, and failing over fast."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from ray.exceptions import ActorDiedError
from ray.serve.exceptions import BackPressureError

from serving.calls import RETRY_PAUSE_S, ModelCaller
from serving.errors import ErrorInfo, NotReadyError, OverloadedError, UnavailableError

pytestmark = pytest.mark.unit


def script(*steps: Any) -> tuple[Callable[[], Awaitable[Any]], list[float]]:
    """A send() whose n-th call sleeps (a float) / raises (an exception) / returns."""
    sent: list[float] = []

    async def send_one(step: Any) -> Any:
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, float):
            await asyncio.sleep(step)
            return "late"
        return step

    def send() -> Awaitable[Any]:
        sent.append(time.monotonic())
        return send_one(steps[min(len(sent) - 1, len(steps) - 1)])

    return send, sent


def run(caller: ModelCaller, send: Callable[[], Awaitable[Any]],
        timeout_s: float | None = None) -> tuple[Any, float]:
    began = time.monotonic()
    try:
        answer = asyncio.run(caller.call("Recommender", send, timeout_s))
    except Exception as exc:  # noqa: BLE001 - the error is the answer under test
        answer = exc
    return answer, time.monotonic() - began


def test_an_answer_within_the_budget_is_waited_for_and_a_late_one_is_503() -> None:
    caller = ModelCaller(request_timeout_s=1.0, hedge_after_s=0.0)  # no hedging
    send, sent = script(0.3)
    answer, took = run(caller, send)
    assert answer == "late" and 0.3 <= took < 0.9 and len(sent) == 1
    answer, took = run(caller, script(5.0)[0])
    assert isinstance(answer, UnavailableError) and 1.0 <= took < 1.5
    assert "did not answer within 1.0 s" in answer.message


def test_a_hung_call_is_hedged_and_the_first_answer_wins() -> None:
    caller = ModelCaller(request_timeout_s=1.0, hedge_after_s=0.3)
    send, sent = script(30.0, "from the live replica")  # the first copy hangs
    answer, took = run(caller, send)
    assert answer == "from the live replica" and 0.3 <= took < 0.6
    assert len(sent) == 2 and sent[1] - sent[0] >= 0.3 and caller.hedged == 1
    send, sent = script(0.5, 30.0)  # the first copy is only late: it still wins
    answer, took = run(caller, send)
    assert answer == "late" and 0.5 <= took < 0.9 and len(sent) == 2
    send, sent = script(30.0)  # every copy hangs: 503 at the budget, never later
    answer, took = run(caller, send)
    assert isinstance(answer, UnavailableError) and 1.0 <= took < 1.3 and len(sent) == 2


def test_a_dead_replica_is_sent_again_within_the_budget() -> None:
    caller = ModelCaller(request_timeout_s=0.8, hedge_after_s=0.0)
    send, sent = script(ActorDiedError(), "ok")
    answer, _ = run(caller, send)
    assert answer == "ok" and len(sent) == 2 and sent[1] - sent[0] >= RETRY_PAUSE_S
    send, sent = script(ActorDiedError())  # every replica dead: resent until the budget
    answer, took = run(caller, send)
    assert isinstance(answer, UnavailableError) and 0.8 <= took < 1.2
    assert 4 <= len(sent) <= 9 and caller.resent >= 4


def test_queue_limits_and_replica_errors_keep_their_meaning() -> None:
    caller = ModelCaller(request_timeout_s=1.0, hedge_after_s=0.5)
    answer, took = run(caller, script(BackPressureError(num_queued_requests=9,
                                                        max_queued_requests=8))[0])
    assert isinstance(answer, OverloadedError) and took < 0.5
    answer, _ = run(caller, script(ErrorInfo.of(NotReadyError("no version yet")))[0])
    assert isinstance(answer, NotReadyError) and answer.message == "no version yet"
    answer, _ = run(caller, script(RuntimeError("boom"))[0])
    assert isinstance(answer, UnavailableError) and caller.resent == 0
