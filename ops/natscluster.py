"""A NATS cluster of several nodes on one host, each a `nats-server` started from the cluster
config that operators deploy (ops/deploy/nats-server.conf, passed in by path: it is not package
data), with its per-node values in the environment. For the HA tests and for trying a cluster out.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nats.js import JetStreamContext

from .natsserver import NatsServerError, NatsServerProcess
from .ports import free_ports

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NodeAddresses:
    client: int
    cluster: int
    monitor: int
    host: str = "127.0.0.1"

    @property
    def route_url(self) -> str:
        return f"nats-route://{self.host}:{self.cluster}"

    @property
    def client_url(self) -> str:
        return f"nats://{self.host}:{self.client}"

    @property
    def health_url(self) -> str:
        return f"http://{self.host}:{self.monitor}/healthz"


def node_environment(name: str, node: NodeAddresses, store_dir: Path, routes: list[str]) -> dict[str, str]:
    """The `$NAME`s ops/deploy/nats-server.conf leaves to the environment, for one node."""
    return {
        "NATS_SERVER_NAME": name,
        "NATS_CLIENT_LISTEN": f"{node.host}:{node.client}",
        "NATS_CLUSTER_LISTEN": f"{node.host}:{node.cluster}",
        "NATS_MONITOR_LISTEN": f"{node.host}:{node.monitor}",
        "NATS_STORE_DIR": str(store_dir),
        # nats-server reads a bracketed value of a variable as a list.
        "NATS_ROUTES": "[" + ", ".join(routes) + "]",
    }


def healthy(node: NodeAddresses, timeout: float = 2.0) -> bool:
    """nats-server's /healthz: 200 once the node runs and its JetStream is current with the meta
    group and every stream and consumer it holds a replica of (a restarted node has caught up)."""
    try:
        with urllib.request.urlopen(node.health_url, timeout=timeout) as response:  # noqa: S310 - loopback http
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


class NatsCluster:
    """`size` nodes named `<prefix>1`…, each with its own store under `base_dir`, on free ports of
    `host`; `kill`/`restart` one node keep its ports and store, as a crash and a reboot would."""

    def __init__(
        self,
        base_dir: Path,
        config_file: Path,
        size: int = 3,
        host: str = "127.0.0.1",
        prefix: str = "hw-",
        environment: Mapping[str, str] | None = None,
    ) -> None:
        """`environment`: the values every node shares (the TLS files and the users' passwords)."""
        ports = iter(free_ports(3 * size, host))
        self.addresses = {
            f"{prefix}{n + 1}": NodeAddresses(next(ports), next(ports), next(ports), host)
            for n in range(size)
        }
        routes = [a.route_url for a in self.addresses.values()]
        self.nodes = {
            name: NatsServerProcess(
                base_dir / name,
                config_file=config_file,
                environment={
                    **(environment or {}),
                    **node_environment(name, addresses, base_dir / name / "store", routes),
                },
            )
            for name, addresses in self.addresses.items()
        }

    @property
    def names(self) -> list[str]:
        return list(self.nodes)

    @property
    def urls(self) -> str:
        """Every node's client URL, comma-separated, as `--nats-url` takes them."""
        return ",".join(a.client_url for a in self.addresses.values())

    def start(self, timeout: float = 60.0) -> str:
        """Start every node, then wait until each is healthy (a lone node is not: it has no meta
        leader until a majority runs). Returns `urls`."""
        try:
            for node in self.nodes.values():
                node.start()
            for name in self.nodes:
                self.wait_healthy(name, timeout)
        except BaseException:
            self.stop()
            raise
        return self.urls

    def wait_healthy(self, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not healthy(self.addresses[name]):
            if time.monotonic() > deadline:
                raise NatsServerError(
                    f"NATS node {name} not healthy within {timeout:.0f}s; see {self.nodes[name].log_file}"
                )
            time.sleep(0.2)

    def kill(self, name: str) -> None:
        """SIGKILL one node, as a crash would."""
        log.info("killing NATS node %s", name)
        self.nodes[name].kill()

    def restart(self, name: str, timeout: float = 60.0) -> None:
        """Start a stopped (or killed) node again and wait until it has caught up."""
        log.info("restarting NATS node %s", name)
        node = self.nodes[name]
        node.stop()
        node.start()
        self.wait_healthy(name, timeout)

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()


async def stream_leader(js: JetStreamContext, stream: str) -> str:
    """The `server_name` of the node that leads `stream` now."""
    info = await js.stream_info(stream)
    leader = info.cluster.leader if info.cluster is not None else None
    if not leader:
        raise NatsServerError(f"stream {stream} has no leader right now")
    return leader
