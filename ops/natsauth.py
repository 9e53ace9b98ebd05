"""NATS client credentials and TLS, and the per-role users and permissions headwater's NATS grants.

Each role connects as a user of its own, allowed only what that role does (docs/nats-security.md):

- edge: publish `hw.events.>`; read the project KV bucket; create the streams it starts with;
  keep the cookieless salts and carried visitors (KV HW_SALTS, HW_CARRIED_VISITORS).
- consumer: consume HW_EVENTS and HW_IMPORTS, publish `hw.dlq.>`, read the project and tombstone
  KV buckets.
- control: write the project, idempotency, saved-funnel, tombstone and deletion-job KV buckets, the
  audit stream, purge a project; publish import batches (`hw.imports.>`), write the imports KV bucket.
- sessionizer: read the project KV bucket; write the sessionizer watermarks (KV HW_SESSIONS).
- every role: write its own node reports (KV HW_NODES, keys `<role>.*`); the control plane reads
  them all, and lists the consumers of the streams (/v1/health).
- admin: everything, for the operator's CLI (`streams`, `dlq`, `replay`, `spool drain`, `migrate`).

Permissions cannot tell a genuine envelope from one an edge user forges: an edge credential is as
trusted as an edge (it may set any `key_kind`), so keep it on the edge hosts, like the edge's
own secrets. What they do prevent: writing project config or reading the idempotency bucket
without the control plane's credentials, and publishing events or dead letters from a role
that has no business doing so.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROLES = ("edge", "consumer", "control", "sessionizer", "admin")

# Streams and buckets (core/wire/subjects.py, control/store.py, control/idempotency.py, control/audit.py,
# control/saved_funnels.py).
_CREATED_AT_START = ("HW_EVENTS", "HW_DLQ", "HW_IMPORTS", "HW_AUDIT", "KV_HW_PROJECTS")


def _read_kv(bucket: str) -> list[str]:
    """What reading (get, watch, list keys) a KV bucket takes; no write (`$KV.<bucket>.>`)."""
    stream = f"KV_{bucket}"
    return [
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.DELETE.{stream}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.>",
    ]


_COMMON = [
    "$JS.API.INFO",
    "$JS.API.STREAM.INFO.*",
    *(f"$JS.API.STREAM.CREATE.{name}" for name in _CREATED_AT_START),
    *_read_kv("HW_PROJECTS"),
    "$JS.FC.>",  # flow-control replies of the KV watch
    "_INBOX.>",  # replies (the edge's publish acks, request/reply)
]


def _node_reports(role: str) -> list[str]:
    """A role's node reports (core/service/nodereports.py): the bucket created if missing, and the
    role's own keys written (and deleted on a clean stop)."""
    return ["$JS.API.STREAM.CREATE.KV_HW_NODES", f"$KV.HW_NODES.{role}.>"]


PUBLISH: Mapping[str, list[str]] = {
    "edge": [
        *_COMMON,
        *_node_reports("edge"),
        "hw.events.>",
        # cookieless visitors (edge/cookieless.py): the daily salts and the visitors carried across
        # midnight, created if missing, read, written (a salt with a create, first writer wins)
        # and purged (salts older than yesterday)
        *(f"$KV.{bucket}.>" for bucket in ("HW_SALTS", "HW_CARRIED_VISITORS")),
        *(f"$JS.API.STREAM.CREATE.KV_{bucket}" for bucket in ("HW_SALTS", "HW_CARRIED_VISITORS")),
        *_read_kv("HW_SALTS"),
        *_read_kv("HW_CARRIED_VISITORS"),
    ],
    "consumer": [
        *_COMMON,
        *_node_reports("consumer"),
        "hw.dlq.>",
        "$JS.API.CONSUMER.CREATE.HW_EVENTS",
        "$JS.API.CONSUMER.CREATE.HW_EVENTS.>",
        "$JS.API.CONSUMER.DURABLE.CREATE.HW_EVENTS.>",
        "$JS.API.CONSUMER.INFO.HW_EVENTS.>",
        "$JS.API.CONSUMER.MSG.NEXT.HW_EVENTS.>",
        "$JS.ACK.HW_EVENTS.>",
        # data-subject tombstones (core/projects/tombstones.py): followed, created if missing
        "$JS.API.STREAM.CREATE.KV_HW_TOMBSTONES",
        *_read_kv("HW_TOMBSTONES"),
        # the import writer (consumers/imports.py): its durable on HW_IMPORTS
        "$JS.API.CONSUMER.CREATE.HW_IMPORTS",
        "$JS.API.CONSUMER.CREATE.HW_IMPORTS.>",
        "$JS.API.CONSUMER.DURABLE.CREATE.HW_IMPORTS.>",
        "$JS.API.CONSUMER.INFO.HW_IMPORTS.>",
        "$JS.API.CONSUMER.MSG.NEXT.HW_IMPORTS.>",
        "$JS.ACK.HW_IMPORTS.>",
    ],
    "control": [
        *_COMMON,
        *_node_reports("control"),
        # /v1/health (control/health.py): every node's report, the consumers of the streams
        *_read_kv("HW_NODES"),
        *(f"$JS.API.CONSUMER.LIST.{stream}" for stream in ("HW_EVENTS", "HW_IMPORTS", "HW_DLQ")),
        "$KV.HW_PROJECTS.>",
        "$KV.HW_IDEMPOTENCY.>",
        "$JS.API.STREAM.CREATE.KV_HW_IDEMPOTENCY",
        *_read_kv("HW_IDEMPOTENCY"),
        "hw.audit",
        "$JS.API.STREAM.PURGE.HW_EVENTS",
        "$JS.API.STREAM.PURGE.HW_DLQ",
        "$KV.HW_FUNNELS.>",
        "$JS.API.STREAM.CREATE.KV_HW_FUNNELS",
        *_read_kv("HW_FUNNELS"),
        "$JS.API.STREAM.PURGE.KV_HW_FUNNELS",  # a project's saved funnels, when it is purged
        # data-subject deletion jobs and their tombstones (control/subjects.py)
        *(f"$KV.{bucket}.>" for bucket in ("HW_TOMBSTONES", "HW_SUBJECT_JOBS")),
        *(f"$JS.API.STREAM.CREATE.KV_{bucket}" for bucket in ("HW_TOMBSTONES", "HW_SUBJECT_JOBS")),
        *_read_kv("HW_TOMBSTONES"),
        *_read_kv("HW_SUBJECT_JOBS"),
        "$JS.API.STREAM.PURGE.KV_HW_SUBJECT_JOBS",  # a project's jobs, when it is purged
        # imports (control/imports.py): batches published, table schemas and last states in KV
        "hw.imports.>",
        "$JS.API.STREAM.PURGE.HW_IMPORTS",
        "$KV.HW_IMPORTS.>",
        "$JS.API.STREAM.CREATE.KV_HW_IMPORTS",
        *_read_kv("HW_IMPORTS"),
        "$JS.API.STREAM.PURGE.KV_HW_IMPORTS",
    ],
    "sessionizer": [
        *_COMMON,
        *_node_reports("sessionizer"),
        "$KV.HW_SESSIONS.>",
        "$JS.API.STREAM.CREATE.KV_HW_SESSIONS",
        *_read_kv("HW_SESSIONS"),
    ],
    "admin": [">"],
}


