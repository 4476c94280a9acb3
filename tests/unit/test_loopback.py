"""serving.loopback: the HAProxy config rewrite, the wrapper that applies it on every start
and reload, and the replica gRPC bind. (With a real Serve: test_serve.py's
test_every_listener_stays_on_loopback.)"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from serving import loopback
from serving.loopback import (
    HAPROXY_BINARY_ENV,
    LOOPBACK_SUFFIX,
    haproxy_env,
    keep_replica_grpc_on_loopback,
    loopback_config,
    wrapped_args,
)

CONFIG = """global
    stats socket /tmp/x/admin.sock mode 666 level admin
frontend prometheus
    bind :9101
    http-request use-service prometheus-exporter if { path /metrics }
frontend http_frontend
    bind 127.0.0.1:8000
frontend grpc_frontend
    bind *:9000 proto h2
backend b
    server s1 10.0.0.5:30001 check
listen stats
  bind *:8404
  bind 0.0.0.0:8405
  bind [::]:8406 v4v6
  bind :::8407
  stats uri /stats
"""


def test_wildcard_binds_move_to_loopback_and_nothing_else_changes() -> None:
    out = loopback_config(CONFIG).splitlines()
    binds = [line.strip() for line in out if line.strip().startswith("bind")]
    assert binds == ["bind 127.0.0.1:9101", "bind 127.0.0.1:8000",
                     "bind 127.0.0.1:9000 proto h2", "bind 127.0.0.1:8404",
                     "bind 127.0.0.1:8405", "bind 127.0.0.1:8406 v4v6",
                     "bind 127.0.0.1:8407"]
    others = [line for line in CONFIG.splitlines() if not line.strip().startswith("bind")]
    assert [line for line in out if not line.strip().startswith("bind")] == others
    assert loopback_config("    bind 10.1.2.3:8000\n") == "    bind 10.1.2.3:8000\n"


def test_every_wildcard_bind_of_rays_template_is_rewritten() -> None:
    """Ray's own config template (a Ray upgrade that adds a bind form fails here): with the
    hosts rendered as Ray renders 0.0.0.0 (`*`), every bind line ends on 127.0.0.1."""
    from ray.serve._private.haproxy_templates import HAPROXY_CONFIG_TEMPLATE

    lines = [line for line in HAPROXY_CONFIG_TEMPLATE.splitlines()
             if line.strip().startswith("bind ")]
    assert len(lines) >= 3  # the exporter, the HTTP frontend, the stats page
    rendered = "\n".join(re.sub(r"\{\{[^}]*\}\}", "8404",
                                re.sub(r"\{\{\s*config\.\w*host\s*\}\}", "*", line))
                         for line in lines)
    assert all(line.strip().startswith("bind 127.0.0.1:8404")
               for line in loopback_config(rendered).splitlines()), rendered


def test_wrapped_args_point_haproxy_at_a_loopback_copy(tmp_path: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text(CONFIG)
    args = ["-db", "-f", str(config), "-sf", "123", "456"]
    out = wrapped_args(args)
    copy = Path(str(config) + LOOPBACK_SUFFIX)
    assert out == ["-db", "-f", str(copy), "-sf", "123", "456"]
    assert copy.read_text() == loopback_config(CONFIG)
    assert config.read_text() == CONFIG  # Serve's own file is left as written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["haproxy.cfg", copy.name]
    assert wrapped_args(["-v"]) == ["-v"]


@pytest.fixture
def fake_haproxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in binary that prints its pid, its arguments and the config it was given."""
    fake = tmp_path / "fake haproxy"
    fake.write_text('#!/bin/sh\necho "pid $$"\necho "args $*"\n'
                    'while [ "$#" -gt 0 ]; do [ "$1" = -f ] && cat "$2"; shift; done\n')
    fake.chmod(0o755)
    monkeypatch.setenv(HAPROXY_BINARY_ENV, str(fake))
    monkeypatch.setattr(loopback.tempfile, "gettempdir", lambda: str(tmp_path))
    return fake


def test_the_wrapper_execs_the_configured_binary_on_the_copy(
        fake_haproxy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = haproxy_env("127.0.0.1")
    wrapper = Path(env[HAPROXY_BINARY_ENV])
    assert os.access(wrapper, os.X_OK) and wrapper.parent.stat().st_mode & 0o777 == 0o700
    config = tmp_path / "haproxy.cfg"
    config.write_text(CONFIG)
    proc = subprocess.Popen([str(wrapper), "-db", "-f", str(config), "-sf", "77"],
                            stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    # exec, not a child: Serve signals (-sf) and watches HAProxy by the pid it started.
    assert out.splitlines()[0] == f"pid {proc.pid}"
    assert out.splitlines()[1] == f"args -db -f {config}{LOOPBACK_SUFFIX} -sf 77"
    assert "\n".join(out.splitlines()[2:]) + "\n" == loopback_config(CONFIG)
    # Installed again with the wrapper as the configured binary: it wraps the same binary.
    monkeypatch.setenv(HAPROXY_BINARY_ENV, str(wrapper))
    assert haproxy_env("localhost") == env


def test_a_wrapper_that_cannot_run_is_not_installed(
        fake_haproxy: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Serve would fail to start HAProxy at all: the wildcard ports are the lesser harm."""
    fake_haproxy.write_text("#!/bin/sh\nexit 3\n")
    assert haproxy_env("127.0.0.1") == {}
    assert "does not run" in caplog.text


def test_a_wrapper_folder_others_can_write_is_refused(
        fake_haproxy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """In a shared temp folder another user may have made the folder first."""
    folder = tmp_path / f"shopstream-{os.getuid()}"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    assert haproxy_env("127.0.0.1") == {}
    assert "not a folder of this user's alone" in caplog.text
    assert list(folder.iterdir()) == []  # nothing written into it


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "::"])
def test_no_wrapper_when_serve_listens_beyond_this_host(fake_haproxy: Path,
                                                        host: str) -> None:
    assert haproxy_env(host) == {}


@pytest.fixture
def replica_bind(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Serve's replica module with its gRPC bind replaced by a recorder."""
    import ray.serve._private.replica as replica_module

    calls: list[str] = []

    def record(server: Any, address: str) -> int:
        calls.append(address)
        return 1234

    monkeypatch.setattr(replica_module, "add_port_to_grpc_server", record)
    return calls


def test_a_loopback_replica_binds_its_grpc_server_to_127_0_0_1(
        replica_bind: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import ray
    import ray.serve._private.replica as replica_module

    monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: "127.0.0.1")
    assert keep_replica_grpc_on_loopback() and keep_replica_grpc_on_loopback()  # idempotent
    assert replica_module.add_port_to_grpc_server(None, "[::]:0") == 1234
    assert replica_module.add_port_to_grpc_server(None, "10.0.0.5:0") == 1234
    assert replica_bind == ["127.0.0.1:0", "10.0.0.5:0"]  # wrapped once, not twice


def test_a_cluster_replica_keeps_serves_bind(replica_bind: list[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import ray
    import ray.serve._private.replica as replica_module

    monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: "10.0.0.5")
    assert not keep_replica_grpc_on_loopback()
    replica_module.add_port_to_grpc_server(None, "[::]:0")
    assert replica_bind == ["[::]:0"]
