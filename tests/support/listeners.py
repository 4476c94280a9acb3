"""The TCP ports a set of processes listens on, read from Linux's /proc (no psutil here)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
LISTEN_STATE = "0A"


@dataclass(frozen=True)
class Listener:
    pid: int
    name: str  # the process's comm, e.g. "haproxy" or "ray::ServeRepli"
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        address = ipaddress.ip_address(self.host)
        mapped = getattr(address, "ipv4_mapped", None)
        return bool((mapped or address).is_loopback)


def _address(hex_address: str) -> tuple[str, int]:
    host_hex, port_hex = hex_address.split(":")
    raw = bytes.fromhex(host_hex)
    # /proc/net/tcp{,6} print each 32-bit word of the address in host (little-endian) order.
    host = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(host)), int(port_hex, 16)


def listening_sockets() -> dict[int, tuple[str, int]]:
    """Socket inode -> (host, port) of every listening TCP socket in this network namespace."""
    found: dict[int, tuple[str, int]] = {}
    for table in ("tcp", "tcp6"):
        path = PROC / "net" / table
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == LISTEN_STATE:
                found[int(fields[9])] = _address(fields[1])
    return found


def _link(fd: Path) -> str:
    try:
        return str(fd.readlink())
    except OSError:  # closed while we looked
        return ""


def listeners(pids: set[int]) -> list[Listener]:
    """Every listening TCP socket that one of ``pids`` holds open."""
    sockets = listening_sockets()
    found: list[Listener] = []
    for pid in sorted(pids):
        try:
            name = (PROC / str(pid) / "comm").read_text().strip()
            fds = list((PROC / str(pid) / "fd").iterdir())
        except OSError:  # ended, or not ours to read
            continue
        inodes = {int(link[8:-1]) for link in map(_link, fds) if link.startswith("socket:[")}
        found += [Listener(pid, name, *sockets[i]) for i in sorted(inodes & sockets.keys())]
    return found
