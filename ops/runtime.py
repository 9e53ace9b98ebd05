"""Runs headwater roles inside one event loop: the edge and control HTTP apps under uvicorn (under
hypercorn when they serve HTTPS), the consumer as a task. `up` runs all three; `serve ROLE` runs
one; the tests run any of them."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import socket
import time
from collections.abc import Awaitable, Generator
from dataclasses import asdict, dataclass
from typing import Protocol

import uvicorn
from clickhouse_connect.driver.client import Client
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from headwater.consumers.app import create_app as create_consumer_app
from headwater.consumers.leftovers import leftover
from headwater.consumers.processing import Processor, start_processor
from headwater.consumers.runner import EventConsumer
from headwater.consumers.settings import ConsumerSettings
from headwater.consumers.writer import ClickHouseWriter
from headwater.control.app import create_app as create_control_app
from headwater.control.audit import AuditLog, ensure_audit_stream
from headwater.control.clickhouse import connect as connect_clickhouse
from headwater.control.http import Readiness
from headwater.control.idempotency import IdempotencyStore, ensure_idempotency_bucket
from headwater.control.migrations import apply_migrations
from headwater.control.project_settings import Batching, ProjectSettings
from headwater.control.query import ReadOnlyQueries
from headwater.control.registry import ProjectRegistry
from headwater.control.service import ProjectService
from headwater.control.settings import ControlSettings
from headwater.control.store import BucketSettings, ProjectStore, ensure_projects_bucket
from headwater.edge.app import create_app as create_edge_app
from headwater.edge.asgi import ASGIApp
from headwater.edge.drainer import Drainer
from headwater.edge.fallback import CircuitBreaker, FallbackSink
from headwater.edge.metrics import EdgeMetrics
from headwater.edge.settings import EdgeSettings
from headwater.edge.sink import JetStreamSink, Sink
from headwater.edge.streams import StreamSettings, ensure_streams, purge_project_messages
from headwater.edge.subjects import EVENTS_STREAM
from headwater.spool import Spool, SpoolConfig

from .loop import StackFailure
from .natsconn import ConnectionEvents, connect_nats
from .tlsserver import TLSServer, server_context

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StackSettings:
    """Which roles to run, and against which NATS and ClickHouse."""

    nats_url: str
    streams: StreamSettings
    edge: EdgeSettings | None = None
    control: ControlSettings | None = None
    consumer: ConsumerSettings | None = None
    clickhouse_url: str | None = None


async def _logged(what: str, awaitable: Awaitable[object]) -> None:
    try:
        await awaitable
    except Exception:
        log.warning("stopping %s failed", what, exc_info=True)


class _HTTPServer(Protocol):
    """What the stack needs of a server: uvicorn's, and the TLS one shaped like it."""

    started: bool
    should_exit: bool

    async def serve(self, sockets: list[socket.socket]) -> None: ...


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the stack handles signals for all roles."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class PortInUse(StackFailure):
    """A role's port is taken: said with the flag that changes it, not as a traceback."""

    def __init__(self, role: str, host: str, port: int) -> None:
        super().__init__(
            f"the {role} cannot listen on {host}:{port}: the port is already in use; choose another "
            f"with --{role}-port under `headwater up` or --port under `headwater serve {role}` "
            "(0 picks a free one), or stop what holds it"
        )


