"""The load generator of ``benchmarks/serve_latency.py``: request bodies, an open-loop
fixed-rate phase, a closed-loop saturation phase, an overload phase (more clients than the
app admits: admitted and shed answers timed apart), and where each answer's time went (its
``Server-Timing`` header). Everything on the URLs it is given (127.0.0.1 in the benchmark)
and bounded by the phase's duration."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import numpy as np
import repo_path  # noqa: F401  (tests.support below is not installed)

from tests.support.published import FRAUD_FEATURES

logger = logging.getLogger(__name__)

Payload = Callable[[np.random.Generator], Any]
# Distinct bodies per closed-loop client, reused in turn (no answer is cached by the apps).
BODIES_PER_CLIENT = 32
JSON_HEADERS = {"Content-Type": "application/json"}


def recommend_payload(n_users: int) -> Payload:
    def make(rng: np.random.Generator) -> dict[str, Any]:
        roll = rng.random()
        if roll < 0.8:
            return {"user_id": f"u{rng.integers(n_users)}", "k": 20}
        if roll < 0.9:
            return {"user_id": f"new-{rng.integers(10**9)}", "k": 20,
                    "recent_item_ids": [f"i{rng.integers(1000)}" for _ in range(3)]}
        return {"user_id": f"new-{rng.integers(10**9)}", "k": 20}
    return make


def fraud_payload(n_users: int, n_items: int) -> Payload:
    def make(rng: np.random.Generator) -> dict[str, Any]:
        return {"txn_id": f"t{rng.integers(10**9)}", "user_id": f"u{rng.integers(n_users)}",
                "item_id": f"i{rng.integers(n_items)}", "amount": float(rng.gamma(2.0, 30.0)),
                "features": {f: float(rng.normal()) for f in FRAUD_FEATURES}}
    return make


def summary(latencies: list[float], errors: int, seconds: float,
            timings: list[dict[str, float]] | None = None) -> dict[str, Any]:
    ms = np.asarray(latencies) * 1000.0
    out: dict[str, Any] = {
        "requests": len(latencies), "errors": errors, "seconds": round(seconds, 2),
        "rps": round(len(latencies) / seconds, 1) if seconds else None,
        "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None}
    if timings:
        out["hops_ms"] = hops(ms, timings)
    return out


def hops(total_ms: np.ndarray, timings: list[dict[str, float]]) -> dict[str, float]:
    """Medians of where each answer's time went, from its Server-Timing header."""
    app = np.asarray([t.get("app", np.nan) for t in timings])
    model = np.asarray([t.get("model", np.nan) for t in timings])

    def median(values: np.ndarray) -> float:
        return round(float(np.nanmedian(values)), 2)

    return {"client_total": median(total_ms), "proxy_and_network": median(total_ms - app),
            "app_outside_model": median(app - model), "model_call": median(model)}


def server_timing(header: str | None) -> dict[str, float]:
    """``Server-Timing: app;dur=1.2, model;dur=0.8`` as {"app": 1.2, "model": 0.8}."""
    found: dict[str, float] = {}
    for part in (header or "").split(","):
        name, _, duration = part.strip().partition(";dur=")
        if name and duration:
            found[name] = float(duration)
    return found


def session(url: str, connections: int) -> aiohttp.ClientSession:
    # aiohttp, not httpx: a cheaper client leaves more of the 2 cores to the servers.
    return aiohttp.ClientSession(base_url=url, timeout=aiohttp.ClientTimeout(total=30),
                                 connector=aiohttp.TCPConnector(limit=connections))


