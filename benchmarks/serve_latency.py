"""python benchmarks/serve_latency.py [--items 100000 --users 20000 --duration-s 8 --rate 50]

Latency and throughput of the Serve app in both topologies (``serving.deployments``:
``split`` = proxy -> Ingress -> model deployment; ``fused``, the default = proxy -> one of
two replicas with the model in-process; HTTP enters through HAProxy as the app's default, or
with ``--ingress proxy`` through Serve's Python proxy actor), deployed side by side under two
route prefixes,
next to the bare FastAPI/uvicorn app serving the same version with the same code in one process
(``serving.local``), in the same run, on 127.0.0.1 only (the load generator:
``benchmarks/serve_load.py``):

* POST /recommend (catalogue of ``--items`` items, k=20) and POST /fraud (one transaction):
  p50/p99 latency at a fixed offered rate (open loop, measured from each request's scheduled
  send time, so a server falling behind shows), then requests/s and p50/p99 at saturation
  (``--concurrency`` closed-loop clients); the Serve/bare throughput ratios (targets >= 0.5
  on /recommend, >= 0.3 on /fraud);
* where the time goes, per hop, at the fixed rate (medians; from each answer's
  ``Server-Timing`` header): the proxy and network (client latency - app), the app outside
  the model call (routing, validation, middleware), and the model call (in ``split`` the
  hop to the model deployment included);
* publish -> served freshness (target <= 2 s, both cases, judged on the worst of
  ``--freshness-repeats`` publishes; the median is recorded too): seconds from
  ``store.publish`` returning to the first response naming the new version (with two
  replicas, the first replica to load it), for a version that keeps the text
  tower and for one that changes it; each version carries its title vectors
  (``item_text.safetensors``), so neither re-encodes titles in the replicas. Each app
  watches its own store (a shop runs one topology), so its freshness is timed while only
  its own replicas reload;
* RSS of each replica process (target <= 1 GiB);
* overload: ``--overload-clients`` (200) closed-loop clients against apps that admit
  ``max_inflight`` requests per replica: the p99 of the admitted answers (target < 2 s) and
  of the shed 503s (target < 100 ms), and any other answer (target: none).

The model is an untrained ShopStreamModel with the tiny random text encoder: the request
path never runs the encoder (item vectors are precomputed at load), so latency does not
depend on it, while precomputing 100k MiniLM title vectors would take ~20 min on this
machine. Everything is bounded (``--max-seconds``). Results go to
``benchmarks/results/serve_latency.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
import repo_path  # noqa: F401  (tests.support below is not installed)
import torch
from serve_load import measure

from serving.config import SERVE_START_ENV, ServeConfig
from serving.loopback import haproxy_env
from tests.support.ports import free_port, haproxy_port_env
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
from training.store import LocalStore

logger = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results" / "serve_latency.json"
TARGETS = {"fraud_p99_ms_at_rate": 50.0, "recommend_p99_ms_at_rate": 50.0,
           "throughput_ratio": {"/recommend": 0.5, "/fraud": 0.3}, "freshness_s": 2.0,
           "rss_mib": 1024.0, "overload_p99_ms": {"200": 2000.0, "503": 100.0}}
SERVE_APPS: tuple[Literal["split", "fused"], ...] = ("split", "fused")  # name = route prefix
ENV = {**LOCAL_RAY_ENV, "RAY_AUTH_MODE": "disabled", **SERVE_START_ENV,
       # Ray starts workers at nice 15; the load generator and the bare app run at nice 0, so
       # without this the comparison measures CPU priority, not the two serving paths.
       "RAY_worker_niceness": "0"}
def replicas(url: str) -> dict[str, Any]:
    with httpx.Client(timeout=10.0) as client:
        found: dict[str, Any] = client.get(url + "/version").json()["deployments"]
    return {name: {"rss_mib": s["rss_mib"], "version": s["version"]} for name, s in found.items()}


def freshness(url: str, publish_next: Callable[[], str], timeout_s: float) -> dict[str, Any]:
    """Seconds from publish() returning to the first /recommend and /fraud answer of the app
    at ``url`` naming the new version (both endpoints polled in turn, ~20 ms apart)."""
    version = publish_next()
    published = time.monotonic()
    seen: dict[str, float] = {}
    body = {"/recommend": {"user_id": "u1", "k": 20},
            "/fraud": {"amount": 10.0, "features": dict.fromkeys(FRAUD_FEATURES, 0.0)}}
    with httpx.Client(timeout=30.0) as client:
        while len(seen) < 2 and time.monotonic() - published < timeout_s:
            for path in body:
                if path not in seen and client.post(url + path, json=body[path]
                                                    ).json().get("model_version") == version:
                    seen[path] = round(time.monotonic() - published, 3)
            time.sleep(0.02)
    return {"version": version, "seconds": seen, "timed_out": len(seen) < 2}


def freshness_runs(urls: dict[str, str], publisher: Publisher, args: argparse.Namespace
                   ) -> dict[str, dict[str, Any]]:
    """:func:`freshness` ``--freshness-repeats`` times per case and app (cases and apps
    interleaved, so a busy spell of the machine hits all alike); per endpoint the worst
    run (``seconds``, what the target is judged on) and the median, with every run."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for _ in range(args.freshness_repeats):
        for case, retrain, timeout in (("same_text_tower", False, 120.0),
                                       ("new_text_tower", True, args.max_seconds)):
            for app in SERVE_APPS:
                runs.setdefault(case, {}).setdefault(app, []).append(freshness(
                    urls[app], functools.partial(publisher.next, app, retrain), timeout))
    out: dict[str, dict[str, Any]] = {}
    for case, apps in runs.items():
        for name, done in apps.items():
            paths = sorted({p for run in done for p in run["seconds"]})
            seen = {p: [run["seconds"][p] for run in done if p in run["seconds"]]
                    for p in paths}
            out.setdefault(case, {})[name] = {
                "seconds": {p: max(v) for p, v in seen.items()},
                "median_s": {p: float(np.median(v)) for p, v in seen.items()},
                "timed_out": any(run["timed_out"] for run in done), "runs": done}
    return out