def bind(host: str, port: int, reuse_port: bool = False, role: str = "server") -> socket.socket:
    """Bind before serving so a taken port fails start-up at once, and port 0 gives a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(role, host, port) from None
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, scheme: str = "http") -> str:
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}"


def _tls_files(cert: str | None, key: str | None) -> tuple[str, str] | None:
    return None if cert is None or key is None else (cert, key)


class Stack:
    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.nats: NatsClient | None = None
        self.clickhouse: Client | None = None
        self.registry: ProjectRegistry | None = None
        self.store: ProjectStore | None = None
        self.service: ProjectService | None = None
        self.queries: ReadOnlyQueries | None = None
        self.consumer: EventConsumer | None = None
        self.processor: Processor | None = None
        self.spool: Spool | None = None
        self.breaker: CircuitBreaker | None = None
        self.drainer: Drainer | None = None
        self.edge_url: str | None = None
        self.consumer_url: str | None = None
        self.control_url: str | None = None
        self.draining = False  # stopping after a shutdown delay: the edge reports not ready
        self._servers: list[tuple[str, asyncio.Task[None]]] = []
        self._http_servers: list[_HTTPServer] = []
        self._sockets: list[socket.socket] = []

    async def start(self) -> None:
        s = self.settings
        self.connection_events = ConnectionEvents()
        self.nats = await connect_nats(s.nats_url, "headwater", self.connection_events)
        js = self.nats.jetstream()
        await ensure_streams(js, s.streams)
        kv = await ensure_projects_bucket(js, BucketSettings(replicas=s.streams.replicas))
        await ensure_audit_stream(js, s.streams.replicas)
        self.store = ProjectStore(kv)
        if s.clickhouse_url is not None and (s.control is not None or s.consumer is not None):
            self.clickhouse = await asyncio.to_thread(connect_clickhouse, s.clickhouse_url)

        if s.edge is not None or s.consumer is not None:
            # Edges resolve keys and origins from it; consumers take each project's batching span.
            self.registry = ProjectRegistry(kv)
            await self.registry.start()
            self.connection_events.subscribe(self.registry)

        if s.edge is not None:
            assert self.registry is not None
            metrics = EdgeMetrics()
            sink = await self._edge_sink(js, s.edge, metrics)
            edge_app = create_edge_app(s.edge, sink, self.registry, self._edge_readiness, metrics)
            tls = _tls_files(s.edge.tls_cert, s.edge.tls_key)
            self.edge_url = await self._serve(
                edge_app, s.edge.host, s.edge.port, "edge", s.edge.reuse_port, tls
            )

        if s.control is not None:
            assert self.clickhouse is not None, "the control plane needs a ClickHouse URL"
            await self._migrate_projects(s.control.clickhouse_cluster)
            idempotency = IdempotencyStore(await ensure_idempotency_bucket(js, s.streams.replicas))

            async def purge_messages(project_id: str) -> int:
                return await purge_project_messages(js, project_id)

            self.service = ProjectService(
                self.store,
                self.clickhouse,
                AuditLog(js),
                idempotency,
                purge_messages,
                s.control.clickhouse_cluster,
            )
            self.queries = ReadOnlyQueries(
                s.control.clickhouse_url, s.control.query_max_rows, s.control.query_timeout_seconds
            )
            control_app = create_control_app(
                s.control, self.store, self.service, self.queries, self._nats_readiness
            )
            tls = _tls_files(s.control.tls_cert, s.control.tls_key)
            self.control_url = await self._serve(
                control_app, s.control.host, s.control.port, "control", tls=tls
            )

        if s.consumer is not None:
            assert self.clickhouse is not None, "the consumer needs a ClickHouse URL"
            writer = ClickHouseWriter(self.clickhouse)
            self.processor = start_processor(s.consumer)
            await self.processor.warm_up()
            self.consumer = EventConsumer(
                self.nats, writer, s.consumer, self.processor, self._project_settings,
                leftover_of=self._leftover,
            )  # fmt: skip
            self.connection_events.subscribe(self.consumer)
            await self.consumer.start()
            if s.consumer.port is not None:
                app = create_consumer_app(self.consumer.metrics, self._consumer_readiness)
                self.consumer_url = await self._serve(app, s.consumer.host, s.consumer.port, "consumer")
        # Everything long-lived exists now: keep it out of the garbage collector's scans (a batch
        # request spent ~8% of its CPU in GC before, measured with py-spy).
        gc.collect()
        gc.freeze()

    async def _edge_sink(self, js: JetStreamContext, settings: EdgeSettings, metrics: EdgeMetrics) -> Sink:
        """JetStream, falling back to the disk spool (when one is configured) behind a breaker."""
        assert self.nats is not None
        direct = JetStreamSink(self.nats, settings.publish_timeout_seconds)
        if settings.spool_dir is None:
            metrics.watch(lambda: {"breaker_open": False})
            return direct
        self.spool = await Spool(settings.spool_dir, SpoolConfig(max_bytes=settings.spool_max_bytes)).open()

        async def probe() -> None:
            await js.stream_info(EVENTS_STREAM)

        self.breaker = breaker = CircuitBreaker(probe)
        self.connection_events.subscribe(breaker)
        if not self._nats_connected():
            breaker.trip("NATS is not connected")
        spool = self.spool
        metrics.watch(lambda: {"breaker_open": breaker.is_open, "spool": spool.stats()})
        self.drainer = Drainer(spool, js, breaker, metrics)
        self.drainer.start()
        return FallbackSink(direct, spool, breaker, metrics)

    async def _migrate_projects(self, cluster: str | None) -> None:
        """Bring every project's database to the newest schema (idempotent; a new headwater version
        may bring migrations). A failure is logged and left for `headwater migrate` to retry."""
        assert self.store is not None and self.clickhouse is not None
        for project_id in await self.store.ids():
            try:
                applied = await asyncio.to_thread(
                    apply_migrations, self.clickhouse, f"hw_{project_id}", cluster
                )
            except Exception:
                log.exception(
                    "migrating project %s failed; run `headwater migrate` once it is fixed", project_id
                )
                continue
            if applied:
                log.info("project %s: applied migrations %s", project_id, applied)

    def failed(self) -> str | None:
        """A description of the first role that died, if one did."""
        for role, task in self._servers:
            if task.done():
                return f"the {role} HTTP server stopped"
        if self.registry is not None and self.registry.failure is not None:
            return f"project registry failed: {self.registry.failure!r}"
        if self.drainer is not None and self.drainer.failure is not None:
            return f"spool drainer failed: {self.drainer.failure!r}"
        if self.consumer is not None and self.consumer.failure is not None:
            return f"consumer failed: {self.consumer.failure!r}"
        return None

    async def stop(self) -> None:
        """Stop accepting, finish requests in flight, flush and ack, then close connections.
        Each step runs even when an earlier one failed; failures are logged. An edge with a
        shutdown delay first serves on for that long, reporting not ready (draining)."""
        delay = self.settings.edge.shutdown_delay_seconds if self.settings.edge is not None else 0
        if delay > 0 and self._http_servers and not self.draining:
            self.draining = True
            log.info("draining: /readyz answers 503 for %.1f s before the edge stops accepting", delay)
            await asyncio.sleep(delay)
        for server in self._http_servers:
            server.should_exit = True
        for _, task in self._servers:
            await _logged("HTTP server", task)
        self._servers.clear()
        self._http_servers.clear()
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        if self.drainer is not None:
            await _logged("spool drainer", self.drainer.stop())
        if self.breaker is not None:
            await _logged("circuit breaker", self.breaker.stop())
        if self.spool is not None:
            await _logged("spool", self.spool.close())
        if self.consumer is not None:
            await _logged("consumer", self.consumer.stop())
        if self.processor is not None:
            await _logged("consumer workers", self.processor.close())
        if self.registry is not None:
            await _logged("project registry", self.registry.stop())
        if self.nats is not None and not self.nats.is_closed:
            # Flush what is still buffered (the consumer's last acks), then close.
            await _logged("NATS flush", self.nats.flush(timeout=5))
            await _logged("NATS close", self.nats.close())
        if self.queries is not None:
            self.queries.close()
        if self.clickhouse is not None:
            self.clickhouse.close()

    def _project_settings(self, project_id: str) -> ProjectSettings:
        """A project's live settings; for one not known (yet), the defaults with the consumer's
        own batching span."""
        assert self.registry is not None and self.settings.consumer is not None
        project = self.registry.get(project_id)
        if project is not None:
            return project.settings
        return ProjectSettings(batching=Batching(self.settings.consumer.flush_interval_seconds))

    def _leftover(self, project_id: str, received_at: float | None) -> str | None:
        assert self.registry is not None
        return leftover(self.registry, project_id, received_at)

    def _consumer_readiness(self) -> Readiness:
        """Ready while connected and consuming; a ClickHouse outage is reported with its length
        (the consumer holds its batch and retries; nothing is lost)."""
        assert self.consumer is not None
        retrying = self.consumer.retrying_since
        details: dict[str, object] = {
            "clickhouse_retrying_seconds": None
            if retrying is None
            else round(time.monotonic() - retrying, 1),
            "rows_written": self.consumer.rows_written,
            "dead_lettered": self.consumer.dead_lettered,
        }
        healthy, reason = self.consumer.health()
        if reason is not None:
            details["not_ready_because"] = reason
        checks = {"nats": self._nats_connected(), "consuming": self.consumer.running, "healthy": healthy}
        return Readiness(checks, details)

    def _nats_connected(self) -> bool:
        return self.nats is not None and self.nats.is_connected

    def _nats_readiness(self) -> Readiness:
        return Readiness({"nats": self._nats_connected()})

    def _edge_readiness(self) -> Readiness:
        """Ready while events can be made durable (JetStream, or a writable spool) and the project
        configs are loaded. With a spool, configs that went stale during an outage are reported but
        keep the edge ready: a balancer draining every edge would turn an outage into data loss."""
        assert self.registry is not None
        spool_writable = self.spool is not None and self.spool.writable()
        details: dict[str, object] = {"config": self.registry.status()}
        if self.spool is not None and self.breaker is not None:
            details["spool"] = asdict(self.spool.stats())
            details["breaker"] = self.breaker.state
        fresh = not self.registry.stale or spool_writable
        return Readiness(
            {
                "nats": self._nats_connected() or spool_writable,
                "projects": self.registry.synced and fresh,
                "accepting": not self.draining,
            },
            details,
        )

    async def _serve(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        role: str,
        reuse_port: bool = False,
        tls: tuple[str, str] | None = None,
    ) -> str:
        """Serve `app` on a socket of its own: plain HTTP/1.1 under uvicorn, or, given a certificate
        and key, HTTPS with HTTP/2 and HTTP/1.1 under hypercorn (ops/tlsserver.py)."""
        context = None if tls is None else server_context(*tls)  # a bad file fails before binding
        sock = bind(host, port, reuse_port, role)
        self._sockets.append(sock)
        server: _HTTPServer = _uvicorn(app) if context is None else TLSServer(app, context)
        task = asyncio.create_task(server.serve(sockets=[sock]), name=f"{role}-server")
        while not server.started:
            if task.done():
                task.result()  # re-raise the start-up failure
                raise RuntimeError(f"the {role} server stopped during start-up")
            await asyncio.sleep(0.01)
        self._servers.append((role, task))
        self._http_servers.append(server)
        url = url_of(sock, "http" if context is None else "https")
        log.info("%s listening on %s", role, url)
        return url


def _uvicorn(app: ASGIApp) -> _Server:
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
        server_header=False,
        # X-Forwarded-For is believed only from configured proxies (edge/clientip.py), never by
        # uvicorn, which would otherwise trust it from 127.0.0.1.
        proxy_headers=False,
    )
    return _Server(config)
