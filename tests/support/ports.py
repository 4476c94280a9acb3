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


HAPROXY_PORT_SETTINGS: tuple[str, ...] = ("RAY_SERVE_HAPROXY_STATS_PORT",
                                          "RAY_SERVE_HAPROXY_METRICS_PORT")


def haproxy_port_env() -> dict[str, str]:
    """Own ports for Serve's HAProxy stats page and Prometheus exporter (Ray's defaults,
    8404 and 9101, are fixed): a second Ray with Serve on the same host (a benchmark beside
    the test suite, two CI jobs) would otherwise fail to start HAProxy. Ray binds both on
    every interface; serving.loopback.haproxy_env moves them to 127.0.0.1."""
    return dict(zip(HAPROXY_PORT_SETTINGS, map(str, free_ports(2))))