def new_text_tower(model: ShopStreamModel, seed: int) -> ShopStreamModel:
    """A copy whose title projection changed: every title vector must be recomputed."""
    tensors, meta = model_state(perturbed(model, seed))
    gen = torch.Generator().manual_seed(seed)
    weight = tensors["item_text_proj.weight"]
    tensors["item_text_proj.weight"] = weight + torch.randn(weight.shape, generator=gen) * 0.1
    return model_from_state(tensors, meta)


class Publisher:
    """Publishes the benchmark's versions, one local store per app: a shop runs one
    topology, so each app's freshness is timed while only its own replicas reload (with
    one shared store, every app and the bare process reloaded at once on the 2 cores)."""

    def __init__(self, root: Path, apps: tuple[str, ...], args: argparse.Namespace) -> None:
        started = time.perf_counter()
        cfg = ModelConfig(encoder_init="tiny_random", dim=args.dim, history_len=10)
        self.model = shop_model(args.users, args.items, cfg)
        self.history = shop_history(self.model, per_user=5, popular=50)
        self.work, self.seed = root / "work", 0
        self.stores = {app: LocalStore(root / "stores" / app) for app in apps}
        self.versions = {app: publish(store, self.model, self.history, self.work,
                                      thresholds=(0.5, 0.9))
                         for app, store in self.stores.items()}
        logger.info("published the first version to %d stores (%d items, %d users) in "
                    "%.1f s", len(apps), args.items, args.users, time.perf_counter() - started)

    def next(self, app: str, retrain_text: bool) -> str:
        """A new version in ``app``'s store: the text tower changed, or the weights nudged."""
        self.seed += 1
        model = new_text_tower(self.model, self.seed) if retrain_text \
            else perturbed(self.model, self.seed)
        self.versions[app] = publish(self.stores[app], model, self.history, self.work,
                                     thresholds=(0.5, 0.9), parent=self.versions[app])
        return self.versions[app]


