"""The Serve app in its split topology (Ingress, Recommender, FraudScorer) on a real local Ray,
over real HTTP on 127.0.0.1, with a local store and the real MiniLM encoder: answers, cold
start, thresholds, bad input, auth, hot reload, bad versions, a redeploy, a killed model
replica. (The default fused topology: test_serve_faults.py and test_serve_fused.py.)

One app (bearer token on) is deployed for the module; tests run in file order and the hot
reload tests publish new versions into its store, so later tests see later versions.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serving.config import AppArgs
from tests.integration.ray_nodes import group_pids
from tests.integration.serve_support import (
    AUTH,
    MAX_BODY,
    NEW_ITEMS,
    POLL_S,
    SWITCH_MARGIN_S,
    TOKEN,
    TXNS,
    App,
    TamperingStore,
    check_consistent,
    deploy_app,
    kill_under_load,
    publish_next,
    redeploy_under_load,
    reload_under_load,
    replica_pids,
    wait_skipped,
)
from tests.support.listeners import listeners
from tests.support.ports import HAPROXY_PORT_SETTINGS
from tests.support.published import (
    publish,
    shop_history,
    wait_serving,
)

pytestmark = pytest.mark.integration

RECOVERY_S = 120.0  # a restarted replica loads MiniLM and the model on a busy machine

@pytest.fixture(scope="module")
def app(serve_http: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    yield from deploy_app(serve_http, tmp_path_factory.mktemp("serve-local"), topology="split")


def test_endpoints_answer_with_the_published_version(app: App) -> None:
    ref = app.refs[app.latest]
    with app.client() as client:
        for user in ("u0", "u3", "u11"):
            body = client.post("/recommend", json={"user_id": user, "k": 7}).json()
            strategy, expected = ref.recommend(user, k=7)
            assert body["model_version"] == app.latest and body["strategy"] == strategy
            assert [i["item_id"] for i in body["items"]] == expected
            titles = dict(zip(ref.model.items.ids, ref.model.item_titles[1:])) | dict(NEW_ITEMS)
            assert [i["title"] for i in body["items"]] == [titles[i] for i in expected]
        version = client.get("/version").json()["deployments"]
    assert set(version) == {"Recommender", "FraudScorer"}
    print("replica RSS (MiB):", {n: s["rss_mib"] for n, s in version.items()})
    for status in version.values():
        assert status["version"] == app.latest and status["loaded_at"]
        assert status["n_items"] == 63 and status["window"] == "2024-01-01"
        assert status["fraud_features"] == ["night", "new_device", "distance"]
        assert 0 < status["rss_mib"] < 1024


def haproxy_configs() -> list[str]:
    """The config files of the running haproxy processes (Linux /proc)."""
    texts = []
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or (proc / "comm").read_text().strip() != "haproxy":
                continue
            args = (proc / "cmdline").read_bytes().decode().split("\0")
        except OSError:  # the process ended while we looked
            continue
        texts += [Path(args[i + 1]).read_text() for i, arg in enumerate(args[:-1])
                  if arg == "-f" and Path(args[i + 1]).is_file()]
    return texts


def test_http_enters_through_haproxy(app: App) -> None:
    """serving.config.SERVE_START_ENV: the app's HTTP port is HAProxy's, in front of the
    ingress replicas' own HTTP servers, not Serve's Python proxy."""
    port = app.url.rstrip("/").rsplit(":", 1)[1]
    configs = haproxy_configs()
    assert any(f":{port}" in text for text in configs), (port, [t[:400] for t in configs])
    with app.client() as client:
        assert client.get("/healthz").status_code == 200


def test_every_listener_stays_on_loopback(app: App) -> None:
    """serving.loopback: with Serve up (HAProxy, its stats page and exporter, three
    deployments' replicas and their gRPC servers), no process of this session's Ray accepts
    connections from another host. Ray 2.60 binds HAProxy's stats and metrics ports and each
    replica's gRPC server on every interface by itself."""
    with app.client() as client:  # the split topology's handle calls cross the gRPC servers
        assert client.post("/fraud", json=TXNS[0]).status_code == 200
    # This session's process group and every descendant: Ray's daemons, workers, HAProxy.
    found = listeners(set(group_pids({os.getpgrp()})))
    outside = [x for x in found if not x.loopback]
    assert not outside, outside
    haproxy_ports = {x.port for x in found if x.name == "haproxy"}
    assert {int(os.environ[name]) for name in HAPROXY_PORT_SETTINGS} <= haproxy_ports, found
    replicas = {x.pid for x in found if x.name.startswith("ray::ServeRepli")}
    assert len(replicas) >= 3, found  # Ingress, Recommender and FraudScorer at least


def test_new_catalogue_items_are_ranked_from_their_titles(app: App) -> None:
    ref = app.refs[app.latest]
    with app.client() as client:
        body = client.post("/recommend", json={"user_id": "u5", "k": 100}).json()
    ids = [i["item_id"] for i in body["items"]]
    assert {"n1", "n2", "n3"} <= set(ids)
    assert ids == ref.recommend("u5", k=100)[1]
    titles = {i["item_id"]: i["title"] for i in body["items"]}
    assert titles["n1"] == "handmade ceramic teapot"
    assert titles["i0"] == ref.model.item_titles[1]  # the version's own title wins


def test_cold_start_users_get_k_items(app: App) -> None:
    ref = app.refs[app.latest]
    with app.client() as client:
        for k in (1, 10, 25):
            body = client.post("/recommend", json={"user_id": "nobody", "k": k}).json()
            assert body["strategy"] == "popularity" and len(body["items"]) == k
            assert [i["item_id"] for i in body["items"]] == ref.recommend("nobody", k=k)[1]
            shares = [i["score"] for i in body["items"]]
            assert shares == sorted(shares, reverse=True) and shares[0] > 0
        recent = ["i4", "i9", "unknown-item"]
        body = client.post("/recommend", json={"user_id": "new-user", "k": 12,
                                               "recent_item_ids": recent}).json()
    assert body["strategy"] == "recent_items" and len(body["items"]) == 12
    ids = [i["item_id"] for i in body["items"]]
    assert ids == ref.recommend("new-user", ["i4", "i9"], k=12)[1]
    assert not {"i4", "i9"} & set(ids)


def test_fraud_decisions_follow_the_stored_thresholds(app: App) -> None:
    ref = app.refs[app.latest]
    expected = ref.fraud(TXNS)
    with app.client() as client:
        listed = client.post("/fraud", json=TXNS).json()
        single = client.post("/fraud", json=TXNS[5]).json()
    assert listed["model_version"] == app.latest
    assert (listed["thresholds"]["review"], listed["thresholds"]["decline"]) == ref.thresholds
    decisions = [r["decision"] for r in listed["results"]]
    assert decisions == [ref.decision(p) for p in expected]
    assert set(decisions) == {"approve", "review", "decline"}
    for result, txn, p in zip(listed["results"], TXNS, expected):
        assert result["txn_id"] == txn["txn_id"]
        assert result["fraud_probability"] == pytest.approx(p, abs=1e-5)
    assert single["txn_id"] == "t5" and single["model_version"] == app.latest
    assert single["fraud_probability"] == pytest.approx(expected[5], abs=1e-5)
    assert single["decision"] == decisions[5]


GOOD_TXN = TXNS[1]


def _txn(**changes: Any) -> dict[str, Any]:
    return {**GOOD_TXN, **changes}


BAD_INPUTS: list[tuple[str, str, Any, int, str]] = [
    ("k as a string", "/recommend", {"user_id": "u1", "k": "5"}, 422, "k"),
    ("k as a float", "/recommend", {"user_id": "u1", "k": 5.5}, 422, "k"),
    ("k zero", "/recommend", {"user_id": "u1", "k": 0}, 422, "k"),
    ("k too large", "/recommend", {"user_id": "u1", "k": 101}, 422, "k"),
    ("user id a number", "/recommend", {"user_id": 17}, 422, "user_id"),
    ("user id empty", "/recommend", {"user_id": ""}, 422, "user_id"),
    ("user id missing", "/recommend", {"k": 3}, 422, "user_id"),
    ("flag as a string", "/recommend", {"user_id": "u1", "exclude_purchased": "yes"}, 422,
     "exclude_purchased"),
    ("unknown field", "/recommend", {"user_id": "u1", "kk": 3}, 422, "kk"),
    ("too many recent items", "/recommend",
     {"user_id": "u1", "recent_item_ids": [f"i{i}" for i in range(101)]}, 422,
     "recent_item_ids"),
    ("recent item not a string", "/recommend", {"user_id": "u1", "recent_item_ids": ["i1", 2]},
     422, "recent_item_ids[1]"),
    ("NaN amount", "/fraud", '{"amount": NaN, "features": {}}', 422, "amount"),
    ("infinite amount", "/fraud", '{"amount": 1e999}', 422, "amount"),
    ("infinite feature", "/fraud",
     '[{"amount": 3, "features": {"night": Infinity, "new_device": 0, "distance": 1}}]', 422,
     "transactions[0].features.night"),
    ("amount as a string", "/fraud", _txn(amount="12"), 422, "amount"),
    ("amount missing", "/fraud", {"features": GOOD_TXN["features"]}, 422, "amount"),
    ("empty list", "/fraud", [], 422, "transactions"),
    ("oversized list", "/fraud", [GOOD_TXN] * 257, 422, "transactions"),
    ("unknown field in a list", "/fraud", [GOOD_TXN, _txn(bogus=1)], 422,
     "transactions[1].bogus"),
    ("unknown feature", "/fraud", _txn(features={**GOOD_TXN["features"], "zzz": 1.0}), 422,
     "features.zzz"),
    ("missing feature", "/fraud", [_txn(features={"night": 1.0, "new_device": 0.0})], 422,
     "transactions[0].features.distance"),
    ("body not JSON", "/fraud", "{not json", 422, "body"),
    ("body a string", "/recommend", '"u1"', 422, "body"),
    ("body nested too deep", "/fraud", "[" * 5000 + "]" * 5000, 422, "body"),
    ("oversized body", "/fraud", [_txn(txn_id="x" * 200)] * 300, 413, "body"),
]


@pytest.mark.parametrize(("path", "body", "status", "field"),
                         [case[1:] for case in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_a_4xx_naming_the_field(app: App, path: str, body: Any, status: int,
                                             field: str) -> None:
    with app.client() as client:
        if isinstance(body, str):
            response = client.post(path, content=body,
                                   headers={"Content-Type": "application/json"})
        else:
            response = client.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field, error
    assert field in error["message"] or status == 413


def test_chunked_oversized_body_is_413(app: App) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"user_id": "u1", "recent_item_ids": ['
        for _ in range(MAX_BODY // 60 + 1):  # 63 bytes each: over the limit
            yield b'"' + b"i" * 60 + b'",'
        yield b'"i1"]}'

    with app.client() as client:
        response = client.post("/recommend", content=chunks(),
                               headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"] == {"code": "payload_too_large", "field": "body",
                                         "message": f"request body exceeds {MAX_BODY} bytes"}


def test_bearer_token_is_required_except_for_health_and_docs(app: App) -> None:
    with app.client(token=None) as anonymous, app.client(token="wrong-token") as wrong:
        for client in (anonymous, wrong):
            for method, path, body in (("POST", "/recommend", {"user_id": "u1"}),
                                       ("POST", "/fraud", GOOD_TXN), ("GET", "/version", None)):
                response = client.request(method, path, json=body)
                assert response.status_code == 401, (path, response.text)
                assert response.json()["error"]["field"] == "Authorization"
                assert response.headers["WWW-Authenticate"] == "Bearer"
        health = anonymous.get("/healthz")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})  # no internals
        assert anonymous.get("/docs").status_code == 200
        spec = anonymous.get("/openapi.json").json()
        assert {"/recommend", "/fraud", "/healthz", "/version"} <= set(spec["paths"])
        oversized = anonymous.post("/recommend", content=b"x" * (MAX_BODY * 2))
        assert oversized.status_code == 401  # unauthenticated bodies are not even read


def test_hot_reload_under_load_switches_without_errors_or_mixing(app: App) -> None:
    old = app.latest
    new, published, samples = reload_under_load(app, seed=1, warm_s=2.0, settle_s=1.0)
    app.latest = new
    assert len(samples) > 20
    switched = {}
    expected: dict[tuple[str, str], Any] = {}
    for path in ("/recommend", "/fraud"):
        mine = [s for s in samples if s.path == path]
        versions = [check_consistent(app, s, expected) for s in mine]
        assert versions[0] == old and versions[-1] == new
        first_new = versions.index(new)
        assert set(versions[first_new:]) == {new}, f"{path} went back to {old}"
        switched[path] = mine[first_new].t - published
    print(f"hot reload: {len(samples)} requests, all 200; switched after {switched} s")
    assert all(0 < s <= POLL_S + SWITCH_MARGIN_S for s in switched.values()), switched


def test_bad_versions_are_skipped_and_the_old_one_keeps_serving(app: App) -> None:
    good = app.latest
    with app.client() as client:
        corrupt = publish(TamperingStore(app.store.root), app.model, shop_history(app.model),
                          app.work, parent=good, window="2024-02-01")
        status = wait_skipped(client, corrupt)
        for s in status.values():
            assert s["version"] == good
            assert "CheckpointCorruptError" in s["skipped"][corrupt]
            assert "model.safetensors" in s["skipped"][corrupt]
        invalid = publish(app.store, app.model, shop_history(app.model), app.work,
                          parent=good, thresholds=(0.9, 0.1), window="2024-02-08")
        status = wait_skipped(client, invalid)
        for s in status.values():
            assert s["version"] == good
            assert "review 0.9 is above decline 0.1" in s["skipped"][invalid]
        body = client.post("/recommend", json={"user_id": "u3", "k": 6}).json()
        assert body["model_version"] == good
        assert [i["item_id"] for i in body["items"]] == app.refs[good].recommend("u3", k=6)[1]
        # A good version after the bad ones is picked up again.
        fixed = publish_next(app, seed=2, thresholds=(0.2, 0.8))
        wait_serving(app.url, fixed, POLL_S + SWITCH_MARGIN_S, headers=AUTH)
        assert client.post("/fraud", json=GOOD_TXN).json()["model_version"] == fixed
    app.latest = fixed


def test_a_redeploy_keeps_serving_and_applies_user_config(app: App) -> None:
    """Serve replaces every replica on a Python redeploy; with max_surge_percent=100 the new
    replicas load their model before the old ones stop, so no request fails (the default
    stops the old replica first: ~10 s without one, measured)."""
    from serving.config import FRAUD_SCORER, RECOMMENDER

    user_config = {"user_config": {"poll_interval_s": 0.25, "generation": 1}}
    samples = redeploy_under_load(app, {RECOMMENDER: user_config, FRAUD_SCORER: user_config})
    assert len(samples) > 10 and {s.status for s in samples} == {200}
    assert {s.body["model_version"] for s in samples} == {app.latest}
    with app.client() as client:
        status = client.get("/version").json()["deployments"]
    assert {s["poll_interval_s"] for s in status.values()} == {0.25}
    assert {s["version"] for s in status.values()} == {app.latest}


def test_a_killed_model_replica_makes_no_request_wait_over_2s(app: App) -> None:
    """The Ingress resends a call that met the dead Recommender (serving.calls) or answers
    503 within request_timeout_s."""
    (pid,) = replica_pids("Recommender")
    samples = kill_under_load(app, pid)
    slowest = max(s for _, s in samples)
    print(f"kill -9 of the Recommender: {len(samples)} requests, "
          f"{sum(c == 503 for c, _ in samples)} x 503, slowest {slowest:.2f} s")
    assert {c for c, _ in samples} <= {200, 503} and slowest < 2.0
    wait_serving(app.url, app.latest, RECOVERY_S, headers=AUTH)  # Serve replaced it


def test_the_token_never_reaches_the_logs(app: App) -> None:
    import ray

    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    time.sleep(1.0)  # let the log monitor flush
    leaked = [p.name for p in logs.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert logs.is_dir() and not leaked


def test_config_yaml_is_a_valid_serve_config_for_the_same_builder() -> None:
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from serving.config import deployment_names

    path = Path(__file__).resolve().parents[2] / "serving" / "config.yaml"
    schema = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
    (app_schema,) = schema.applications
    assert app_schema.import_path == "serving.app:build_app"
    assert schema.http_options.host == "127.0.0.1"
    args = AppArgs.model_validate(app_schema.args).root
    assert sorted(d.name for d in app_schema.deployments) == \
        sorted(deployment_names(args.topology))
    assert args.store == "runs/store"
