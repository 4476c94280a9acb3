"""Online counters per model version, served at ``GET /metrics`` in Prometheus text format.

What the app answered, counted where the answer leaves it (``serving.api``), per replica of
the HTTP front (the split topology's Ingress, the fused topology's ShopStream), labelled by
the version that answered:

* ``shopstream_requests_total{route, version, status}``: answers (version ``none`` when no
  version answered: 4xx and 503s);
* ``shopstream_request_seconds{route, version}``: a latency histogram (the app's own time,
  as in the ``Server-Timing`` header);
* ``shopstream_recommend_strategy_total{version, strategy}`` and a histogram of the top
  item's score, ``shopstream_recommend_top_score{version}``;
* ``shopstream_fraud_decisions_total{version, decision}`` and a histogram of
  ``shopstream_fraud_probability{version}``.

Beside them, from each model replica's status, the canary it follows (see
:mod:`serving.canary`): ``shopstream_canary_fraction`` and, per count key,
``shopstream_canary_<key>_total`` (answers by the candidate and by latest, shadow
comparisons with their summed top-k overlap, decision agreement and probability gap).

Prometheus sums the replicas (``sum by (version)``); a rate of decisions per version is how
a new version's behaviour is watched online.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence

from serving.schemas import FraudListResponse, FraudResponse, RecommendResponse, ReplicaStatus

PREFIX = "shopstream"
LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                                      5.0)
PROBABILITY_BUCKETS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.99)
# Ranking scores are the model's logits (temperature-scaled cosines plus the ranking-time
# terms): wide, so the buckets are too.
SCORE_BUCKETS: tuple[float, ...] = (-10.0, 0.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0,
                                    1000.0)
Labels = tuple[tuple[str, str], ...]


class Histogram:
    """Cumulative-bucket histogram (Prometheus semantics) for one label set."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str, labels: Labels) -> list[str]:
        out, running = [], 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts):
            running += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f"{name}_bucket{_fmt((*labels, ('le', le)))} {running}")
        out.append(f"{name}_sum{_fmt(labels)} {self.total!r}")
        out.append(f"{name}_count{_fmt(labels)} {self.n}")
        return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _fmt(labels: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return f"{{{inner}}}" if inner else ""


class OnlineMetrics:
    """Thread-safe counters and histograms of one app replica."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, int]] = defaultdict(lambda: defaultdict(int))
        self._histograms: dict[str, dict[Labels, Histogram]] = defaultdict(dict)
        self._help: dict[str, tuple[str, str]] = {}

    def _count(self, name: str, help_text: str, labels: Labels) -> None:
        self._help.setdefault(name, ("counter", help_text))
        self._counters[name][labels] += 1

    def _observe(self, name: str, help_text: str, labels: Labels, value: float,
                 buckets: Sequence[float]) -> None:
        self._help.setdefault(name, ("histogram", help_text))
        found = self._histograms[name].setdefault(labels, Histogram(buckets))
        found.observe(value)

    def request(self, route: str, version: str | None, status: int, seconds: float) -> None:
        """One answer of ``route`` (any status)."""
        labels = (("route", route), ("version", version or "none"))
        with self._lock:
            self._count(f"{PREFIX}_requests_total", "answers by route, version and status",
                        (*labels, ("status", str(status))))
            self._observe(f"{PREFIX}_request_seconds", "time in the app per answer",
                          labels, seconds, LATENCY_BUCKETS)

    def recommended(self, answer: RecommendResponse) -> None:
        version = (("version", answer.model_version),)
        with self._lock:
            self._count(f"{PREFIX}_recommend_strategy_total", "recommendations by strategy",
                        (*version, ("strategy", answer.strategy)))
            if answer.items:
                self._observe(f"{PREFIX}_recommend_top_score", "score of the first item",
                              version, answer.items[0].score, SCORE_BUCKETS)

    def scored(self, answer: FraudResponse | FraudListResponse) -> None:
        results = answer.results if isinstance(answer, FraudListResponse) else [answer]
        version = (("version", answer.model_version),)
        with self._lock:
            for result in results:
                self._count(f"{PREFIX}_fraud_decisions_total", "fraud decisions",
                            (*version, ("decision", result.decision)))
                self._observe(f"{PREFIX}_fraud_probability", "served fraud probabilities",
                              version, result.fraud_probability, PROBABILITY_BUCKETS)

    def render(self) -> str:
        """Everything in the Prometheus text exposition format (version 0.0.4)."""
        lines: list[str] = []
        with self._lock:
            for name, (kind, help_text) in sorted(self._help.items()):
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
                if kind == "counter":
                    for labels, value in sorted(self._counters[name].items()):
                        lines.append(f"{name}{_fmt(labels)} {value}")
                else:
                    for labels, hist in sorted(self._histograms[name].items()):
                        lines += hist.lines(name, labels)
        return "\n".join(lines) + "\n"


def canary_lines(statuses: dict[str, ReplicaStatus]) -> list[str]:
    """The canaries the model replicas follow, as gauges and counters."""
    lines: list[str] = []
    for name, status in sorted(statuses.items()):
        canary = status.canary
        if not canary:
            continue
        labels = (("deployment", name), ("replica", status.replica),
                  ("version", str(canary.get("version"))), ("mode", str(canary.get("mode"))))
        lines.append(f"{PREFIX}_canary_fraction{_fmt(labels)} {float(canary['fraction'])!r}")
        for key, value in sorted((canary.get("counts") or {}).items()):
            lines.append(f"{PREFIX}_canary_{key}_total{_fmt(labels)} {float(value)!r}")
    return lines
