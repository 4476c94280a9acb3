"""What the Serve integration tests share: the deployed app's handle, a bounded client
loop, and publishing helpers (the fixture that deploys the app is in test_serve.py)."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from serving.app import build_app
from serving.config import AppArgs
from tests.support.published import (
    Reference,
    perturbed,
    publish,
    shop_history,
    shop_model,
    wait_serving,
)
from training.model import ModelConfig, ShopStreamModel
from training.store import LocalStore, VersionInfo

TOKEN = f"tok-{uuid.uuid4().hex}"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
POLL_S = 0.5
SWITCH_MARGIN_S = 25.0  # model load on a busy 2-core machine; the measured time is printed
MAX_BODY = 65_536
NEW_ITEMS = [("n1", "handmade ceramic teapot"), ("n2", "wool winter scarf blue"),
             ("n3", "oak bedside lamp")]
TXNS = [{"txn_id": f"t{i}", "user_id": f"u{i % 7}" if i % 3 else None,
         "item_id": f"i{i}" if i % 2 else None, "amount": 5.0 + 17.0 * i,
         "features": {"night": float(i % 2), "new_device": float(i % 3 == 0),
                      "distance": 0.5 * i}} for i in range(12)]


@dataclass
class App:
    url: str
    store: LocalStore
    work: Path
    model: ShopStreamModel
    config: Any = None
    refs: dict[str, Reference] = field(default_factory=dict)
    latest: str = ""

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0)


def quantile_thresholds(model: ShopStreamModel, history: Any) -> tuple[float, float]:
    """Thresholds splitting TXNS into thirds, so every decision occurs."""
    probs = sorted(Reference("", model, history, (0.5, 0.9)).fraud(TXNS))
    return (probs[4] + probs[3]) / 2, (probs[8] + probs[7]) / 2


@dataclass
class Sample:
    t: float
    path: str
    status: int
    body: dict[str, Any]


def client_loop(app: App, stop: threading.Event, out: list[Sample], max_requests: int = 1500,
                max_seconds: float = 90.0) -> None:
    """Alternate /recommend and /fraud until told to stop (bounded in count and time)."""
    deadline = time.monotonic() + max_seconds
    with app.client() as client:
        for n in range(max_requests):
            if stop.is_set() or time.monotonic() > deadline:
                return
            if n % 2:
                response = client.post("/fraud", json=TXNS)
            else:
                response = client.post("/recommend", json={"user_id": "u3", "k": 6})
            out.append(Sample(time.monotonic(), response.url.path, response.status_code,
                              json_or_text(response)))


@contextmanager
def loop_running(app: App, max_requests: int = 1500, max_seconds: float = 90.0
                 ) -> Iterator[list[Sample]]:
    """A :func:`client_loop` in a thread while the block runs; yields its samples."""
    samples: list[Sample] = []
    stop = threading.Event()
    loop = threading.Thread(target=client_loop, args=(app, stop, samples, max_requests,
                                                      max_seconds), daemon=True)
    loop.start()
    try:
        yield samples
    finally:
        stop.set()
        loop.join(30)


def redeploy_under_load(app: App, options: dict[str, Any]) -> list[Sample]:
    """``serve.run`` the app again with deployment ``options`` (Serve replaces every
    replica) while a client loop runs, and one second more; the loop's samples."""
    from ray import serve

    from serving.deployments import application

    with loop_running(app, 2000, 120.0) as samples:
        serve.run(application(app.config, options), name="shopstream", route_prefix="/")
        time.sleep(1.0)
    return samples


def json_or_text(response: httpx.Response) -> dict[str, Any]:
    """The JSON body, or ``{"text": ...}`` when it is not JSON (a plain-text error from
    somewhere in the stack must be recorded, not end the loop with a decode error)."""
    try:
        body = response.json()
    except ValueError:
        return {"text": response.text}
    return body if isinstance(body, dict) else {"json": body}


def check_consistent(app: App, sample: Sample, expected: dict[tuple[str, str], Any]) -> str:
    """The sample's version, after checking every part of it came from that version."""
    assert sample.status == 200, sample
    version = str(sample.body["model_version"])
    ref = app.refs[version]
    key = (sample.path, version)
    if key not in expected:
        expected[key] = ref.recommend("u3", k=6)[1] if sample.path == "/recommend" \
            else ref.fraud(TXNS)
    if sample.path == "/recommend":
        assert [i["item_id"] for i in sample.body["items"]] == expected[key]
    else:
        for result, p in zip(sample.body["results"], expected[key], strict=True):
            assert result["fraud_probability"] == pytest.approx(p, abs=1e-5)
            assert result["decision"] == ref.decision(p)
    return version


def publish_next(app: App, seed: int, thresholds: tuple[float, float]) -> str:
    model = perturbed(app.model, seed)
    history = shop_history(model, seed=seed)
    version = publish(app.store, model, history, app.work, thresholds=thresholds,
                      window=f"2024-01-{seed + 7:02d}", parent=app.latest)
    app.refs[version] = Reference(version, model, history, thresholds, NEW_ITEMS)
    return version


def reload_under_load(app: App, seed: int, warm_s: float, settle_s: float = 0.0
                      ) -> tuple[str, float, list[Sample]]:
    """Publish a version that declines everything while a client loop runs, until both
    routes answer with it (bounded by POLL_S + SWITCH_MARGIN_S) and ``settle_s`` more.
    Returns (the new version, when it was published, the loop's samples)."""
    with loop_running(app) as samples:
        time.sleep(warm_s)
        # Decline everything: a response mixing thresholds and probabilities would show.
        new = publish_next(app, seed=seed, thresholds=(0.0, 0.0))
        published = time.monotonic()
        deadline = published + POLL_S + SWITCH_MARGIN_S
        while time.monotonic() < deadline and not (
                {(s.path, s.body.get("model_version")) for s in samples[-4:]}
                >= {("/recommend", new), ("/fraud", new)}):
            time.sleep(0.1)
        time.sleep(settle_s)
    return new, published, samples


