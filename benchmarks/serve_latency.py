"""python benchmarks/serve_latency.py [--items 100000 --users 20000 --duration-s 8 --rate 50]

Latency and throughput of the Serve app in both topologies (``serving.deployments``:
``split`` = proxy -> Ingress -> model deployment; ``fused`` = proxy -> one replica with the
model in-process), deployed side by side under two route prefixes, next to the bare
FastAPI/uvicorn app serving the same version with the same code in one process
(``serving.local``), in the same run, on 127.0.0.1 only:

* POST /recommend (catalogue of ``--items`` items, k=20) and POST /fraud (one transaction):
  p50/p99 latency at a fixed offered rate (open loop, measured from each request's scheduled
  send time, so a server falling behind shows), then requests/s and p50/p99 at saturation
  (``--concurrency`` closed-loop clients); the Serve/bare throughput ratios (targets >= 0.5
  on /recommend, >= 0.3 on /fraud);
* where the time goes, per hop, at the fixed rate (medians; from each answer's
  ``Server-Timing`` header): the proxy and network (client latency - app), the app outside
  the model call (routing, validation, middleware), and the model call (in ``split`` the
  hop to the model deployment included);
* publish -> served freshness (target <= 2 s, both cases): seconds from ``store.publish``
  returning to the first response naming the new version, for a version that keeps the text
  tower and for one that changes it; each version carries its title vectors
  (``item_text.safetensors``), so neither re-encodes titles in the replicas;
* RSS of each replica process (target <= 1 GiB).

The model is an untrained ShopStreamModel with the tiny random text encoder: the request
path never runs the encoder (item vectors are precomputed at load), so latency does not
depend on it, while precomputing 100k MiniLM title vectors would take ~20 min on this
machine. Everything is bounded (``--max-seconds``). Results go to
``benchmarks/results/serve_latency.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import httpx
import numpy as np
import torch

from serving.config import SERVE_START_ENV, ServeConfig
from tests.support.published import (
    FRAUD_FEATURES,
    perturbed,
    publish,
    shop_history,
    shop_model,
    wait_serving,
)
from training.cli import LOCAL_RAY_ENV, setup_logging
from training.model import ModelConfig, ShopStreamModel, model_from_state, model_state
from training.store import CheckpointStore, LocalStore

logger = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results" / "serve_latency.json"
TARGETS = {"fraud_p99_ms_at_rate": 50.0, "recommend_p99_ms_at_rate": 50.0,
           "throughput_ratio": {"/recommend": 0.5, "/fraud": 0.3}, "freshness_s": 2.0,
           "rss_mib": 1024.0}
SERVE_APPS: tuple[Literal["split", "fused"], ...] = ("split", "fused")  # name = route prefix
ENV = {**LOCAL_RAY_ENV, "RAY_AUTH_MODE": "disabled", **SERVE_START_ENV,
       # Ray starts workers at nice 15; the load generator and the bare app run at nice 0, so
       # without this the comparison measures CPU priority, not the two serving paths.
       "RAY_worker_niceness": "0"}
Payload = Callable[[np.random.Generator], Any]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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


async def saturate(url: str, path: str, make: Payload, concurrency: int,
                   duration: float) -> dict[str, Any]:
    """Closed loop: ``concurrency`` clients, each sending its next request on a reply."""
    latencies: list[float] = []
    errors = 0
    origin, prefix = origin_and_prefix(url)
    async with session(origin, concurrency) as client:
        loop = asyncio.get_running_loop()
        start = loop.time()
        stop = start + duration

        async def worker(seed: int) -> None:
            nonlocal errors
            rng = np.random.default_rng(seed)
            while loop.time() < stop:
                sent = loop.time()
                if (await post(client, prefix + path, make(rng)))[0] == 200:
                    latencies.append(loop.time() - sent)
                else:
                    errors += 1

        await asyncio.gather(*(worker(s) for s in range(concurrency)))
        seconds = loop.time() - start
    return summary(latencies, errors, seconds)


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
    return out


def replicas(url: str) -> dict[str, Any]:
    with httpx.Client(timeout=10.0) as client:
        found: dict[str, Any] = client.get(url + "/version").json()["deployments"]
    return {name: {"rss_mib": s["rss_mib"], "version": s["version"]} for name, s in found.items()}


def freshness(urls: dict[str, str], publish_next: Callable[[], str], timeout_s: float
              ) -> dict[str, Any]:
    """Per app: seconds from publish() returning to the first /recommend and /fraud answer
    naming the new version (every app and endpoint polled in turn, ~20 ms apart). All the
    apps watch the one store, so one publish times them all."""
    version = publish_next()
    published = time.monotonic()
    seen: dict[str, dict[str, float]] = {app: {} for app in urls}
    body = {"/recommend": {"user_id": "u1", "k": 20},
            "/fraud": {"amount": 10.0, "features": dict.fromkeys(FRAUD_FEATURES, 0.0)}}
    with httpx.Client(timeout=30.0) as client:
        while any(len(s) < 2 for s in seen.values()) and \
                time.monotonic() - published < timeout_s:
            for app, url in urls.items():
                for path in body:
                    if path not in seen[app] and client.post(url + path, json=body[path]
                                                             ).json().get("model_version") \
                            == version:
                        seen[app][path] = round(time.monotonic() - published, 3)
            time.sleep(0.02)
    return {app: {"version": version, "seconds": s, "timed_out": len(s) < 2}
            for app, s in seen.items()}


def new_text_tower(model: ShopStreamModel, seed: int) -> ShopStreamModel:
    """A copy whose title projection changed: every title vector must be recomputed."""
    tensors, meta = model_state(perturbed(model, seed))
    gen = torch.Generator().manual_seed(seed)
    weight = tensors["item_text_proj.weight"]
    tensors["item_text_proj.weight"] = weight + torch.randn(weight.shape, generator=gen) * 0.1
    return model_from_state(tensors, meta)


class Publisher:
    """Publishes the benchmark's versions into one local store."""

    def __init__(self, store: CheckpointStore, work: Path, args: argparse.Namespace) -> None:
        started = time.perf_counter()
        cfg = ModelConfig(encoder_init="tiny_random", dim=args.dim, history_len=10)
        self.model = shop_model(args.users, args.items, cfg)
        self.history = shop_history(self.model, per_user=5, popular=50)
        self.store, self.work, self.seed = store, work, 0
        self.version = publish(store, self.model, self.history, work, thresholds=(0.5, 0.9))
        logger.info("published %s (%d items, %d users) in %.1f s", self.version, args.items,
                    args.users, time.perf_counter() - started)

    def next(self, retrain_text: bool) -> str:
        self.seed += 1
        model = new_text_tower(self.model, self.seed) if retrain_text \
            else perturbed(self.model, self.seed)
        self.version = publish(self.store, model, self.history, self.work,
                               thresholds=(0.5, 0.9), parent=self.version)
        return self.version


