"""The Serve app reading its versions from moto's standalone S3 server (real HTTP, 127.0.0.1).

The replicas get the (fake) credentials the way a deployment should: from a shared
credentials file whose *path* is in the deployment's runtime_env. Secrets themselves must not
go into runtime_env ``env_vars``: Ray's runtime_env agent logs those verbatim
(``runtime_env_agent.log``), which the last test would catch.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from serving.config import FUSED, ServeConfig
from tests.integration.serve_support import delete_app_now
from tests.support.published import (
    Reference,
    perturbed,
    publish,
    shop_history,
    shop_model,
    wait_serving,
)
from training.model import ModelConfig, ShopStreamModel
from training.store import CheckpointStore, open_store

pytestmark = pytest.mark.integration

SECRET = f"moto-secret-{uuid.uuid4().hex}"
TXNS = [{"txn_id": f"t{i}", "user_id": f"u{i}", "item_id": f"i{2 * i}",
         "amount": 3.0 + 11.0 * i, "features": {"night": float(i % 2),
                                                 "new_device": float(i % 3 == 1),
                                                 "distance": float(i)}} for i in range(9)]


@dataclass
class S3App:
    url: str
    store: CheckpointStore
    work: Path
    model: ShopStreamModel
    ref: Reference


def credentials_file(folder: Path) -> Path:
    path = folder / "aws-credentials"
    path.write_text(f"[default]\naws_access_key_id = moto-key\n"
                    f"aws_secret_access_key = {SECRET}\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def s3_app(serve_http: str, moto_server: str, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[S3App]:
    import boto3
    from ray import serve

    from serving.deployments import application

    work = tmp_path_factory.mktemp("serve-s3")
    env = {"AWS_SHARED_CREDENTIALS_FILE": str(credentials_file(work)),
           "AWS_CONFIG_FILE": str(work / "no-aws-config"), "AWS_DEFAULT_REGION": "us-east-1"}
    bucket = f"serve-{uuid.uuid4().hex[:12]}"
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                     "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        boto3.session.Session().client("s3", endpoint_url=moto_server).create_bucket(
            Bucket=bucket)
        store = open_store(f"s3://{bucket}/shopstream", moto_server)
        model = shop_model(25, 40, ModelConfig(dim=16, history_len=4), seed=5)
        history = shop_history(model, seed=5)
        probs = sorted(Reference("", model, history, (0.5, 0.9)).fraud(TXNS))
        thresholds = ((probs[2] + probs[3]) / 2, (probs[5] + probs[6]) / 2)
        version = publish(store, model, history, work, thresholds=thresholds)
        config = ServeConfig(store=f"s3://{bucket}/shopstream", endpoint_url=moto_server,
                             poll_interval_s=0.5, cache_dir=str(work / "cache"))
        actor = {"ray_actor_options": {"num_cpus": 0.5, "runtime_env": {"env_vars": env}}}
        serve.run(application(config, {FUSED: actor}), name="shopstream-s3",
                  route_prefix="/")
        app = S3App(serve_http, store, work, model,
                    Reference(version, model, history, thresholds))
        wait_serving(serve_http, version)
        yield app
    delete_app_now("shopstream-s3")


def test_both_endpoints_answer_with_the_version_published_on_s3(s3_app: S3App) -> None:
    ref = s3_app.ref
    expected = ref.fraud(TXNS)
    with httpx.Client(base_url=s3_app.url, timeout=30) as client:
        rec = client.post("/recommend", json={"user_id": "u2", "k": 8}).json()
        cold = client.post("/recommend", json={"user_id": "someone-new", "k": 15}).json()
        fraud = client.post("/fraud", json=TXNS).json()
    assert rec["model_version"] == cold["model_version"] == fraud["model_version"] == ref.version
    assert [i["item_id"] for i in rec["items"]] == ref.recommend("u2", k=8)[1]
    assert cold["strategy"] == "popularity" and len(cold["items"]) == 15
    assert [i["item_id"] for i in cold["items"]] == ref.recommend("someone-new", k=15)[1]
    decisions = [r["decision"] for r in fraud["results"]]
    assert decisions == [ref.decision(p) for p in expected]
    assert set(decisions) == {"approve", "review", "decline"}
    assert [r["fraud_probability"] for r in fraud["results"]] == pytest.approx(expected,
                                                                               abs=1e-5)


def test_a_new_version_on_s3_is_picked_up(s3_app: S3App) -> None:
    model = perturbed(s3_app.model, seed=11)
    history = shop_history(model, seed=11)
    # The fixture's credentials stay in this process's environment for the module.
    version = publish(s3_app.store, model, history, s3_app.work, thresholds=(0.0, 0.0),
                      parent=s3_app.ref.version, window="2024-01-08")
    took = wait_serving(s3_app.url, version, timeout_s=30.0)
    print(f"S3: new version served {took:.2f} s after publish")
    ref = Reference(version, model, history, (0.0, 0.0))
    with httpx.Client(base_url=s3_app.url, timeout=30) as client:
        rec = client.post("/recommend", json={"user_id": "u2", "k": 8}).json()
        fraud = client.post("/fraud", json=TXNS[0]).json()
    assert rec["model_version"] == fraud["model_version"] == version
    assert [i["item_id"] for i in rec["items"]] == ref.recommend("u2", k=8)[1]
    assert fraud["decision"] == "decline"


def test_credentials_never_reach_the_logs(s3_app: S3App) -> None:
    import ray

    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    time.sleep(1.0)  # let the log monitor flush
    leaked = [p.name for p in logs.rglob("*")
              if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert logs.is_dir() and not leaked
