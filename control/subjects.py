"""Data-subject deletion jobs (docs/privacy.md, "Data subjects: deletion and export").

A job is a KV entry in HW_SUBJECT_JOBS (`<project>.<job id>`), so it survives a restart of the
control plane: jobs left queued or running are taken up again at start. Every step is idempotent:

1. Find the user id's other anonymous ids (those on events with that user id), then write a
   tombstone per identity (HW_TOMBSTONES, core/projects/tombstones.py). From then on the record
   keeps only the identities' digests: the ids in clear live in the record only until this step.
2. Delete the person's rows from every table of the project's database that has a `user_id`,
   `anonymous_id` or `identity` column (found in system.columns: events, sessions,
   sessionizer_recent, and tables added later), matching on the digests (so ClickHouse's
   mutation log holds digests, not ids).
3. Wait the project's batching span plus a margin (a batch being written when the tombstones
   landed may still insert rows of the person), delete again, and repeat until a pass finds no
   row: `done`. Rows still arriving after `max_passes`: `failed`.

Jobs run one at a time, in the order they were asked for.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
from dataclasses import dataclass
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from headwater.core.projects.kvsnapshot import bucket_is_empty, read_snapshot
from headwater.core.projects.project import database_name, utc_now_iso, validate_project_id
from headwater.core.projects.tombstones import write_tombstones
from headwater.core.service.errors import APIError
from headwater.core.service.kvbuckets import ensure_bucket
from headwater.core.service.tasks import cancel_and_wait
from headwater.core.service.validation import convert_body
from headwater.privacy.tombstones import IdKind, digest_sql, subject_digest, tombstone_digest

from .audit import AuditLog
from .store import ProjectStore
from .subjects_schemas import DataSubjectJob, DataSubjectRequest

log = logging.getLogger(__name__)

JOBS_BUCKET = "HW_SUBJECT_JOBS"
# The most anonymous ids one user id may link to a job (an id shared by every visitor, such as a
# constant a broken client sends, would otherwise pull everyone into one deletion).
MAX_LINKED_ANONYMOUS_IDS = 1_000
MAX_QUEUED_JOBS = 1_000
# The columns that name a person; a table with any of them is searched.
PERSON_COLUMNS = ("user_id", "anonymous_id", "identity")
_SYNC = {"mutations_sync": 2}  # a DELETE returns once every replica has applied it


async def ensure_jobs_bucket(js: JetStreamContext, replicas: int) -> KeyValue:
    return await ensure_bucket(
        js,
        KeyValueConfig(
            bucket=JOBS_BUCKET,
            description="headwater data-subject deletion jobs, per project",
            history=1,
            storage=StorageType.FILE,
            replicas=replicas,
        ),
    )


def new_job_id() -> str:
    """16 characters of lowercase base32 (80 random bits)."""
    return base64.b32encode(secrets.token_bytes(10)).decode().lower()


async def purge_project_jobs(js: JetStreamContext, project_id: str) -> None:
    """Remove a purged project's job records."""
    validate_project_id(project_id)  # no wildcard can reach the subject filter
    with contextlib.suppress(NotFoundError):  # no job was ever asked for
        await js.purge_stream(f"KV_{JOBS_BUCKET}", subject=f"$KV.{JOBS_BUCKET}.{project_id}.>")


class TooManyJobs(APIError):
    def __init__(self) -> None:
        super().__init__(429, "too_many_jobs", f"{MAX_QUEUED_JOBS} deletion jobs are waiting; retry later")
        self.headers = {"Retry-After": "60"}


class JobNotFound(APIError):
    def __init__(self, project_id: str, job_id: str) -> None:
        super().__init__(404, "job_not_found", f"project {project_id!r} has no data-subject job {job_id!r}")


@dataclass(frozen=True, slots=True)
class JobSettings:
    # Waited after each pass beyond the project's batching span: time for the consumers to see the
    # tombstones (a KV watch: milliseconds, up to ~10 s after a NATS reconnect) and for a batch
    # already being inserted to land.
    settle_margin_seconds: float = 15.0
    max_passes: int = 5


def _job_key(project_id: str, job_id: str) -> str:
    return f"{project_id}.{job_id}"


def public_view(record: dict[str, Any]) -> dict[str, Any]:
    """What the API shows of a job record (never the ids nor their digests)."""
    return {name: record.get(name) for name in DataSubjectJob.__struct_fields__}


def person_condition(columns: set[str]) -> str:
    """A WHERE condition matching a person's rows by the digests of their ids (parameters
    `project`: String and `digests`: Array(String)), over the person columns a table has."""
    tests = []
    if "user_id" in columns:
        tests.append(f"{digest_sql('project', 'user_id', 'user_id')} IN {{digests:Array(String)}}")
    if "anonymous_id" in columns:
        tests.append(f"{digest_sql('project', 'anonymous_id', 'anonymous_id')} IN {{digests:Array(String)}}")
    if "identity" in columns:  # the sessions' identity: either kind of id
        for kind in ("user_id", "anonymous_id"):
            tests.append(f"{digest_sql('project', kind, 'identity')} IN {{digests:Array(String)}}")
    return " OR ".join(tests)


