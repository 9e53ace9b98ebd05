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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import uvicorn
from clickhouse_connect.driver.client import Client
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from tenacity import AsyncRetrying, before_sleep_log, wait_exponential, wait_random

from headwater.consumers.app import create_app as create_consumer_app
from headwater.consumers.leftovers import leftover
from headwater.consumers.processing import Processor, start_processor
from headwater.consumers.runner import EventConsumer
from headwater.consumers.settings import ConsumerSettings
from headwater.consumers.writer import ClickHouseWriter
from headwater.control.app import create_app as create_control_app
from headwater.control.audit import AuditLog, ensure_audit_stream
from headwater.control.clickhouse import connect as connect_clickhouse
from headwater.control.idempotency import IdempotencyStore, ensure_idempotency_bucket, server_secret
from headwater.control.query import QueryLimits, ReadOnlyQueries
from headwater.control.query_grants import apply_grants, query_user
from headwater.control.service import ProjectService
from headwater.control.settings import ControlSettings
from headwater.control.store import BucketSettings, ProjectStore, ensure_projects_bucket
from headwater.core.migrations import apply_migrations
from headwater.core.projects.configcache import ConfigCache
from headwater.core.projects.project import database_name
from headwater.core.projects.registry import ProjectRegistry
from headwater.core.projects.settings import Batching, ProjectSettings
from headwater.core.service.httpapp import Readiness
from headwater.core.service.tasks import cancel_and_wait
from headwater.core.wire.subjects import EVENTS_STREAM
from headwater.edge.app import create_app as create_edge_app
from headwater.edge.app import create_operator_app
from headwater.edge.asgi import ASGIApp
from headwater.edge.drainer import Drainer
from headwater.edge.fallback import CircuitBreaker, FallbackSink
from headwater.edge.metrics import EdgeMetrics
from headwater.edge.settings import EdgeSettings
from headwater.edge.sink import JetStreamSink, Sink
from headwater.edge.streams import StreamSettings, ensure_streams, purge_project_messages
from headwater.spool import Spool, SpoolConfig

from .httplimits import DEFAULT_HTTP_LIMITS, HTTPLimits, protocol_for
from .loop import StackFailure
from .natsauth import NatsAuth
from .natsconn import ConnectionEvents, connect_nats, connect_nats_in_background
from .tlsserver import TLSServer, server_context

