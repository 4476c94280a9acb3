"""benchmarks/serve_load.py's bookkeeping: Server-Timing parsing, the per-hop medians and the
phase summary, on constructed answers."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from tests.support.scripts import load_script

pytestmark = pytest.mark.unit


def test_server_timing_headers_of_app_and_route_are_read_together() -> None:
    load = load_script("serve_load")
    assert load.server_timing("app;dur=1.5, model;dur=0.25") == {"app": 1.5, "model": 0.25}
    assert load.server_timing(None) == {} and load.server_timing("app") == {}
    assert load.origin_and_prefix("http://127.0.0.1:8000/split/") == (
        "http://127.0.0.1:8000", "/split")


def test_summary_gives_rate_percentiles_and_hops() -> None:
    load = load_script("serve_load")
    latencies = [0.010, 0.020, 0.030, 0.040]
    timings = [{"app": 8.0, "model": 5.0}] * 4
    out = load.summary(latencies, errors=1, seconds=2.0, timings=timings)
    assert (out["requests"], out["errors"], out["rps"]) == (4, 1, 2.0)
    assert out["p50_ms"] == pytest.approx(25.0)
    assert out["p99_ms"] == pytest.approx(float(np.percentile([10, 20, 30, 40], 99)), abs=0.01)
    # Client total 25 ms median: 17 in the proxy and network, 3 in the app, 5 in the model.
    assert out["hops_ms"] == {"client_total": 25.0, "proxy_and_network": 17.0,
                              "app_outside_model": 3.0, "model_call": 5.0}
    assert load.summary([], 0, 0.0)["rps"] is None


def test_overload_verdict_takes_the_worse_endpoint_and_counts_other_answers() -> None:
    latency = load_script("serve_latency")

    def phase(p99_200: float, p99_503: float | None, extra: dict[str, int],
              failures: int) -> dict[str, object]:
        by_status: dict[str, object] = {"200": {"requests": 90, "p99_ms": p99_200}}
        if p99_503 is not None:
            by_status["503"] = {"requests": 10, "p99_ms": p99_503}
        by_status |= {code: {"requests": n, "p99_ms": 1.0} for code, n in extra.items()}
        return {"clients": 200, "connection_failures": failures, "by_status": by_status}

    app = {"/recommend": {"overload": phase(900.0, 40.0, {}, 0)},
           "/fraud": {"overload": phase(300.0, 120.0, {"500": 2}, 1)}}
    assert latency.overload_p99(app) == {"200": 900.0, "503": 120.0, "other": 3.0}
    app["/fraud"]["overload"] = phase(300.0, None, {}, 0)
    assert latency.overload_p99(app) == {"200": 900.0, "503": 40.0, "other": 0.0}
    assert latency.overload_p99({"/recommend": {}, "/fraud": {}}) is None


def test_closed_loop_bodies_are_drawn_and_encoded_before_the_clock() -> None:
    load = load_script("serve_load")
    bodies = load.encoded_bodies(load.fraud_payload(10, 20), 3, 4)
    assert len(bodies) == 4 and all(isinstance(b, bytes) for b in bodies)
    decoded = [json.loads(b) for b in bodies]
    assert {"txn_id", "user_id", "item_id", "amount", "features"} <= set(decoded[0])
    assert len({d["txn_id"] for d in decoded}) == 4  # distinct bodies, reused in turn
    # A client's bodies depend on its seed only, so runs and apps get the same load.
    assert load.encoded_bodies(load.fraud_payload(10, 20), 3, 4) == bodies
    assert load.encoded_bodies(load.fraud_payload(10, 20), 4, 4) != bodies


def test_freshness_is_judged_on_the_worst_of_the_repeats(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    latency = load_script("serve_latency")
    times = iter([1.2, 2.5, 0.9, 1.0,  # run 1: same (split, fused), new (split, fused)
                  1.4, 1.1, 1.3, 0.8,
                  1.3, 1.6, 0.7, 3.0])
    calls: list[str] = []

    def fake(url: str, publish_next: object, timeout_s: float) -> dict[str, object]:
        calls.append(url)
        s = next(times)
        return {"version": "v", "seconds": {"/recommend": s, "/fraud": s + 0.1},
                "timed_out": False}

    monkeypatch.setattr(latency, "freshness", fake)
    args = latency.build_parser().parse_args(["--freshness-repeats", "3"])
    publisher = types.SimpleNamespace(next=lambda app, retrain: "v")
    out = latency.freshness_runs({"split": "S", "fused": "F"}, publisher, args)
    assert calls == ["S", "F"] * 6  # apps and cases interleaved in every repeat
    assert out["same_text_tower"]["fused"]["seconds"] == {"/recommend": 2.5, "/fraud": 2.6}
    assert out["same_text_tower"]["fused"]["median_s"]["/recommend"] == pytest.approx(1.6)
    assert out["new_text_tower"]["fused"]["seconds"]["/recommend"] == 3.0
    assert out["new_text_tower"]["split"]["median_s"]["/fraud"] == pytest.approx(1.0)
    assert len(out["new_text_tower"]["split"]["runs"]) == 3
    assert not out["same_text_tower"]["split"]["timed_out"]