def person_tables(client: Client, database: str) -> dict[str, set[str]]:
    """The MergeTree tables of `database` with a person column, each with those it has."""
    sql = """
        SELECT c.table, groupArray(c.name) FROM system.columns AS c
        INNER JOIN system.tables AS t ON t.database = c.database AND t.name = c.table
        WHERE c.database = {database:String} AND c.name IN {names:Array(String)}
            AND t.engine LIKE '%MergeTree%'
        GROUP BY c.table ORDER BY c.table
    """
    rows = client.query(sql, parameters={"database": database, "names": list(PERSON_COLUMNS)}).result_rows
    return {str(table): set(names) for table, names in rows}


def delete_pass(client: Client, project_id: str, digests: list[str]) -> dict[str, int]:
    """Delete the person's rows from every table that names people; per table, the rows found."""
    database = database_name(project_id)  # validated: spliced into SQL as an identifier
    parameters = {"project": project_id, "digests": digests}
    found: dict[str, int] = {}
    for table, columns in person_tables(client, database).items():
        condition = person_condition(columns)
        count_sql = f"SELECT count() FROM `{database}`.`{table}` WHERE {condition}"
        rows = int(client.query(count_sql, parameters=parameters).result_rows[0][0])
        found[table] = rows
        if rows:
            delete_sql = f"ALTER TABLE `{database}`.`{table}` DELETE WHERE {condition}"
            client.command(delete_sql, parameters=parameters, settings=_SYNC)
    return found


def linked_anonymous_ids(client: Client, project_id: str, user_id: str) -> list[str]:
    """The anonymous ids on the user id's events (at most MAX_LINKED_ANONYMOUS_IDS + 1)."""
    database = database_name(project_id)
    tables = person_tables(client, database)
    found: set[str] = set()
    for table in ("events", "sessionizer_recent"):
        if {"user_id", "anonymous_id"} <= tables.get(table, set()):
            sql = f"""
                SELECT DISTINCT anonymous_id FROM `{database}`.`{table}`
                WHERE user_id = {{user_id:String}} AND anonymous_id != '' LIMIT {{limit:UInt32}}
            """
            parameters = {"user_id": user_id, "limit": MAX_LINKED_ANONYMOUS_IDS + 1}
            found.update(str(row[0]) for row in client.query(sql, parameters=parameters).result_rows)
    return sorted(found)