def origin_and_prefix(url: str) -> tuple[str, str]:
    """``http://h:p/split`` -> (``http://h:p``, ``/split``): aiohttp's base URL is an origin."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/")


async def post(client: aiohttp.ClientSession, path: str, body: Any
               ) -> tuple[int, dict[str, float]]:
    async with client.post(path, json=body) as response:
        await response.read()
        # The app and the route each add a Server-Timing header: read them all.
        return response.status, server_timing(
            ", ".join(response.headers.getall("server-timing", [])))


async def fixed_rate(url: str, path: str, make: Payload, rate: float,
                     duration: float) -> dict[str, Any]:
    """Open loop: request i is due at start + i/rate; latency counts from that moment."""
    rng = np.random.default_rng(1)
    bodies = [make(rng) for _ in range(int(rate * duration))]
    latencies: list[float] = []
    timings: list[dict[str, float]] = []
    errors = 0
    origin, prefix = origin_and_prefix(url)
    async with session(origin, 256) as client:
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.05

        async def one(i: int, body: Any) -> None:
            nonlocal errors
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            status, timing = await post(client, prefix + path, body)
            if status == 200:
                latencies.append(loop.time() - due)
                timings.append(timing)
            else:
                errors += 1

        await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
        seconds = loop.time() - start
    return summary(latencies, errors, seconds, timings)


async def post_encoded(client: aiohttp.ClientSession, path: str, body: bytes) -> int:
    """The status of one POST of an already encoded JSON body (its answer read, unparsed)."""
    async with client.post(path, data=body, headers=JSON_HEADERS) as response:
        await response.read()
        return response.status


def encoded_bodies(make: Payload, seed: int, count: int) -> list[bytes]:
    """``count`` request bodies of one client, drawn and JSON-encoded before its phase."""
    rng = np.random.default_rng(seed)
    return [json.dumps(make(rng)).encode() for _ in range(count)]


async def closed_loop(url: str, path: str, make: Payload, clients: int, duration: float,
                      live: bool = False) -> tuple[dict[int, list[float]], int, float]:
    """``clients`` clients, each sending its next request on a reply, for ``duration`` s:
    (latencies by HTTP status, connection failures, seconds).

    Each client's bodies are drawn and encoded before the clock starts, and answers are
    read but not parsed: the generator shares the machine's cores with the apps, and under
    overload its own per-request work (a random body, JSON, headers) queued every answer
    behind it, inflating the latencies it measured. ``live``: the former way, each body
    drawn and encoded when sent (kept to compare the two in one run)."""
    answers: dict[int, list[float]] = {}
    failures = 0
    origin, prefix = origin_and_prefix(url)
    bodies = [] if live else [encoded_bodies(make, seed, BODIES_PER_CLIENT)
                              for seed in range(clients)]
    async with session(origin, clients) as client:
        loop = asyncio.get_running_loop()
        start = loop.time()
        stop = start + duration

        async def worker(seed: int) -> None:
            nonlocal failures
            rng = np.random.default_rng(seed)
            mine, sent_n = (bodies[seed] if bodies else None), 0
            while loop.time() < stop:
                sent = loop.time()
                try:
                    status = (await post(client, prefix + path, make(rng)))[0] \
                        if mine is None else \
                        await post_encoded(client, prefix + path, mine[sent_n % len(mine)])
                except aiohttp.ClientError:
                    failures += 1
                    continue
                finally:
                    sent_n += 1
                answers.setdefault(status, []).append(loop.time() - sent)

        await asyncio.gather(*(worker(s) for s in range(clients)))
        seconds = loop.time() - start
    return answers, failures, seconds


async def saturate(url: str, path: str, make: Payload, concurrency: int,
                   duration: float) -> dict[str, Any]:
    """Closed loop at ``concurrency``: the rate and latency of the 200s; the rest are errors."""
    answers, failures, seconds = await closed_loop(url, path, make, concurrency, duration)
    errors = failures + sum(len(v) for status, v in answers.items() if status != 200)
    return summary(answers.get(200, []), errors, seconds)


async def overload(url: str, path: str, make: Payload, clients: int,
                   duration: float, live: bool = False) -> dict[str, Any]:
    """Closed loop with more clients than the app admits (``max_inflight`` per replica):
    the latencies of admitted (200) and shed (503) answers apart, other statuses and
    connection failures counted. Fast shedding shows as a low p99 of the 503s while the
    200s keep a bounded p99."""
    answers, failures, seconds = await closed_loop(url, path, make, clients, duration, live)
    out = {str(status): summary(found, 0, seconds) for status, found in sorted(answers.items())}
    return {"clients": clients, "connection_failures": failures, "by_status": out}


def measure(urls: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """Every phase for both apps, alternating app by app, so that a change in the machine's
    background load during the run hits both alike."""
    payloads = {"/recommend": recommend_payload(args.users),
                "/fraud": fraud_payload(args.users, args.items)}
    out: dict[str, Any] = {app: {} for app in urls}
    for path, make in payloads.items():
        for url in urls.values():
            asyncio.run(saturate(url, path, make, 4, 1.5))  # warm-up, not recorded
        for phase in ("at_rate", "saturation"):
            for app, url in urls.items():
                run_phase = fixed_rate(url, path, make, args.rate, args.duration_s) \
                    if phase == "at_rate" else \
                    saturate(url, path, make, args.concurrency, args.duration_s)
                out[app].setdefault(path, {})[phase] = asyncio.run(run_phase)
                logger.info("%s %s %s: %s", app, path, phase, out[app][path][phase])
        for app, url in urls.items() if args.overload_clients else ():
            out[app][path]["overload"] = asyncio.run(
                overload(url, path, make, args.overload_clients, args.duration_s))
            logger.info("%s %s overload: %s", app, path, out[app][path]["overload"])
            if args.overload_live_too:
                out[app][path]["overload_live"] = asyncio.run(overload(
                    url, path, make, args.overload_clients, args.duration_s, live=True))
                logger.info("%s %s overload, live bodies: %s", app, path,
                            out[app][path]["overload_live"])
    return out
