"""Free ports for restartable servers (ops/ports.py) and NATS started on one, on a real nats-server."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from headwater.ops import natsserver
from headwater.ops.natsserver import NatsServerProcess
from headwater.ops.ports import free_ports


def _ephemeral_start() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    ports = free_ports(20)
    assert len(set(ports)) == 20
    assert all(10_000 <= port < _ephemeral_start() for port in ports), ports
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServerProcess]:
    process = NatsServerProcess(tmp_path / "nats", port=0)
    yield process
    process.stop()


def test_nats_on_port_zero_restarts_on_its_port_which_no_outgoing_connection_can_take(
    server: NatsServerProcess,
) -> None:
    server.start()
    port = server.port
    assert port < _ephemeral_start()
    server.stop()  # while it is down, outgoing connections draw their ports from above it
    assert server.start() == f"nats://127.0.0.1:{port}"


def test_a_port_taken_between_the_pick_and_the_start_is_picked_again(
    server: NatsServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = int(holder.getsockname()[1])
        picks = iter([[taken], free_ports(1)])
        monkeypatch.setattr(natsserver, "free_ports", lambda count, host: next(picks))
        url = server.start()
    assert server.port != taken and url == f"nats://127.0.0.1:{server.port}"
