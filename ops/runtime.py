"""Runs headwater roles inside one event loop: the edge and control HTTP apps under uvicorn (under
hypercorn when they serve HTTPS), the consumer and the sessionizer as tasks. `up` runs them all;
`serve ROLE` runs one; the tests run any of them. Roles in one stack share one ClickHouse client
(the embedded engine opens its data directory in one process only).

This module is the wiring: it builds each role's objects, starts and stops them in order. What
makes a role ready is ops/readiness.py, the listeners are ops/listeners.py, and the migrations
the control role applies at start are ops/startup_migrations.py."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

from clickhouse_connect.driver.client import Client
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from tenacity import AsyncRetrying, before_sleep_log, wait_exponential, wait_random

from headwater.consumers.app import create_app as create_consumer_app
from headwater.consumers.imports import ImportTables, ImportWriter
from headwater.consumers.leftovers import leftover
from headwater.consumers.preview import EventPreviewer
from headwater.consumers.processing import Processor, start_processor
from headwater.consumers.runner import EventConsumer
from headwater.consumers.settings import ConsumerSettings
from headwater.consumers.writer import ClickHouseWriter
from headwater.control.app import create_app as create_control_app
from headwater.control.audit import AuditLog, ensure_audit_stream
from headwater.control.clickhouse import connect as connect_clickhouse
from headwater.control.health import Installation
from headwater.control.idempotency import IdempotencyStore, ensure_idempotency_bucket, server_secret
from headwater.control.imports import ImportService, ensure_imports_bucket
from headwater.control.query import QueryLimits, ReadOnlyQueries
from headwater.control.query_grants import query_user
from headwater.control.saved_funnels import SavedFunnelService, ensure_funnels_bucket, purge_project_funnels
from headwater.control.service import ProjectService
from headwater.control.settings import ControlSettings
from headwater.control.store import BucketSettings, ProjectStore, ensure_projects_bucket
from headwater.control.subjects import JobSettings, SubjectJobs, ensure_jobs_bucket, purge_project_jobs
from headwater.core.projects.configcache import ConfigCache
from headwater.core.projects.registry import ProjectRegistry
from headwater.core.projects.settings import Batching, ProjectSettings, Sessions
from headwater.core.projects.tombstones import (
    TombstoneRegistry,
    ensure_tombstones_bucket,
    purge_project_tombstones,
)
from headwater.core.service.httpapp import Readiness
from headwater.core.service.nodereports import DEFAULT_INTERVAL_SECONDS, MAX_REPORT_BYTES
from headwater.core.service.tasks import cancel_and_wait
from headwater.core.wire.subjects import EVENTS_STREAM
from headwater.edge.app import create_app as create_edge_app
from headwater.edge.app import create_operator_app
from headwater.edge.cookieless import CookielessIds
from headwater.edge.drainer import Drainer
from headwater.edge.fallback import CircuitBreaker, FallbackSink
from headwater.edge.metrics import EdgeMetrics
from headwater.edge.refusals import RefusalLog
from headwater.edge.settings import EdgeSettings
from headwater.edge.sink import JetStreamSink, Sink
from headwater.edge.streams import StreamSettings, ensure_streams, purge_project_messages
from headwater.sessionizer.app import create_app as create_sessionizer_app
from headwater.sessionizer.runner import Sessionizer
from headwater.sessionizer.settings import SessionizerSettings
from headwater.sessionizer.watermarks import Watermarks, ensure_sessions_bucket
from headwater.spool import Spool, SpoolConfig

from .httplimits import DEFAULT_HTTP_LIMITS, HTTPLimits
from .listeners import Listeners
from .natsauth import NatsAuth
from .natsconn import ConnectionEvents, connect_nats, connect_nats_in_background
from .nodereports import NodeReporter, RoleReport
from .readiness import consumer_readiness, edge_readiness, nats_readiness, sessionizer_readiness
from .startup_migrations import migrate_projects

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
    sessionizer: SessionizerSettings | None = None
    clickhouse_url: str | None = None
    # Header, head-time and body-time limits of the edge and control HTTP servers.
    http: HTTPLimits = DEFAULT_HTTP_LIMITS
    nats_auth: NatsAuth = field(default_factory=NatsAuth)
    # How often each role publishes its node report (KV HW_NODES, core/service/nodereports.py).
    node_report_seconds: float = DEFAULT_INTERVAL_SECONDS


async def _logged(what: str, awaitable: Awaitable[object]) -> None:
    try:
        await awaitable
    except Exception:
        log.warning("stopping %s failed", what, exc_info=True)


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
        self.import_writer: ImportWriter | None = None
        self.tombstones: TombstoneRegistry | None = None  # the consumer's live view
        self.subjects: SubjectJobs | None = None  # the control plane's deletion jobs
        self.processor: Processor | None = None
        self.sessionizer: Sessionizer | None = None
        self.sessionizer_url: str | None = None
        self.spool: Spool | None = None
        self.breaker: CircuitBreaker | None = None
        self.drainer: Drainer | None = None
        self.edge_url: str | None = None
        self.consumer_url: str | None = None
        self.edge_operator_url: str | None = None  # the edge's /metrics and detailed /readyz
        self.control_url: str | None = None
        self.draining = False  # stopping after a shutdown delay: the edge reports not ready
        self._listeners = Listeners(settings.http)
        self._going_online: asyncio.Task[None] | None = None
        self.refusals = RefusalLog()  # the edge's, published in its node report
        self.reporter: NodeReporter | None = None

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
        uses_clickhouse = s.control is not None or s.consumer is not None or s.sessionizer is not None
        if s.clickhouse_url is not None and uses_clickhouse:
            self.clickhouse = await asyncio.to_thread(connect_clickhouse, s.clickhouse_url)

        if s.edge is not None or s.consumer is not None or s.sessionizer is not None:
            # Edges resolve keys and origins from it; consumers take each project's batching span,
            # the sessionizer the enabled projects and their session rules.
            self.registry = self._new_registry(kv)
            await self.registry.start()
            self.connection_events.subscribe(self.registry)

        if s.edge is not None:
            assert self.registry is not None
            await self._serve_edge(js)

        if s.control is not None:
            assert self.clickhouse is not None, "the control plane needs a ClickHouse URL"
            await migrate_projects(
                self.store, self.clickhouse, s.control.clickhouse_cluster, s.control.query_clickhouse_url
            )
            idempotency = IdempotencyStore(
                await ensure_idempotency_bucket(js, s.streams.replicas), server_secret(s.control)
            )

            async def purge_messages(project_id: str) -> int:
                return await purge_project_messages(js, project_id)

            async def purge_funnels(project_id: str) -> None:
                await purge_project_funnels(js, project_id)
                await purge_project_tombstones(js, project_id)
                await purge_project_jobs(js, project_id)
                await imports.purge(project_id)

            funnels_kv = await ensure_funnels_bucket(js, s.streams.replicas)
            imports = ImportService(
                js, await ensure_imports_bucket(js, s.streams.replicas), self.store, self.clickhouse
            )

            self.service = ProjectService(
                self.store,
                self.clickhouse,
                AuditLog(js),
                idempotency,
                purge_messages,
                s.control.clickhouse_cluster,
                query_user(s.control.query_clickhouse_url) if s.control.query_clickhouse_url else None,
                purge_data=purge_funnels,
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
            funnels = SavedFunnelService(funnels_kv, self.store, AuditLog(js), self.queries)
            self.subjects = SubjectJobs(
                await ensure_jobs_bucket(js, s.streams.replicas),
                await ensure_tombstones_bucket(js, s.streams.replicas),
                self.clickhouse,
                self.store,
                AuditLog(js),
                JobSettings(s.control.subjects_settle_margin_seconds, s.control.subjects_max_passes),
            )
            await self.subjects.start()  # takes up the jobs a previous run left unfinished
            control_app = create_control_app(
                s.control, self.store, self.service, self.queries, self._nats_readiness, funnels,
                self.subjects, previewer=EventPreviewer(), imports=imports,
                installation=Installation(js, s.streams.replicas),
            )  # fmt: skip
            # Quart's own deadline for reading a body (uvicorn's protocol bounds it too; hypercorn not).
            control_app.config["BODY_TIMEOUT"] = s.http.body_timeout_seconds
            tls = _tls_files(s.control.tls_cert, s.control.tls_key)
            self.control_url = await self._listeners.serve(
                control_app, s.control.host, s.control.port, "control", tls=tls
            )

        if s.consumer is not None:
            assert self.clickhouse is not None, "the consumer needs a ClickHouse URL"
            writer = ClickHouseWriter(self.clickhouse)
            # Before the first message: a deleted data subject's events are never stored again.
            self.tombstones = TombstoneRegistry(await ensure_tombstones_bucket(js, s.streams.replicas))
            await self.tombstones.start()
            self.connection_events.subscribe(self.tombstones)
            self.processor = start_processor(s.consumer, self._hash_key)
            await self.processor.warm_up()
            self.consumer = EventConsumer(
                self.nats, writer, s.consumer, self.processor, self._project_settings,
                leftover_of=self._leftover, tombstones_of=self.tombstones.digests,
            )  # fmt: skip
            self.connection_events.subscribe(self.consumer)
            await self.consumer.start()
            if s.consumer.imports_durable_name is not None:
                tables = ImportTables(self.clickhouse, s.consumer.clickhouse_cluster)
                self.import_writer = ImportWriter(
                    self.nats,
                    tables,
                    s.consumer.imports_durable_name,
                    s.consumer.retry_delay_seconds,
                    s.consumer.ack_wait_seconds,
                )
                await self.import_writer.start()
            if s.consumer.port is not None:
                app = create_consumer_app(self.consumer.metrics, self._consumer_readiness)
                self.consumer_url = await self._listeners.serve(
                    app, s.consumer.host, s.consumer.port, "consumer"
                )

        if s.sessionizer is not None:
            await self._start_sessionizer(js, s.sessionizer)
        self._start_reporter(js)
        # Everything long-lived exists now: keep it out of the garbage collector's scans (a batch
        # request spent ~8% of its CPU in GC before, measured with py-spy).
        gc.collect()
        gc.freeze()

    async def _start_sessionizer(self, js: JetStreamContext, settings: SessionizerSettings) -> None:
        assert self.clickhouse is not None, "the sessionizer needs a ClickHouse URL"
        assert self.registry is not None
        registry = self.registry
        watermarks = Watermarks(await ensure_sessions_bucket(js, self.settings.streams.replicas))

        def enabled_projects() -> dict[str, Sessions]:
            return {p.id: p.settings.sessions for p in registry.projects() if p.enabled}

        self.sessionizer = Sessionizer(self.clickhouse, watermarks, settings, enabled_projects)
        await self.sessionizer.start()
        if settings.port is not None:
            app = create_sessionizer_app(self.sessionizer.metrics, self._sessionizer_readiness)
            self.sessionizer_url = await self._listeners.serve(
                app, settings.host, settings.port, "sessionizer"
            )

    def _start_reporter(self, js: JetStreamContext) -> None:
        """Each role of this stack reports its readiness (an edge also its refusal log)."""
        s = self.settings
        roles: dict[str, RoleReport] = {}
        if s.edge is not None:
            roles["edge"] = (self._edge_readiness, self.refusals.snapshot)
        if s.control is not None:
            roles["control"] = (self._nats_readiness, None)
        if s.consumer is not None:
            roles["consumer"] = (self._consumer_readiness, None)
        if s.sessionizer is not None:
            roles["sessionizer"] = (self._sessionizer_readiness, None)
        nats = self.nats
        assert nats is not None

        def max_payload() -> int:
            return nats.max_payload if nats.is_connected else MAX_REPORT_BYTES

        self.reporter = NodeReporter(
            js, roles, s.node_report_seconds, s.streams.replicas, max_payload=max_payload
        )
        self.reporter.start()

    def _may_start_offline(self) -> bool:
        """A lone edge with a config cache on disk may start before NATS answers."""
        s = self.settings
        other_roles = s.control is not None or s.consumer is not None or s.sessionizer is not None
        if s.edge is None or other_roles or s.edge.config_cache is None:
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
        # Its KV buckets are opened on first use: an edge may start before NATS answers.
        cookieless = CookielessIds.on_jetstream(js, s.streams.replicas, s.edge.publish_timeout_seconds)
        edge_app = create_edge_app(
            s.edge, sink, self.registry, self._edge_readiness, metrics, s.http.body_timeout_seconds,
            cookieless, refusals=self.refusals,
        )  # fmt: skip
        tls = _tls_files(s.edge.tls_cert, s.edge.tls_key)
        self.edge_url = await self._listeners.serve(
            edge_app, s.edge.host, s.edge.port, "edge", s.edge.reuse_port, tls
        )
        if s.edge.operator_port is not None:
            operator_app = create_operator_app(self._edge_readiness, metrics)
            self.edge_operator_url = await self._listeners.serve(
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
        self._start_reporter(js)  # publishes once NATS answers
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

    def failed(self) -> str | None:
        """A description of the first role that died, if one did."""
        stopped = self._listeners.stopped()
        if stopped is not None:
            return f"the {stopped} HTTP server stopped"
        online = self._going_online
        if online is not None and online.done() and not online.cancelled() and online.exception():
            return f"starting with NATS failed: {online.exception()!r}"
        if self.registry is not None and self.registry.failure is not None:
            return f"project registry failed: {self.registry.failure!r}"
        if self.drainer is not None and self.drainer.failure is not None:
            return f"spool drainer failed: {self.drainer.failure!r}"
        if self.consumer is not None and self.consumer.failure is not None:
            return f"consumer failed: {self.consumer.failure!r}"
        if self.import_writer is not None and self.import_writer.failure is not None:
            return f"import writer failed: {self.import_writer.failure!r}"
        if self.tombstones is not None and self.tombstones.failure is not None:
            return f"tombstone watcher failed: {self.tombstones.failure!r}"
        if self.sessionizer is not None and self.sessionizer.broken is not None:
            return f"sessionizer failed: {self.sessionizer.broken}"
        return None

    async def stop(self) -> None:
        """Stop accepting, finish requests in flight, flush and ack, then close connections.
        Each step runs even when an earlier one failed; failures are logged. An edge with a
        shutdown delay first serves on for that long, reporting not ready (draining)."""
        delay = self.settings.edge.shutdown_delay_seconds if self.settings.edge is not None else 0
        if delay > 0 and self._listeners.serving and not self.draining:
            self.draining = True
            log.info("draining: /readyz answers 503 for %.1f s before the edge stops accepting", delay)
            await asyncio.sleep(delay)
        await self._listeners.stop()
        if self.reporter is not None:  # before NATS closes: its reports are deleted
            await _logged("node reports", self.reporter.stop())
        if self._going_online is not None:
            await cancel_and_wait(self._going_online)
        if self.drainer is not None:
            await _logged("spool drainer", self.drainer.stop())
        if self.breaker is not None:
            await _logged("circuit breaker", self.breaker.stop())
        if self.spool is not None:
            await _logged("spool", self.spool.close())
        if self.subjects is not None:  # a job stopped half-way is taken up again at the next start
            await _logged("data-subject jobs", self.subjects.stop())
        if self.sessionizer is not None:  # before NATS closes: its cycle moves a KV watermark
            await _logged("sessionizer", self.sessionizer.stop())
        if self.import_writer is not None:
            await _logged("import writer", self.import_writer.stop())
        if self.consumer is not None:
            await _logged("consumer", self.consumer.stop())
        if self.processor is not None:
            await _logged("consumer workers", self.processor.close())
        if self.tombstones is not None:
            await _logged("tombstone registry", self.tombstones.stop())
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

    def _hash_key(self, project_id: str) -> bytes | None:
        """A project's key for the `hash` action of its anonymisation rules."""
        assert self.registry is not None
        project = self.registry.get(project_id)
        return project.anonymisation_key if project is not None else None

    def _leftover(self, project_id: str, received_at: float | None) -> str | None:
        assert self.registry is not None
        return leftover(self.registry, project_id, received_at)

    def _consumer_readiness(self) -> Readiness:
        assert self.consumer is not None
        return consumer_readiness(self.consumer, self._nats_connected())

    def _sessionizer_readiness(self) -> Readiness:
        assert self.sessionizer is not None
        return sessionizer_readiness(self.sessionizer, self._nats_connected())

    def _nats_connected(self) -> bool:
        return self.nats is not None and self.nats.is_connected

    def _nats_readiness(self) -> Readiness:
        return nats_readiness(self._nats_connected())

    def _edge_readiness(self) -> Readiness:
        assert self.registry is not None
        return edge_readiness(
            self.registry, self.spool, self.breaker, self.drainer, self._nats_connected(), self.draining
        )