log = logging.getLogger(__name__)
# A lone edge with a config cache waits this long for NATS before it starts without it.
OFFLINE_START_AFTER_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class StackSettings:
    """Which roles to run, and against which NATS and ClickHouse."""

    nats_url: str
    streams: StreamSettings
    edge: EdgeSettings | None = None
    control: ControlSettings | None = None
    consumer: ConsumerSettings | None = None
    clickhouse_url: str | None = None
    # Header, head-time and body-time limits of the edge and control HTTP servers.
    http: HTTPLimits = DEFAULT_HTTP_LIMITS
    nats_auth: NatsAuth = field(default_factory=NatsAuth)


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
        flags = (
            "--operator-port"
            if role == "operator"
            else f"--{role}-port under `headwater up` or --port under `headwater serve {role}`"
        )
        super().__init__(
            f"the {role} cannot listen on {host}:{port}: the port is already in use; choose another "
            f"with {flags} (0 picks a free one), or stop what holds it"
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
        self.edge_operator_url: str | None = None  # the edge's /metrics and detailed /readyz
        self.control_url: str | None = None
        self.draining = False  # stopping after a shutdown delay: the edge reports not ready
        self._servers: list[tuple[str, asyncio.Task[None]]] = []
        self._http_servers: list[_HTTPServer] = []
        self._sockets: list[socket.socket] = []
        self._going_online: asyncio.Task[None] | None = None

    async def start(self) -> None:
        s = self.settings
        self.connection_events = ConnectionEvents()
        if self._may_start_offline():
            self.nats, connecting = connect_nats_in_background(
                s.nats_url, "headwater", self.connection_events, s.nats_auth
            )
            done, _ = await asyncio.wait({connecting}, timeout=OFFLINE_START_AFTER_SECONDS)
            if not done:
                await self._start_edge_offline(connecting)
                return
            connecting.result()
        else:
            self.nats = await connect_nats(s.nats_url, "headwater", self.connection_events, s.nats_auth)
        js = self.nats.jetstream()
        await ensure_streams(js, s.streams)
        kv = await ensure_projects_bucket(js, BucketSettings(replicas=s.streams.replicas))
        await ensure_audit_stream(js, s.streams.replicas)
        self.store = ProjectStore(kv)
        if s.clickhouse_url is not None and (s.control is not None or s.consumer is not None):
            self.clickhouse = await asyncio.to_thread(connect_clickhouse, s.clickhouse_url)

        if s.edge is not None or s.consumer is not None:
            # Edges resolve keys and origins from it; consumers take each project's batching span.
            self.registry = self._new_registry(kv)
            await self.registry.start()
            self.connection_events.subscribe(self.registry)

        if s.edge is not None:
            assert self.registry is not None
            await self._serve_edge(js)

        if s.control is not None:
            assert self.clickhouse is not None, "the control plane needs a ClickHouse URL"
            await self._migrate_projects(s.control.clickhouse_cluster, s.control.query_clickhouse_url)
            idempotency = IdempotencyStore(
                await ensure_idempotency_bucket(js, s.streams.replicas), server_secret(s.control)
            )

            async def purge_messages(project_id: str) -> int:
                return await purge_project_messages(js, project_id)

            self.service = ProjectService(
                self.store,
                self.clickhouse,
                AuditLog(js),
                idempotency,
                purge_messages,
                s.control.clickhouse_cluster,
                query_user(s.control.query_clickhouse_url) if s.control.query_clickhouse_url else None,
            )
            self.queries = ReadOnlyQueries(
                s.control.query_clickhouse_url or s.control.clickhouse_url,
                limits=QueryLimits(
                    s.control.query_max_rows,
                    s.control.query_timeout_seconds,
                    s.control.query_max_memory_bytes,
                    s.control.query_max_concurrent,
                ),
                use_roles=s.control.query_clickhouse_url is not None,
            )
            control_app = create_control_app(
                s.control, self.store, self.service, self.queries, self._nats_readiness
            )
            # Quart's own deadline for reading a body (uvicorn's protocol bounds it too; hypercorn not).
            control_app.config["BODY_TIMEOUT"] = s.http.body_timeout_seconds
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

    def _may_start_offline(self) -> bool:
        """A lone edge with a config cache on disk may start before NATS answers."""
        s = self.settings
        if s.edge is None or s.control is not None or s.consumer is not None or s.edge.config_cache is None:
            return False
        return Path(s.edge.config_cache).is_file()

    def _new_registry(self, kv: KeyValue | None) -> ProjectRegistry:
        edge = self.settings.edge
        if edge is None or edge.config_cache is None:
            return ProjectRegistry(kv)
        return ProjectRegistry(kv, cache=ConfigCache(edge.config_cache), max_age=edge.config_max_age_seconds)

    async def _serve_edge(self, js: JetStreamContext) -> None:
        """The edge's public listener, and its operator listener (/metrics, detailed /readyz)."""
        s = self.settings
        assert s.edge is not None and self.registry is not None
        metrics = EdgeMetrics()
        sink = await self._edge_sink(js, s.edge, metrics)
        edge_app = create_edge_app(
            s.edge, sink, self.registry, self._edge_readiness, metrics, s.http.body_timeout_seconds
        )
        tls = _tls_files(s.edge.tls_cert, s.edge.tls_key)
        self.edge_url = await self._serve(edge_app, s.edge.host, s.edge.port, "edge", s.edge.reuse_port, tls)
        if s.edge.operator_port is not None:
            operator_app = create_operator_app(self._edge_readiness, metrics)
            self.edge_operator_url = await self._serve(
                operator_app, s.edge.operator_host, s.edge.operator_port, "operator", s.edge.reuse_port
            )

    async def _start_edge_offline(self, connecting: asyncio.Task[None]) -> None:
        """NATS does not answer: serve from the config cache into the spool (the breaker is open),
        and finish starting in the background once NATS answers."""
        s = self.settings
        assert s.edge is not None and self.nats is not None
        log.warning("NATS at %s does not answer: the edge starts from its config cache", s.nats_url)
        js = self.nats.jetstream()
        self.registry = self._new_registry(None)
        self.registry.load_cache()
        self.connection_events.subscribe(self.registry)
        await self._serve_edge(js)
        self._going_online = asyncio.create_task(self._go_online(connecting, js), name="edge-go-online")
        gc.collect()
        gc.freeze()

    async def _go_online(self, connecting: asyncio.Task[None], js: JetStreamContext) -> None:
        """Once NATS answers: the streams and the bucket (created if this edge is the first), then
        the registry's snapshot replaces the cached configs. The breaker closes by its own probe."""
        await connecting
        log.info("NATS answers: the edge leaves its config cache for the live configs")
        s = self.settings
        async for attempt in AsyncRetrying(
            wait=wait_exponential(multiplier=0.2, max=5.0) + wait_random(0, 0.5),
            before_sleep=before_sleep_log(log, logging.WARNING),
        ):
            with attempt:
                await ensure_streams(js, s.streams)
                kv = await ensure_projects_bucket(js, BucketSettings(replicas=s.streams.replicas))
                assert self.registry is not None
                self.registry.attach(kv)
                await self.registry.resync()

    async def _edge_sink(self, js: JetStreamContext, settings: EdgeSettings, metrics: EdgeMetrics) -> Sink:
        """JetStream, falling back to the disk spool (when one is configured) behind a breaker."""
        assert self.nats is not None
        direct = JetStreamSink(self.nats, settings.publish_timeout_seconds)
        if self._nats_connected():
            try:
                await direct.refresh_limit()  # the events stream's max message size
            except (NatsError, TimeoutError):
                log.warning("cannot read the events stream's max message size yet", exc_info=True)
        if settings.spool_dir is None:
            metrics.watch(lambda: {"breaker_open": False})
            return direct
        config = SpoolConfig(max_bytes=settings.spool_max_bytes, min_free_bytes=settings.spool_min_free_bytes)
        self.spool = spool = Spool(settings.spool_dir, config)

        async def probe() -> None:
            await js.stream_info(EVENTS_STREAM)

        self.breaker = breaker = CircuitBreaker(probe)
        self.connection_events.subscribe(breaker)
        if not self._nats_connected():
            breaker.trip("NATS is not connected")
        self.drainer = drainer = Drainer(
            spool,
            js,
            breaker,
            metrics,
            limit=direct.max_body_bytes,
            compress_above=settings.compress_above_bytes,
        )
        # A spool the disk does not let open (full, failing) is no reason not to serve: the edge
        # starts without it, reports it, and the drainer opens it once it can.
        await drainer.open_spool()
        metrics.watch(
            lambda: {
                "breaker_open": breaker.is_open,
                "spool": spool.stats(),
                "spool_problem": drainer.problem,
            }
        )
        drainer.start()
        return FallbackSink(direct, spool, breaker, metrics)

    async def _migrate_projects(self, cluster: str | None, query_url: str | None = None) -> None:
        """Bring every project's database to the newest schema (idempotent; a new headwater version
        may bring migrations). A failure is logged and left for `headwater migrate` to retry."""
        assert self.store is not None and self.clickhouse is not None
        for project_id in await self.store.ids():
            try:
                applied = await asyncio.to_thread(
                    apply_migrations, self.clickhouse, database_name(project_id), cluster
                )
            except Exception:
                log.exception(
                    "migrating project %s failed; run `headwater migrate` once it is fixed", project_id
                )
                continue
            if applied:
                log.info("project %s: applied migrations %s", project_id, applied)
            if query_url is not None:
                try:
                    await asyncio.to_thread(
                        apply_grants, self.clickhouse, project_id, query_user(query_url), cluster
                    )
                except Exception:
                    log.exception("granting project %s's reader role failed", project_id)

    def failed(self) -> str | None:
        """A description of the first role that died, if one did."""
        for role, task in self._servers:
            if task.done():
                return f"the {role} HTTP server stopped"
        online = self._going_online
        if online is not None and online.done() and not online.cancelled() and online.exception():
            return f"starting with NATS failed: {online.exception()!r}"
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
        if self._going_online is not None:
            await cancel_and_wait(self._going_online)
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
            if self.nats.is_connected:
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
            details["spool_problem"] = self.drainer.problem if self.drainer is not None else None
        fresh = not self.registry.stale or spool_writable
        configs = (self.registry.synced or self.registry.from_cache) and self.registry.usable
        # With the breaker open every publish goes to the spool: a full one (bytes or disk) means
        # 503s, so not ready, even while the NATS connection is up.
        jetstream = self._nats_connected() and (self.breaker is None or not self.breaker.is_open)
        return Readiness(
            {
                "nats": jetstream or spool_writable,
                "projects": configs and fresh,
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
        limits = self.settings.http
        server: _HTTPServer = _uvicorn(app, limits) if context is None else TLSServer(app, context, limits)
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


def _uvicorn(app: ASGIApp, limits: HTTPLimits) -> _Server:
    config = uvicorn.Config(
        app,
        http=protocol_for(limits),
        timeout_keep_alive=limits.keep_alive_seconds,
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