class SubjectJobs:
    """Takes deletion requests, keeps their jobs in KV and runs them one at a time."""

    def __init__(
        self,
        kv: KeyValue,
        tombstones: KeyValue,
        clickhouse: Client,
        store: ProjectStore,
        audit: AuditLog,
        settings: JobSettings | None = None,
    ) -> None:
        self._kv = kv
        self._tombstones = tombstones
        self._clickhouse = clickhouse
        self._store = store
        self._audit = audit
        self._settings = settings or JobSettings()
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(MAX_QUEUED_JOBS)
        self._task: asyncio.Task[None] | None = None

    # -- API ------------------------------------------------------------------------------------

    async def submit(self, project_id: str, body: object, actor: str) -> str:
        validate_project_id(project_id)
        request = convert_body(body, DataSubjectRequest)
        await self._store.get(project_id)  # 404 for an unknown project
        if self._queue.full():
            raise TooManyJobs()
        job_id = new_job_id()
        subject = subject_digest(project_id, request.user_id, request.anonymous_ids)
        record: dict[str, Any] = {
            "job_id": job_id,
            "project": project_id,
            "state": "queued",
            "subject": subject,
            "created_at": utc_now_iso(),
            "started_at": None,
            "finished_at": None,
            "error": None,
            "tombstones": 0,
            "linked_anonymous_ids": 0,
            "rows_deleted": {},
            "passes": 0,
            # In clear only until the tombstones are written (step 1), then replaced by digests.
            "ids": {"user_id": request.user_id, "anonymous_ids": sorted(set(request.anonymous_ids))},
        }
        await self._kv.create(_job_key(project_id, job_id), orjson.dumps(record))
        await self._audit.record(
            actor,
            "data_subject.delete",
            project_id,
            job_id=job_id,
            subject=subject,
            user_id_given=request.user_id is not None,
            anonymous_ids_given=len(set(request.anonymous_ids)),
        )
        try:
            self._queue.put_nowait((project_id, job_id))
        except asyncio.QueueFull:  # filled by requests meanwhile: run at the next start
            log.warning("data-subject job %s of project %s waits for the next start", job_id, project_id)
        return job_id

    async def record_export(self, actor: str, project_id: str, request: DataSubjectRequest) -> None:
        subject = subject_digest(project_id, request.user_id, request.anonymous_ids)
        await self._audit.record(actor, "data_subject.export", project_id, subject=subject)

    async def get(self, project_id: str, job_id: str) -> dict[str, Any]:
        validate_project_id(project_id)
        await self._store.get(project_id)  # 404 for an unknown project
        record = await self._load(project_id, job_id)
        if record is None:
            raise JobNotFound(project_id, job_id)
        return public_view(record)

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Take up the jobs a previous control plane left queued or running, then run new ones."""
        unfinished = []
        for record in await self._records():
            if record["state"] in ("queued", "running"):
                unfinished.append((record["created_at"], record["project"], record["job_id"]))
        for _, project_id, job_id in sorted(unfinished):
            log.info("data-subject job %s of project %s: taken up again", job_id, project_id)
            with contextlib.suppress(asyncio.QueueFull):  # the rest wait for the next start
                self._queue.put_nowait((project_id, job_id))
        self._task = asyncio.create_task(self._work(), name="data-subject-jobs")

    async def stop(self) -> None:
        """A job stopped half-way stays `running` in KV and is taken up again at the next start."""
        if self._task is not None:
            await cancel_and_wait(self._task)

    async def _work(self) -> None:
        while True:
            project_id, job_id = await self._queue.get()
            try:
                await self.run(project_id, job_id)
            except asyncio.CancelledError:
                raise
            except Exception:  # the job is marked failed by run(); a KV outage is logged here
                log.exception("data-subject job %s of project %s", job_id, project_id)

    # -- the job --------------------------------------------------------------------------------

    async def _records(self) -> list[dict[str, Any]]:
        """Every job record now (read through a watcher: nats-py's key listing can end early)."""
        expect_entries = not await bucket_is_empty(self._kv)
        watcher = await self._kv.watchall(inactive_threshold=10.0)
        try:
            entries = await read_snapshot(watcher, expect_entries, 10.0)
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return [orjson.loads(entry.value) for entry in entries if entry.value]

    async def _load(self, project_id: str, job_id: str) -> dict[str, Any] | None:
        try:
            entry = await self._kv.get(_job_key(project_id, job_id))
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        record: dict[str, Any] = orjson.loads(entry.value)
        return record

    async def _save(self, record: dict[str, Any]) -> None:
        await self._kv.put(_job_key(record["project"], record["job_id"]), orjson.dumps(record))

    async def run(self, project_id: str, job_id: str) -> None:
        record = await self._load(project_id, job_id)
        if record is None or record["state"] in ("done", "failed"):
            return
        record["state"] = "running"
        record["started_at"] = record["started_at"] or utc_now_iso()
        await self._save(record)
        try:
            await self._delete(record)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("data-subject job %s of project %s failed", job_id, project_id)
            record.update(state="failed", error=f"{type(exc).__name__}: {exc}", finished_at=utc_now_iso())
            record.pop("ids", None)
            await self._save(record)

    async def _delete(self, record: dict[str, Any]) -> None:
        project_id = record["project"]
        project, _ = await self._store.get(project_id)
        if "digests" not in record:
            await self._write_tombstones(record)
        settle = project.settings.batching.span_seconds + self._settings.settle_margin_seconds
        digests: list[str] = record["digests"]
        totals: dict[str, int] = record["rows_deleted"]
        for _ in range(self._settings.max_passes):
            found = await asyncio.to_thread(delete_pass, self._clickhouse, project_id, digests)
            for table, rows in found.items():
                totals[table] = totals.get(table, 0) + rows
            record["passes"] += 1
            if record["passes"] > 1 and not any(found.values()):
                record.update(state="done", finished_at=utc_now_iso())
                await self._save(record)
                log.info("data-subject job %s of project %s done", record["job_id"], project_id)
                return
            await self._save(record)
            await asyncio.sleep(settle)
        raise RuntimeError(
            f"rows of the person were still arriving after {self._settings.max_passes} passes "
            "(a consumer that does not see the tombstones?); run the deletion again"
        )

    async def _write_tombstones(self, record: dict[str, Any]) -> None:
        """Step 1: the linked anonymous ids, a tombstone per identity; the ids become digests."""
        project_id = record["project"]
        ids = record["ids"]
        user_id: str | None = ids["user_id"]
        named: list[str] = ids["anonymous_ids"]
        linked: list[str] = []
        if user_id is not None:
            linked = await asyncio.to_thread(linked_anonymous_ids, self._clickhouse, project_id, user_id)
            if len(linked) > MAX_LINKED_ANONYMOUS_IDS:
                raise RuntimeError(
                    f"the user id appears with more than {MAX_LINKED_ANONYMOUS_IDS} anonymous ids; "
                    "name the anonymous ids to delete instead"
                )
        identities: list[tuple[IdKind, str]] = [("anonymous_id", a) for a in sorted(set(named) | set(linked))]
        if user_id is not None:
            identities.insert(0, ("user_id", user_id))
        record["tombstones"] = await write_tombstones(
            self._tombstones, project_id, identities, record["job_id"]
        )
        record["linked_anonymous_ids"] = len(set(linked) - set(named))
        record["digests"] = [tombstone_digest(project_id, kind, value).hex() for kind, value in identities]
        del record["ids"]
        await self._save(record)