def permissions(role: str) -> dict[str, Any]:
    """A role's permissions block. Every role subscribes only to its own inboxes."""
    return {
        "publish": {"allow": PUBLISH[role]},
        "subscribe": {"allow": [">"] if role == "admin" else ["_INBOX.>"]},
    }


def authorization_config(passwords: Mapping[str, str], *, variables: bool = False) -> str:
    """An nats-server `authorization` block with one user per role. `passwords` maps a role to its
    password, or, with `variables`, to the name of the environment variable that holds it."""
    users = []
    for role in ROLES:
        password = f"${passwords[role]}" if variables else json.dumps(passwords[role])
        users.append(
            f"    {{user: {role}, password: {password}, permissions: {json.dumps(permissions(role))}}}"
        )
    return "authorization {\n  users: [\n" + "\n".join(users) + "\n  ]\n}\n"


def generate_passwords(directory: Path) -> dict[str, Path]:
    """One password file per role in `directory` (0600), made once and kept across restarts."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    files = {}
    for role in ROLES:
        path = directory / f"{role}.password"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(32) + "\n")
        files[role] = path
    return files


@dataclass(frozen=True, slots=True)
class NatsAuth:
    """How a client authenticates to NATS and checks its certificate; empty: neither."""

    user: str | None = None
    password: str | None = field(default=None, repr=False)
    creds_file: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    @classmethod
    def from_password_file(cls, user: str, path: Path, **tls: str | None) -> NatsAuth:
        return cls(user=user, password=path.read_text().strip(), **tls)

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for `nats.connect`."""
        options: dict[str, Any] = {}
        if self.user is not None:
            options["user"] = self.user
            options["password"] = self.password or ""
        if self.creds_file is not None:
            options["user_credentials"] = self.creds_file
        if self.tls_ca is not None or self.tls_cert is not None:
            context = ssl.create_default_context(cafile=self.tls_ca)
            if self.tls_cert is not None:
                context.load_cert_chain(self.tls_cert, self.tls_key)
            options["tls"] = context
        return options


def redact_nats_url(url: str) -> str:
    """The (comma-separated) NATS URL with passwords and tokens hidden, for logs and messages."""
    # user:password@ keeps the user; a lone token@ is all secret.
    return re.sub(
        r"//([^/@,:]*)(:[^/@,]*)?@",
        lambda m: f"//{m.group(1)}:***@" if m.group(2) is not None else "//***@",
        url,
    )


def is_empty(auth: NatsAuth) -> bool:
    return auth == NatsAuth()


PASSWORDS_DIR = "nats-users"  # under `up`'s data dir: one <role>.password file per role


def up_auth(data_root: Path, role: str = "admin") -> NatsAuth:
    """The credentials `headwater up` made for `role` in its data dir (none when it made none)."""
    path = data_root / PASSWORDS_DIR / f"{role}.password"
    return NatsAuth.from_password_file(role, path) if path.exists() else NatsAuth()


@dataclass(frozen=True, slots=True)
class NatsTarget:
    """Where a command connects, and as whom."""

    url: str
    auth: NatsAuth = field(default_factory=NatsAuth)

    @property
    def redacted(self) -> str:
        return redact_nats_url(self.url)
