"""The Serve app on a real local Ray, over real HTTP on 127.0.0.1, with a local store and the
real MiniLM encoder: answers, cold start, thresholds, bad input, auth, hot reload, bad versions.

One app (bearer token on) is deployed for the module; tests run in file order and the hot
reload tests publish new versions into its store, so later tests see later versions.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from serving.app import build_app
from serving.config import AppArgs
from serving.testing import (
    Reference,
    perturbed,
    publish,
    shop_history,
    shop_model,
    wait_serving,
)
from training.model import ModelConfig, ShopStreamModel
from training.store import LocalStore, VersionInfo

pytestmark = pytest.mark.integration

TOKEN = f"tok-{uuid.uuid4().hex}"
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


@pytest.fixture(scope="module")
def app(serve_http: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    from ray import serve

    work = tmp_path_factory.mktemp("serve-local")
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
        "auth_token": TOKEN, "max_body_bytes": str(MAX_BODY), "cache_dir": str(work / "cache")})
    started = time.monotonic()
    serve.run(build_app(args), name="shopstream", route_prefix="/")
    state = App(serve_http, store, work, model, args.root)
    state.refs[version] = Reference(version, model, history, thresholds, NEW_ITEMS)
    state.latest = version
    wait_serving(serve_http, version)
    print(f"app deployed and serving in {time.monotonic() - started:.1f} s")
    yield state
    serve.delete("shopstream")


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
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/docs").status_code == 200
        spec = anonymous.get("/openapi.json").json()
        assert {"/recommend", "/fraud", "/healthz", "/version"} <= set(spec["paths"])
        oversized = anonymous.post("/recommend", content=b"x" * (MAX_BODY * 2))
        assert oversized.status_code == 401  # unauthenticated bodies are not even read


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
                              response.json()))


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


def test_hot_reload_under_load_switches_without_errors_or_mixing(app: App) -> None:
    old = app.latest
    samples: list[Sample] = []
    stop = threading.Event()
    loop = threading.Thread(target=client_loop, args=(app, stop, samples), daemon=True)
    loop.start()
    try:
        time.sleep(2.0)
        # Decline everything: a response mixing thresholds and probabilities would show.
        new = publish_next(app, seed=1, thresholds=(0.0, 0.0))
        published = time.monotonic()
        deadline = published + POLL_S + SWITCH_MARGIN_S
        while time.monotonic() < deadline and not (
                {(s.path, s.body.get("model_version")) for s in samples[-4:]}
                >= {("/recommend", new), ("/fraud", new)}):
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        stop.set()
        loop.join(30)
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
        wait_serving(app.url, fixed, POLL_S + SWITCH_MARGIN_S)
        assert client.post("/fraud", json=GOOD_TXN).json()["model_version"] == fixed
    app.latest = fixed


def test_a_redeploy_keeps_serving_and_applies_user_config(app: App) -> None:
    """Serve replaces every replica on a Python redeploy; new replicas load their model
    before they count as started, so the rollout never leaves the app without one."""
    from ray import serve

    from serving.config import FRAUD_SCORER, RECOMMENDER
    from serving.deployments import application

    samples: list[Sample] = []
    stop = threading.Event()
    loop = threading.Thread(target=client_loop, args=(app, stop, samples, 2000, 120.0),
                            daemon=True)
    loop.start()
    try:
        user_config = {"user_config": {"poll_interval_s": 0.25, "generation": 1}}
        serve.run(application(app.config, {RECOMMENDER: user_config,
                                           FRAUD_SCORER: user_config}),
                  name="shopstream", route_prefix="/")
        time.sleep(1.0)
    finally:
        stop.set()
        loop.join(30)
    assert len(samples) > 10 and {s.status for s in samples} == {200}
    assert {s.body["model_version"] for s in samples} == {app.latest}
    with app.client() as client:
        status = client.get("/version").json()["deployments"]
    assert {s["poll_interval_s"] for s in status.values()} == {0.25}
    assert {s["version"] for s in status.values()} == {app.latest}


def test_the_token_never_reaches_the_logs(app: App) -> None:
    import ray

    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    time.sleep(1.0)  # let the log monitor flush
    leaked = [p.name for p in logs.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert logs.is_dir() and not leaked


def test_config_yaml_is_a_valid_serve_config_for_the_same_builder() -> None:
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from serving.config import DEPLOYMENTS

    path = Path(__file__).resolve().parents[2] / "serving" / "config.yaml"
    schema = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
    (app_schema,) = schema.applications
    assert app_schema.import_path == "serving.app:build_app"
    assert schema.http_options.host == "127.0.0.1"
    assert sorted(d.name for d in app_schema.deployments) == sorted(DEPLOYMENTS)
    assert AppArgs.model_validate(app_schema.args).root.store == "runs/store"
