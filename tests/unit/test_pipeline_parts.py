"""The pipeline's small parts: its config, the serve step's requests and HTTP, runner state."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cluster.pipeline_config import METHODS, PipelineConfig
from cluster.runner import (
    LABELS,
    STATE,
    PipelineStateError,
    load_state,
    materialize,
    new_result,
    source_key,
    tasks_of,
)
from cluster.serve_step import (
    ServeStepError,
    curl_lines,
    http_json,
    sample_requests,
    served_versions,
    wait_for_version,
)
from serving.config import TOKEN_ENV
from training.cli import ConfigError
from training.data.schema import WindowData, empty_frame
from training.data.synthetic import SyntheticShopConfig
from training.data.windows import list_windows
from training.incremental_config import IncrementalConfig
from training.store import open_store

pytestmark = pytest.mark.unit

BASE = pd.Timestamp("2024-01-01", tz="UTC")
SECRET = "tok-3f9a-very-secret"


def _ts(n: int) -> pd.Series:
    return pd.Series([BASE + pd.Timedelta(minutes=m) for m in range(n)]).astype(
        "datetime64[us, UTC]")


def _interactions(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    if not rows:
        return empty_frame("interactions")
    users, items, events = zip(*rows)
    return pd.DataFrame({"user_id": list(users), "item_id": list(items), "ts": _ts(len(rows)),
                         "event": list(events), "quantity": 1, "price": 1.0})


def _transactions(labels: list[bool | None], users: list[str | None] | None = None,
                  extra: dict[str, list[float]] | None = None) -> pd.DataFrame:
    n = len(labels)
    return pd.DataFrame({
        "txn_id": [f"t{i}" for i in range(n)], "user_id": users or ["u1"] * n,
        "item_id": None, "ts": _ts(n), "amount": [25.5 + i for i in range(n)],
        "is_fraud": pd.array(labels, dtype="boolean"),
        **(extra or {"f_a": [0.5] * n})})


def _window(wid: str, rows: list[tuple[str, str, str]] | None = None,
            txns: pd.DataFrame | None = None) -> WindowData:
    return WindowData(wid, interactions=_interactions(rows or []),
                      transactions=empty_frame("transactions") if txns is None else txns)


# ---- PipelineConfig -------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,setting", [
    ({"methods": ("incremental", "bogus")}, "methods"),
    ({"max_windows": 1}, "max_windows"),
    ({"arms_trainer": "gpu"}, "arms_trainer"),
    ({"port": 0}, "port"),
    ({"port": 65536}, "port"),
    ({"sweep_every": -1}, "sweep_every"),
    ({"serve_timeout_s": 0.0}, "serve_timeout_s"),
])
def test_pipeline_config_errors_name_the_setting(kwargs: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigError, match=setting):
        PipelineConfig(**kwargs)


def test_pipeline_config_defaults_and_edges_are_valid() -> None:
    assert PipelineConfig().methods == METHODS
    assert PipelineConfig(max_windows=2, arms_trainer="local", port=65535).max_windows == 2


# ---- serve_step: requests, curl lines, HTTP --------------------------------------------------

def test_sample_requests_prefer_a_returning_user_and_finite_features() -> None:
    txns = _transactions([False, True], users=["u7", None],
                         extra={"f_a": [1.5, 0.0], "f_b": [float("nan"), 1.0],
                                "f_c": [float("inf"), 2.0], "f_d": [-2.0, 3.0]})
    window = _window("w3", [("new1", "a", "purchase"), ("u2", "b", "view"),
                            ("u3", "c", "purchase")], txns)
    out = sample_requests(window, known_users={"u3", "u2", "zz"})
    assert list(out) == ["/recommend", "/fraud"]
    assert out["/recommend"] == {"user_id": "u2", "k": 5}  # first returning user in order
    assert out["/fraud"] == {"amount": 25.5, "features": {"f_a": 1.5, "f_d": -2.0},
                             "txn_id": "t0", "user_id": "u7"}
    json.dumps(out, allow_nan=False)  # a valid JSON body
    cold = sample_requests(window, known_users=set())
    assert cold["/recommend"] == {"user_id": "new1", "k": 5}


def test_sample_requests_skip_missing_tables_and_user() -> None:
    txns = _transactions([None], users=[None])
    only_fraud = sample_requests(_window("w", [], txns), {"u1"})
    assert list(only_fraud) == ["/fraud"] and "user_id" not in only_fraud["/fraud"]
    only_rec = sample_requests(_window("w", [("u1", "a", "purchase")]), {"u1"})
    assert only_rec == {"/recommend": {"user_id": "u1", "k": 5}}


def test_curl_lines_reference_the_token_variable_never_its_value(monkeypatch) -> None:
    requests = {"/recommend": {"user_id": "u2", "k": 5}, "/fraud": {"amount": 3.0}}
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    plain = curl_lines("http://127.0.0.1:8000", requests)
    assert plain == [
        "curl -s http://127.0.0.1:8000/version",
        "curl -s -X POST http://127.0.0.1:8000/recommend -H 'Content-Type: application/json' "
        "-d '{\"user_id\": \"u2\", \"k\": 5}'",
        "curl -s -X POST http://127.0.0.1:8000/fraud -H 'Content-Type: application/json' "
        "-d '{\"amount\": 3.0}'"]
    assert not any("Authorization" in line for line in plain)
    monkeypatch.setenv(TOKEN_ENV, SECRET)
    authed = curl_lines("http://127.0.0.1:8000", requests)
    assert len(authed) == 3
    assert all("-H 'Authorization: Bearer $SHOPSTREAM_API_TOKEN'" in line for line in authed)
    assert not any(SECRET in line for line in authed)


class _Handler(BaseHTTPRequestHandler):
    """/ok and /version answer 200, /bad 422 with a JSON error, /boom 500 with plain text;
    POSTs echo their body and Authorization header."""

    versions: dict[str, Any] = {}

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self.path == "/version":
            self._send(200, json.dumps({"deployments": self.versions}).encode())
        elif self.path == "/boom":
            self._send(500, b"internal boom", "text/plain")
        else:
            self._send(200, b'{"ok": true, "n": 3}')

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/bad":
            self._send(422, json.dumps({"detail": "user_id: missing", "got": body}).encode())
            return
        self._send(200, json.dumps({"echo": body, "auth": self.headers.get("Authorization"),
                                    "type": self.headers.get("Content-Type")}).encode())


@pytest.fixture()
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,),
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_http_json_returns_status_and_body_and_never_raises_on_http_errors(
        server, monkeypatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert http_json(f"{server}/ok") == (200, {"ok": True, "n": 3})
    status, body = http_json(f"{server}/echo", {"user_id": "u1", "k": 2})
    assert (status, body) == (200, {"echo": {"user_id": "u1", "k": 2}, "auth": None,
                                    "type": "application/json"})
    assert http_json(f"{server}/bad", {"k": 1}) == (422, {"detail": "user_id: missing",
                                                         "got": {"k": 1}})
    assert http_json(f"{server}/boom") == (500, "internal boom")
    monkeypatch.setenv(TOKEN_ENV, SECRET)
    assert http_json(f"{server}/echo", {})[1]["auth"] == f"Bearer {SECRET}"


def test_wait_for_version_returns_once_every_deployment_serves_it(server, monkeypatch) -> None:
    monkeypatch.setattr(_Handler, "versions", {"rec": {"version": "v2"},
                                               "fraud": {"version": "v2"}})
    assert wait_for_version(server, "v2", timeout_s=5.0) == {"rec": "v2", "fraud": "v2"}
    monkeypatch.setattr(_Handler, "versions", {"rec": {"version": "v2"},
                                               "fraud": {"version": "v1"}})
    with pytest.raises(ServeStepError, match="serve_timeout_s"):
        wait_for_version(server, "v2", timeout_s=0.1)


def test_served_versions_is_empty_when_nothing_answers() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert served_versions(f"http://127.0.0.1:{port}") == {}


# ---- runner: tasks, results dict, saved state ------------------------------------------------

def test_tasks_of_rec_fraud_or_both() -> None:
    rec = _window("w0", [("u1", "a", "purchase")])
    views = _window("w1", [("u1", "a", "view")])
    fraud = _window("w2", [("u1", "a", "view")], _transactions([True, False]))
    unlabelled = _window("w3", [], _transactions([None, None]))
    assert tasks_of([rec, views], 20) == {"rec": "ndcg@20"}
    assert tasks_of([views, fraud], 10) == {"fraud": "auc_pr"}
    assert tasks_of([rec, fraud], 5) == {"rec": "ndcg@5", "fraud": "auc_pr"}
    assert tasks_of([views, unlabelled], 5) == {}


def _windows(ids: list[str]) -> list[WindowData]:
    return [_window(wid, [("u1", "a", "purchase")]) for wid in ids]


def test_new_result_lists_ours_first_and_drops_baselines_without_their_task() -> None:
    cfg = PipelineConfig(methods=("popularity", "frozen", "hist_gradient_boosting",
                                  "incremental"))
    inc = IncrementalConfig.of(source="synthetic")
    result = new_result(cfg, inc, _windows(["w0", "w1", "w2"]), {"rec": "ndcg@20"}, "k1",
                        {"x": 1})
    assert list(result["methods"]) == ["incremental", "popularity", "frozen"]
    assert result["methods"]["incremental"] == {"label": LABELS["incremental"],
                                                "kind": "neural", "tasks": ["rec"]}
    assert result["methods"]["popularity"] == {"label": LABELS["popularity"],
                                               "kind": "baseline", "tasks": ["rec"]}
    assert result["windows"] == ["w0", "w1", "w2"]
    assert result["evaluated_windows"] == ["w1", "w2"]
    assert result["forgetting"] == {"incremental": {}, "frozen": {}}
    assert result["source"] == {"name": "synthetic", "path": None, "freq": "week", "key": "k1"}
    assert result["settings"] == {"x": 1} and result["tasks"] == {"rec": "ndcg@20"}
    both = {"rec": "ndcg@20", "fraud": "auc_pr"}
    fraud = new_result(PipelineConfig(methods=("repeat_then_popular",
                                               "hist_gradient_boosting")),
                       inc, _windows(["w0", "w1"]), {"fraud": "auc_pr"}, "k1", {})
    assert list(fraud["methods"]) == ["incremental", "hist_gradient_boosting"]
    assert fraud["methods"]["incremental"]["tasks"] == ["fraud"]
    assert fraud["methods"]["hist_gradient_boosting"]["tasks"] == ["fraud"]
    every = new_result(PipelineConfig(), inc, _windows(["w0", "w1"]), both, "k1", {})
    assert list(every["methods"]) == list(METHODS)
    assert every["methods"]["full_retrain"]["tasks"] == ["rec", "fraud"]


@pytest.fixture()
def fresh() -> dict[str, Any]:
    inc = IncrementalConfig.of(source="synthetic")
    return new_result(PipelineConfig(methods=("incremental", "popularity")), inc,
                      _windows(["w0", "w1", "w2"]), {"rec": "ndcg@20"},
                      source_key(inc, SyntheticShopConfig()), {})


def test_load_state_resumes_a_matching_run(tmp_path: Path, fresh) -> None:
    store = open_store(str(tmp_path))
    assert load_state(store, fresh) is fresh  # nothing saved yet
    saved = {**fresh, "prequential": {"w1": {"popularity": {"rec": {"ndcg@20": 0.25}}}},
             "created_at": "2020-01-01T00:00:00Z"}
    store.put_config(STATE, saved)
    assert load_state(store, fresh) == saved
    # A run saved over the first two windows resumes with the third one added.
    store.put_config(STATE, {**saved, "windows": ["w0", "w1"], "evaluated_windows": ["w1"]})
    resumed = load_state(store, fresh)
    assert resumed["windows"] == ["w0", "w1", "w2"]
    assert resumed["evaluated_windows"] == ["w1", "w2"]
    assert resumed["prequential"] == saved["prequential"]


@pytest.mark.parametrize("change", ["key", "windows", "methods"])
def test_load_state_refuses_a_store_that_ran_on_other_data(tmp_path: Path, fresh,
                                                           change: str) -> None:
    store = open_store(str(tmp_path))
    saved = json.loads(json.dumps(fresh))
    if change == "key":
        saved["source"]["key"] = "0123456789ab"
    elif change == "windows":
        saved["windows"] = ["w0", "w9"]
    else:
        del saved["methods"]["popularity"]
    store.put_config(STATE, saved)
    with pytest.raises(PipelineStateError, match="store"):
        load_state(store, fresh)


def test_source_key_follows_the_data_not_the_rest() -> None:
    inc = IncrementalConfig.of(source="synthetic")
    small, other = SyntheticShopConfig(n_users=50), SyntheticShopConfig(n_users=51)
    assert source_key(inc, small) == source_key(IncrementalConfig.of(source="synthetic",
                                                                  store="elsewhere"), small)
    assert source_key(inc, small) != source_key(inc, other)
    assert len(source_key(inc, small)) == 12
    # A setting added later keeps the key of the runs stored before it while it changes
    # no data (the demo's store resumes), and moves it once it does.
    # (The 6-week shop's key, recorded in reports/synthetic/shop-week-delay1 before.)
    shop: dict[str, Any] = {"n_windows": 6, "interactions_per_window": 2500,
                            "transactions_per_window": 1200,
                            "n_users": 600, "n_items": 300, "fraud_rate": 0.04}
    assert source_key(inc, SyntheticShopConfig(**shop)) == "a0ff7353ecdf"
    assert source_key(inc, SyntheticShopConfig(**shop, chargeback_days=2.0)) != "a0ff7353ecdf"


def test_materialize_writes_the_source_once_and_keeps_max_windows(tmp_path: Path) -> None:
    synthetic = SyntheticShopConfig(n_users=20, n_items=12, new_items_per_window=2, n_windows=3,
                                    interactions_per_window=40, transactions_per_window=10)
    inc = IncrementalConfig.of(source="synthetic")
    cfg = PipelineConfig(work_dir=str(tmp_path), max_windows=2)
    folder, windows, freq = materialize(cfg, inc, synthetic)
    assert folder == tmp_path / f"windows-synthetic-{source_key(inc, synthetic)}"
    assert freq == "week"
    assert [w.window_id for w in windows] == ["2024-01-01", "2024-01-08"]
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "2024-01-01", "2024-01-08", "2024-01-15"]
    stored = IncrementalConfig.of(source="windows", path=str(folder))
    again_folder, again, freq = materialize(PipelineConfig(work_dir=str(tmp_path)), stored, None)
    assert again_folder == folder and len(again) == 3 and freq == "week"
    # Investigations write label times into the windows: into a copy, not the user's folder.
    copied, _, _ = materialize(PipelineConfig(work_dir=str(tmp_path / "w"),
                                              investigated_share=0.01), stored, None)
    assert copied != folder and list_windows(copied) == list_windows(folder)
    assert np.array_equal(again[1].interactions["user_id"].to_numpy(),
                          windows[1].interactions["user_id"].to_numpy())
    one = SyntheticShopConfig(n_users=20, n_items=12, n_windows=1, interactions_per_window=40,
                              transactions_per_window=10)
    with pytest.raises(PipelineStateError, match="source"):
        materialize(cfg, inc, one)