class TamperingStore(LocalStore):
    """Damages ``model.safetensors`` after the publisher verified it, before latest moves:
    what a replica then downloads fails its checksum."""

    def _before_promote(self, info: VersionInfo) -> None:
        path = self.root / "versions" / info.version / "model.safetensors"
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))


def wait_skipped(client: httpx.Client, version: str, timeout_s: float = 60.0
                 ) -> dict[str, Any]:
    """/version once every model deployment has skipped ``version``; serving stays 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status: dict[str, Any] = client.get("/version").json()["deployments"]
        if all(version in s["skipped"] for s in status.values()):
            return status
        assert client.post("/recommend", json={"user_id": "u1"}).status_code == 200
        time.sleep(0.3)
    raise AssertionError(f"{version} not skipped after {timeout_s} s: {status}")


def deploy_app(serve_http: str, work: Path, options: dict[str, Any] | None = None,
               **settings: Any) -> Iterator[App]:
    """Publish a small model to a local store in ``work`` and run the app over it (bearer
    token on) until the generator is closed; ``settings`` override ServeConfig fields and
    ``options`` the deployments' Serve options (see serving.deployments.application)."""
    from ray import serve

    from serving.deployments import application

    model = shop_model(30, 60, ModelConfig(dim=16, history_len=4))
    history = shop_history(model)
    thresholds = quantile_thresholds(model, history)
    catalogue = work / "catalogue.parquet"
    pd.DataFrame({"item_id": ["i0"] + [i for i, _ in NEW_ITEMS],
                  "title": ["a known item keeps its own title"] + [t for _, t in NEW_ITEMS]}
                 ).to_parquet(catalogue)
    store = LocalStore(work / "store")
    version = publish(store, model, history, work, thresholds=thresholds)
    args = AppArgs.model_validate({
        "store": str(store.root), "catalogue": str(catalogue), "poll_interval_s": str(POLL_S),
        "auth_token": TOKEN, "max_body_bytes": str(MAX_BODY), "cache_dir": str(work / "cache"),
        **{k: str(v) for k, v in settings.items()}})
    started = time.monotonic()
    serve.run(application(args.root, options) if options else build_app(args),
              name="shopstream", route_prefix="/")
    state = App(serve_http, store, work, model, args.root)
    state.refs[version] = Reference(version, model, history, thresholds, NEW_ITEMS)
    state.latest = version
    wait_serving(serve_http, version, headers=AUTH)
    print(f"app deployed and serving in {time.monotonic() - started:.1f} s")
    yield state
    delete_app_now("shopstream")


def delete_app_now(name: str, timeout_s: float = 60.0) -> None:
    """Delete Serve app ``name`` at a module's end without the ingress replicas' hold.

    A graceful stop keeps each ingress replica reachable for
    RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S (30 s) so that a load balancer in front
    can deregister it; the redeploy tests run with that hold, as a shop does. When a module
    is done nothing is in front and nothing is in flight, so once the controller has begun
    the delete (no replica is replaced after that) the app's replicas are killed.
    Bounded: fails naming the app's status if it is still there after ``timeout_s``."""
    import ray
    from ray import serve

    serve.delete(name, _blocking=False)
    deadline = time.monotonic() + timeout_s
    while app_status(name) not in ("DELETING", None):
        if time.monotonic() > deadline:
            pytest.fail(f"Serve app {name!r} not deleting after {timeout_s} s: "
                        f"{app_status(name)}")
        time.sleep(0.1)
    prefix = f"SERVE_REPLICA::{name}#"
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].startswith(prefix):
            try:
                ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]),
                         no_restart=True)
            except ValueError:  # it stopped on its own meanwhile
                pass
    while app_status(name) is not None:
        if time.monotonic() > deadline:
            pytest.fail(f"Serve app {name!r} still there {timeout_s} s after its delete: "
                        f"{app_status(name)}")
        time.sleep(0.1)


def app_status(name: str) -> str | None:
    """Serve's status of app ``name`` (``RUNNING``, ``DELETING``, ...); None once gone
    (Serve reports a deleted app as absent or ``NOT_STARTED``)."""
    from ray import serve

    app = serve.status().applications.get(name)
    status = None if app is None else str(getattr(app.status, "value", app.status))
    return None if status == "NOT_STARTED" else status


def replica_pids(deployment: str) -> list[int]:
    """PIDs of this app's replicas of ``deployment`` (Ray names the worker process)."""
    tag = f"ServeReplica:shopstream:{deployment}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and tag in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def kill_under_load(app: App, pid: int, clients: int = 4, seconds: float = 8.0
                    ) -> list[tuple[int, float]]:
    """(status, seconds) of every /recommend that ``clients`` loops sent for ``seconds``
    (at most 2,000), with ``pid`` killed by SIGKILL one second in; a request that got no
    HTTP answer at all is recorded as status 0."""
    samples: list[tuple[int, float]] = []

    def loop() -> None:
        with app.client() as client:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and len(samples) < 2000:
                began = time.monotonic()
                try:
                    code = client.post("/recommend", json={"user_id": "u3", "k": 6}).status_code
                except httpx.TransportError:
                    code = 0
                samples.append((code, time.monotonic() - began))

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    os.kill(pid, signal.SIGKILL)
    for thread in threads:
        thread.join(seconds + 30)
    return samples
