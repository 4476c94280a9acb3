"""ServeConfig / AppArgs validation, and serving/config.yaml against them (no Ray)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from serving.config import FUSED, AppArgs, ServeConfig
from training.cli import ConfigError

pytestmark = pytest.mark.unit

CONFIG_YAML = Path(__file__).resolve().parents[2] / "serving" / "config.yaml"


@pytest.mark.parametrize(("setting", "value"), [
    ("store", " "), ("endpoint_url", "http://127.0.0.1:9000"), ("poll_interval_s", 0.0),
    ("poll_interval_s", float("nan")), ("max_load_attempts", 0), ("max_batch_size", 0),
    ("batch_wait_timeout_s", -1.0), ("max_body_bytes", 10), ("auth_token", "short"),
    ("token_env", ""), ("torch_threads", 0), ("port", 0), ("catalogue", " "),
    ("topology", "mesh")])
def test_each_bad_setting_is_named(setting: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"^{setting}: "):
        ServeConfig(**{setting: value})  # type: ignore[arg-type]


def test_serve_run_strings_become_typed_settings() -> None:
    config = AppArgs.model_validate({"store": "s3://bucket/shop", "poll_interval_s": "2.5",
                                     "max_batch_size": "8", "endpoint_url": "http://h:1"}).root
    assert config == ServeConfig(store="s3://bucket/shop", poll_interval_s=2.5,
                                 max_batch_size=8, endpoint_url="http://h:1")
    assert AppArgs.model_validate({}).root == ServeConfig()


@pytest.mark.parametrize(("args", "where"), [
    ({"stoer": "x"}, "stoer"), ({"poll_interval_s": "soon"}, "poll_interval_s"),
    ({"poll_interval_s": "0"}, "poll_interval_s"), ({"topology": "mesh"}, "topology")])
def test_bad_builder_args_fail_naming_the_key(args: dict[str, str], where: str) -> None:
    with pytest.raises(ValidationError, match=where):
        AppArgs.model_validate(args)


def test_the_token_stays_out_of_repr_logs_and_errors() -> None:
    secret = "s3cr3t-token-value"
    config = ServeConfig(auth_token=secret)
    assert secret not in repr(config) and secret not in str(config.public_dict())
    assert config.public_dict()["auth_token"] == "<set>"
    with pytest.raises(ValidationError) as caught:
        AppArgs.model_validate({"auth_token": secret, "poll_interval_s": "-1"})
    assert secret not in str(caught.value)


def test_config_yaml_starts_the_same_app_on_loopback() -> None:
    doc = yaml.safe_load(CONFIG_YAML.read_text())
    assert doc["http_options"]["host"] == "127.0.0.1"
    (app,) = doc["applications"]
    assert app["import_path"] == "serving.app:build_app" and app["route_prefix"] == "/"
    config = AppArgs.model_validate(app["args"]).root
    assert dataclasses.replace(config, poll_interval_s=ServeConfig().poll_interval_s) \
        == ServeConfig()
    # The default topology is fused: one deployment, never fewer than two replicas (a
    # request whose replica dies is resent by HAProxy to another one).
    (deployment,) = app["deployments"]
    assert config.topology == "fused" and deployment["name"] == FUSED
    assert deployment["max_ongoing_requests"] >= 1
    assert deployment.get("num_replicas", 0) >= 2 or \
        deployment["autoscaling_config"]["min_replicas"] >= 2
    assert deployment["user_config"] == {"poll_interval_s": config.poll_interval_s}