def start_serve(config: ServeConfig) -> dict[str, str]:
    """Local Ray (127.0.0.1) + Serve on a free loopback port, one application per topology
    under its own route prefix; returns each one's URL. Ray gets 4 logical CPUs so that both
    fit side by side (1.25 + 1); the machine's 2 cores are shared all the same."""
    import ray
    from ray import serve

    from serving.deployments import application

    ray.init(address="local", num_cpus=4, include_dashboard=False,
             runtime_env={"env_vars": ENV}, logging_level=logging.WARNING)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    urls: dict[str, str] = {}
    for topology in SERVE_APPS:
        app = application(dataclasses.replace(config, topology=topology))
        serve.run(app, name=topology, route_prefix=f"/{topology}",
                  logging_config={"enable_access_log": False, "log_level": "WARNING"})
        urls[topology] = f"http://127.0.0.1:{port}/{topology}"
    return urls


def stop_serve() -> None:
    import ray
    from ray import serve

    if ray.is_initialized():
        serve.shutdown()
        ray.shutdown()


def start_bare(config: ServeConfig, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "serving.local", "--store", config.store,
               "--port", str(port), "--poll-interval-s", str(config.poll_interval_s),
               "--cache-dir", str(config.cache_dir)]
    with open(log, "wb") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT,
                                env={**os.environ, **ENV})
    return proc, f"http://127.0.0.1:{port}"