def start_serve(config: Callable[[str], ServeConfig]) -> dict[str, str]:
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
        app = application(dataclasses.replace(config(topology), topology=topology))
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
               "--cache-dir", str(config.cache_dir), "--max-inflight", str(config.max_inflight)]
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
            "rss_mib": max(r["rss_mib"] for r in result["replicas"][app].values()),
            "overload_p99_ms": overload_p99(serve_)}
    return out


def overload_p99(app: dict[str, Any]) -> dict[str, float | None] | None:
    """The worse endpoint's p99 of admitted (200) and shed (503) answers under overload,
    and the count of any other answer (a 5xx, a dropped connection)."""
    phases = [app[p]["overload"] for p in ("/recommend", "/fraud") if "overload" in app[p]]
    if not phases:
        return None
    worst: dict[str, float | None] = {}
    for status in ("200", "503"):
        found = [ph["by_status"][status]["p99_ms"] for ph in phases if status in ph["by_status"]]
        worst[status] = max(found) if found else None
    worst["other"] = float(sum(ph["connection_failures"] + sum(
        v["requests"] for k, v in ph["by_status"].items() if k not in ("200", "503"))
        for ph in phases))
    return worst


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    bare: subprocess.Popen[bytes] | None = None
    try:
        publisher = Publisher(work, (*SERVE_APPS, "bare"), args)

        def config(app: str) -> ServeConfig:
            return ServeConfig(store=str(publisher.stores[app].root),
                               poll_interval_s=args.poll_interval_s,
                               cache_dir=str(work / "cache"), max_inflight=args.max_inflight)

        started = time.monotonic()
        urls = start_serve(config)
        for app, url in urls.items():  # start_serve returns once every replica has loaded
            wait_serving(url, publisher.versions[app], args.max_seconds)
        result: dict[str, Any] = {"load_s": {"serve": round(time.monotonic() - started, 1)}}
        bare, urls["bare"] = start_bare(config("bare"), work / "bare.log")
        result["load_s"]["bare"] = round(wait_serving(urls["bare"], publisher.versions["bare"],
                                                      600), 1)
        result.update(measure(urls, args))
        result["replicas"] = {app: replicas(url) for app, url in urls.items()}
        result["freshness"] = freshness_runs(urls, publisher, args)
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
    parser.add_argument("--overload-clients", type=int, default=200,
                        help="closed-loop clients of the overload phase, more than the apps "
                             "admit (max_inflight per replica; 0 skips the phase)")
    parser.add_argument("--overload-live-too", action="store_true",
                        help="also run the overload phase with each body drawn and encoded "
                             "when sent (the generator before 2026-12-05), to compare")
    parser.add_argument("--max-inflight", type=int, default=ServeConfig.max_inflight,
                        help="the apps' max_inflight (requests one replica works on)")
    parser.add_argument("--duration-s", type=float, default=8.0, help="seconds per phase")
    parser.add_argument("--poll-interval-s", type=float, default=0.5,
                        help="replicas' store poll interval")
    parser.add_argument("--freshness-repeats", type=int, default=3,
                        help="publishes timed per case and app (the target is judged on "
                             "the worst)")
    parser.add_argument("--ingress", choices=("haproxy", "proxy"), default="haproxy",
                        help="HTTP entry of the Serve apps: haproxy (the default, "
                             "serving.config.SERVE_START_ENV) or Serve's Python proxy actor")
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
            for phase, label in (("overload", "overload"), ("overload_live", "live bodies")):
                over = result[app][path].get(phase)
                if over:
                    lines.append(f"{'':6} {'':11} {label}, {over['clients']} clients: " +
                                 ", ".join(f"{n['requests']} x {code} p50/p99 "
                                           f"{n['p50_ms']}/{n['p99_ms']} ms"
                                           for code, n in over["by_status"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    ENV.update(haproxy_port_env())  # chosen when the run starts, not when imported
    ENV.update(haproxy_env("127.0.0.1"))
    os.environ.update(ENV)
    # Read by the Serve controller that ray.init starts below (ENV reaches it through both).
    ENV["RAY_SERVE_ENABLE_HA_PROXY"] = "1" if args.ingress == "haproxy" else "0"
    os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = ENV["RAY_SERVE_ENABLE_HA_PROXY"]
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
