"""Free ports for servers that may be restarted on the port they had.

A port the kernel hands out with `bind(port 0)` lies in its ephemeral range, the range it also
draws the local ports of outgoing connections from. While a server is down, any outgoing
connection (a client retrying that very server included) can take its port, and the restart
then fails with "address already in use". Ports below the ephemeral range are never handed out
that way, so a server restarted there finds its port free.
"""

from __future__ import annotations

import contextlib
import random
import socket
from pathlib import Path

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10_000  # above the ports services are commonly configured on
_ATTEMPTS = 200


def _ephemeral_start() -> int | None:
    try:
        low, _high = (int(part) for part in _EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        return None
    return low if low > _LOWEST + 1000 else None


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports free right now (all held at once, so none is handed out twice),
    below the kernel's ephemeral range where it has one that leaves room, else any free ones."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    ceiling = _ephemeral_start()
    with contextlib.ExitStack() as stack:
        held: list[int] = []
        attempts = 0
        while len(held) < count:
            sock = stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
            if ceiling is None or attempts >= _ATTEMPTS:
                sock.bind((host, 0))
            else:
                attempts += 1
                try:
                    sock.bind((host, random.randrange(_LOWEST, ceiling)))  # noqa: S311 (not a secret)
                except OSError:
                    continue
            held.append(int(sock.getsockname()[1]))
        return held
