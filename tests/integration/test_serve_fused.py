"""The fused topology (the default: a ShopStream deployment, HTTP and both models in one
replica) with one replica, on a real local Ray over real HTTP: the same answers as the
model, a per-hop timing header, a hot reload under load in which both routes switch at the
same moment, and a canary. (With its default two replicas, under faults: test_serve_faults.py.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving.config import FUSED
from tests.integration.serve_support import (
    POLL_S,
    SWITCH_MARGIN_S,
    TXNS,
    App,
    Sample,
    check_consistent,
    deploy_app,
    publish_next,
    reload_under_load,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def app(serve_http: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    yield from deploy_app(serve_http, tmp_path_factory.mktemp("serve-fused"),
                          options={FUSED: {"num_replicas": 1}})


def _timing(header: str) -> dict[str, float]:
    return {name: float(ms) for name, ms in
            (part.strip().split(";dur=") for part in header.split(","))}


def test_one_deployment_answers_both_routes_like_the_model(app: App) -> None:
    ref = app.refs[app.latest]
    expected: dict[tuple[str, str], Any] = {}
    with app.client() as client:
        for user in ("u0", "u3"):
            answer = client.post("/recommend", json={"user_id": user, "k": 5})
            assert answer.json()["model_version"] == app.latest
            assert [i["item_id"] for i in answer.json()["items"]] == ref.recommend(user, k=5)[1]
        fraud = client.post("/fraud", json=TXNS)
        check_consistent(app, Sample(0.0, "/fraud", fraud.status_code, fraud.json()), expected)
        timing = _timing(fraud.headers["server-timing"])
        assert set(timing) == {"app", "model"} and 0 < timing["model"] <= timing["app"]
        status = client.get("/version").json()["deployments"]
        health = client.get("/healthz")
    assert list(status) == [FUSED] and status[FUSED]["version"] == app.latest
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_hot_reload_switches_both_routes_at_once(app: App) -> None:
    # One holder answers both routes, so in a sequential client loop every request after
    # the first new answer is new, on either route (the split topology's two deployments
    # may disagree for a moment).
    old = app.latest
    new, published, samples = reload_under_load(app, seed=1, warm_s=1.0)
    app.latest = new
    expected: dict[tuple[str, str], Any] = {}
    versions = [check_consistent(app, s, expected) for s in samples]
    assert versions[0] == old and versions[-1] == new
    first_new = versions.index(new)
    assert set(versions[first_new:]) == {new}, "a request after the switch got the old version"
    assert {s.path for s in samples[first_new:]} == {"/recommend", "/fraud"}
    print(f"fused hot reload: {len(samples)} requests, switched after "
          f"{samples[first_new].t - published:.2f} s")


def test_a_canary_takes_its_share_of_users_and_promote_makes_it_latest(app: App) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from training.store.canary import CanarySpec, write_canary
    from training.store.versions import main as versions

    incumbent = app.latest
    candidate = publish_next(app, seed=3, thresholds=(0.2, 0.8))
    app.store.promote(incumbent)  # the candidate stays published beside latest
    write_canary(app.store, CanarySpec(candidate, fraction=0.2))
    with app.client() as client:
        deadline = time.monotonic() + POLL_S + SWITCH_MARGIN_S
        # Publishing made the candidate latest for a moment: wait until the replica serves
        # the incumbent again, with the candidate loaded beside it.
        while time.monotonic() < deadline and not _canary_loaded(client, incumbent):
            time.sleep(0.2)
        answers = [client.post("/recommend", json={"user_id": f"cust-{i}", "k": 3}).json()
                   for i in range(500)]
        page = client.get("/metrics").text
        status = client.get("/version").json()["deployments"][FUSED]
    share = sum(a["model_version"] == candidate for a in answers) / len(answers)
    assert {a["model_version"] for a in answers} == {incumbent, candidate}
    assert 0.15 <= share <= 0.25, share
    assert status["canary"]["counts"]["canary_answers"] == round(share * 500)
    families = {f.name: f for f in text_string_to_metric_families(page)}  # parses, or raises
    served = {s.labels["version"]: s.value for s in families["shopstream_requests"].samples
              if s.labels.get("route") == "/recommend" and s.name.endswith("_total")}
    assert served[candidate] == round(share * 500) and served[incumbent] >= 500 * 0.75
    assert families["shopstream_canary_fraction"].samples[0].value == 0.2
    _wait_for_log(f"answered by {candidate}")
    _wait_for_log(f"answered by {incumbent}")
    assert versions(["--store", str(app.store.root), "promote", candidate]) == 0
    assert app.store.latest().version == candidate  # type: ignore[union-attr]
    app.latest = candidate


def _canary_loaded(client: httpx.Client, latest: str) -> bool:
    status = client.get("/version").json()["deployments"][FUSED]
    canary = status["canary"]
    return status["version"] == latest and bool(canary and canary["loaded"])


def _wait_for_log(needle: str, timeout_s: float = 10.0) -> None:
    """Some replica log file (Ray's session logs) holds ``needle``."""
    import ray

    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(needle.encode() in p.read_bytes() for p in logs.rglob("*") if p.is_file()):
            return
        time.sleep(0.5)
    raise AssertionError(f"{needle!r} in no log under {logs}")

