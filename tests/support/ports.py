"""Free loopback ports for the servers tests and benchmarks start."""

from __future__ import annotations

import socket


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 now (held together while chosen)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port() -> int:
    (port,) = free_ports(1)
    return port


def haproxy_port_env() -> dict[str, str]:
    """Own ports for Serve's HAProxy stats page and Prometheus exporter (Ray's defaults,
    8404 and 9101, are fixed): a second Ray with Serve on the same host (a benchmark beside
    the test suite, two CI jobs) would otherwise fail to start HAProxy. Ray binds both on
    every interface; only the port can be chosen."""
    stats, metrics = free_ports(2)
    return {"RAY_SERVE_HAPROXY_STATS_PORT": str(stats),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics)}
