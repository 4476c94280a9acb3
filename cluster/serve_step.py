"""The pipeline's last step: start (or update) the Serve app on the store, query it over HTTP.

``serve.run`` with the app's name deploys it, or updates a running one in place (a
persistent cluster under ``ray job submit``); its replicas follow the store's ``latest``
on their own, so the step only waits until every model deployment reports the last
published version, then sends one recommendation and one fraud query.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import urllib.error
import urllib.request
from typing import Any

import pandas as pd

from serving.config import TOKEN_ENV, AppArgs, ServeConfig
from training.data.schema import WindowData

logger = logging.getLogger(__name__)

APP_NAME = "shopstream"
# The step serves on this host only (a cluster user reaches it through `ray job submit`'s
# head node or serves with `python -m serving.app --host 0.0.0.0`).
SERVE_HOST = "127.0.0.1"


class ServeStepError(RuntimeError):
    """Serve did not come up with the expected version in time; the message says why."""


def start_serve(store: str, endpoint_url: str | None, port: int) -> str:
    """Deploy (or update) the app on the connected Ray; returns its base URL."""
    from ray import serve

    from serving.app import build_app

    serve.start(http_options={"host": SERVE_HOST, "port": port})
    config = ServeConfig(store=store, endpoint_url=endpoint_url, poll_interval_s=0.5)
    serve.run(build_app(AppArgs(config)), name=APP_NAME, route_prefix="/", blocking=False)
    return f"http://{SERVE_HOST}:{port}"


def _headers() -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    token = os.environ.get(TOKEN_ENV)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def http_json(url: str, body: dict[str, Any] | None = None, timeout: float = 30.0
              ) -> tuple[int, Any]:
    """(status, parsed JSON body) of a GET (no body) or POST; HTTP errors are returned."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=_headers(),
                                     method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw or b"null")
        except ValueError:
            return err.code, raw.decode(errors="replace")


def served_versions(base: str) -> dict[str, str | None]:
    """{deployment: version} from GET /version ({} while the app is not answering)."""
    try:
        status, body = http_json(f"{base}/version", timeout=5.0)
    except (urllib.error.URLError, OSError, ValueError):
        return {}
    if status != 200 or not isinstance(body, dict):
        return {}
    return {name: row.get("version") for name, row in body.get("deployments", {}).items()}


def wait_for_version(base: str, version: str, timeout_s: float) -> dict[str, str | None]:
    """Block until every model deployment serves ``version``."""
    deadline = time.monotonic() + timeout_s
    seen: dict[str, str | None] = {}
    while time.monotonic() < deadline:
        seen = served_versions(base)
        if seen and all(v == version for v in seen.values()):
            return seen
        time.sleep(0.5)
    raise ServeStepError(f"serve_timeout_s: after {timeout_s:.0f} s Serve at {base} serves "
                         f"{seen or 'nothing'}, not the last published version {version}")


def sample_requests(window: WindowData, known_users: set[str]) -> dict[str, dict[str, Any]]:
    """One recommendation request (a returning user if any) and one fraud request."""
    out: dict[str, dict[str, Any]] = {}
    users = [str(u) for u in window.interactions["user_id"].dropna().unique()]
    if users:
        warm = [u for u in users if u in known_users]
        out["/recommend"] = {"user_id": (warm or users)[0], "k": 5}
    txns = window.transactions
    if len(txns):
        row = txns.iloc[0]
        features = {c: float(row[c]) for c in window.fraud_features
                    if pd.notna(row[c]) and math.isfinite(float(row[c]))}
        body: dict[str, Any] = {"amount": float(row["amount"]), "features": features,
                                "txn_id": str(row["txn_id"])}
        if pd.notna(row.get("user_id")):
            body["user_id"] = str(row["user_id"])
        out["/fraud"] = body
    return out


def query(base: str, requests: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    answers = []
    for path, body in requests.items():
        status, answer = http_json(f"{base}{path}", body)
        logger.info("POST %s %s -> %d %s", path, body, status, answer)
        answers.append({"endpoint": path, "request": body, "status": status, "body": answer})
    return answers


def curl_lines(base: str, requests: dict[str, dict[str, Any]]) -> list[str]:
    auth = f" -H 'Authorization: Bearer ${TOKEN_ENV}'" if os.environ.get(TOKEN_ENV) else ""
    lines = [f"curl -s {base}/version{auth}"]
    for path, body in requests.items():
        lines.append(f"curl -s -X POST {base}{path} -H 'Content-Type: application/json'{auth} "
                     f"-d '{json.dumps(body)}'")
    return lines


def serve_and_query(store: str, endpoint_url: str | None, port: int, version: str,
                    window: WindowData, known_users: set[str], timeout_s: float
                    ) -> dict[str, Any]:
    """Start/update Serve, wait for ``version``, query both endpoints; the report's entry."""
    base = start_serve(store, endpoint_url, port)
    served = wait_for_version(base, version, timeout_s)
    requests = sample_requests(window, known_users)
    answers = query(base, requests)
    versions = set(served.values())
    return {"url": base, "version": versions.pop() if len(versions) == 1 else None,
            "deployments": served, "last_published": version, "queries": answers,
            "curl": curl_lines(base, requests)}