def verdicts(result: dict[str, Any]) -> dict[str, Any]:
    """Each Serve topology's figures against :data:`TARGETS`."""
    bare = result["bare"]
    out: dict[str, Any] = {}
    for app in SERVE_APPS:
        serve_ = result[app]
        ratio = {p: round(serve_[p]["saturation"]["rps"] / bare[p]["saturation"]["rps"], 3)
                 for p in ("/recommend", "/fraud")}
        cases = [case[app] for case in result["freshness"].values()]
        fresh = [s for case in cases for s in case["seconds"].values()]
        timed_out = any(case["timed_out"] for case in cases)
        out[app] = {
            "fraud_p99_ms_at_rate": serve_["/fraud"]["at_rate"]["p99_ms"],
            "recommend_p99_ms_at_rate": serve_["/recommend"]["at_rate"]["p99_ms"],
            "throughput_ratio": ratio,
            "freshness_s": None if timed_out or not fresh else max(fresh),
            "rss_mib": max(r["rss_mib"] for r in result["replicas"][app].values())}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    bare: subprocess.Popen[bytes] | None = None
    try:
        store = LocalStore(work / "store")
        publisher = Publisher(store, work, args)
        config = ServeConfig(store=str(store.root), poll_interval_s=args.poll_interval_s,
                             cache_dir=str(work / "cache"))
        started = time.monotonic()
        urls = start_serve(config)  # returns once every replica has loaded the version
        for url in urls.values():
            wait_serving(url, publisher.version, args.max_seconds)
        result: dict[str, Any] = {"load_s": {"serve": round(time.monotonic() - started, 1)}}
        bare, urls["bare"] = start_bare(config, work / "bare.log")
        result["load_s"]["bare"] = round(wait_serving(urls["bare"], publisher.version, 600), 1)
        result.update(measure(urls, args))
        result["replicas"] = {app: replicas(url) for app, url in urls.items()}
        serve_urls: dict[str, str] = {app: urls[app] for app in SERVE_APPS}
        result["freshness"] = {
            "same_text_tower": freshness(serve_urls, lambda: publisher.next(False), 120),
            "new_text_tower": freshness(serve_urls, lambda: publisher.next(True),
                                        args.max_seconds)}
    finally:
        if bare is not None:
            bare.terminate()
            bare.wait(30)
        stop_serve()
        shutil.rmtree(work, ignore_errors=True)  # ~300 MB of versions and caches
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python benchmarks/serve_latency.py",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000, help="catalogue size")
    parser.add_argument("--users", type=int, default=20_000, help="users with a history")
    parser.add_argument("--dim", type=int, default=64, help="user/item vector size")
    parser.add_argument("--rate", type=float, default=50.0, help="fixed offered rate, req/s")
    parser.add_argument("--concurrency", type=int, default=16, help="saturation clients")
    parser.add_argument("--duration-s", type=float, default=8.0, help="seconds per phase")
    parser.add_argument("--poll-interval-s", type=float, default=0.5,
                        help="replicas' store poll interval")
    parser.add_argument("--max-seconds", type=float, default=600.0,
                        help="bound on any single wait (first load, re-encode)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")
    return parser


def table(result: dict[str, Any]) -> str:
    lines = [f"{'app':6} {'endpoint':11} {'rate p50/p99 ms':>18} {'sat. req/s':>11} "
             f"{'sat. p50/p99 ms':>18}  hops at rate (ms): proxy+net / app / model"]
    for app in (*SERVE_APPS, "bare"):
        for path in ("/recommend", "/fraud"):
            r, s = result[app][path]["at_rate"], result[app][path]["saturation"]
            h = r.get("hops_ms", {})
            lines.append(f"{app:6} {path:11} {r['p50_ms']:>8}/{r['p99_ms']:<9} "
                         f"{s['rps']:>11} {s['p50_ms']:>8}/{s['p99_ms']:<9}  "
                         f"{h.get('proxy_and_network')} / {h.get('app_outside_model')} / "
                         f"{h.get('model_call')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    os.environ.update(ENV)
    began = time.perf_counter()
    load_start = round(os.getloadavg()[0], 2)
    result = run(args)
    result.update({"settings": {k: str(v) if isinstance(v, Path) else v
                                for k, v in vars(args).items()},
                   "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                               "load_avg_1m_start": load_start,
                               "load_avg_1m_end": round(os.getloadavg()[0], 2)},
                   "targets": TARGETS, "seconds": round(time.perf_counter() - began, 1)})
    result["measured_vs_targets"] = verdicts(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(table(result))
    print("freshness:", json.dumps(result["freshness"]))
    print("replicas:", json.dumps(result["replicas"]))
    print("vs targets:", json.dumps(result["measured_vs_targets"]))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
