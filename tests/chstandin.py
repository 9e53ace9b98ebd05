"""A ClickHouse HTTP interface in front of the embedded engine, for what chdb cannot do itself.

It answers clickhouse-connect's HTTP client like a ClickHouse server: the query (URL or body) runs
in the real embedded engine with the URL's database and settings, results come back in the format
asked for, and an error is ClickHouse's text with `X-ClickHouse-Exception-Code`. What the embedded
engine has no storage for — users and roles — it records instead of executing, and it refuses, as
a server's access control would, a query whose `role` is not the reader role of its database.
Every request is recorded (user, role, database, query) so a test can see what headwater sent.
"""

from __future__ import annotations

import base64
import os
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import chdb

_TRANSPORT = {
    "database", "role", "query", "query_id", "session_id", "session_timeout", "session_check",
    "compress", "decompress", "wait_end_of_query", "client_protocol_version", "quota_key",
    "enable_http_compression", "send_progress_in_http_headers", "http_headers_progress_interval_ms",
    "buffer_size", "default_format", "user", "password",
}  # fmt: skip
ACCESS_DDL = re.compile(r"^\s*(CREATE ROLE|GRANT|REVOKE|SET DEFAULT ROLE|DROP ROLE)\b", re.IGNORECASE)
_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
_CODE = re.compile(r"Code: (\d+)\.")


@dataclass
class Request:
    user: str
    role: str | None
    database: str | None
    query: str


@dataclass
class StandIn:
    engine_path: str
    requests: list[Request] = field(default_factory=list)
    # A column the query user holds no grant on (ClickHouse has column-level grants).
    ungranted_column: str | None = None
    server: ThreadingHTTPServer | None = None
    # One query at a time: each request opens and closes a connection of its own (so that its USE
    # and SET end with it), and two threads doing so at once is not something chdb promises.
    _engine_lock: threading.Lock = field(default_factory=threading.Lock)
    # Held open while serving: the engine stays up, so a request's own connection costs ~1 ms.
    # Without it the last close shuts the engine down and each request starts it again, loading
    # every database of the test session (~0.9 s with 150 projects: project creation timed out).
    _keep_alive: Any = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def url(self, user: str) -> str:
        """A URL of `user`; the stand-in checks no password, so the URL carries a made-up one."""
        return f"http://{user}:{user}-password@127.0.0.1:{self.port}"

    def start(self) -> StandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._answer(b"")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self._answer(self.rfile.read(length))

            def _answer(self, body: bytes) -> None:
                params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
                query = params.get("query", "") + body.decode()
                status, payload, code = standin.execute(self._user(params), params, query)
                self.send_response(status)
                if code is not None:
                    self.send_header("X-ClickHouse-Exception-Code", str(code))
                self.send_header("X-ClickHouse-Summary", "{}")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _user(self, params: dict[str, str]) -> str:
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    return base64.b64decode(auth[6:]).decode().split(":", 1)[0]
                return self.headers.get("X-ClickHouse-User") or params.get("user", "default")

        self._keep_alive = chdb.connect(os.path.realpath(self.engine_path))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        if self._keep_alive is not None:
            self._keep_alive.close()
            self._keep_alive = None

    def execute(self, user: str, params: dict[str, str], query: str) -> tuple[int, bytes, int | None]:
        role, database = params.get("role"), params.get("database")
        self.requests.append(Request(user, role, database, query))
        if ACCESS_DDL.match(query):
            return 200, b"", None
        ungranted = self.ungranted_column is not None and self.ungranted_column in query
        if role is not None and (role != f"{database}_reader" or ungranted):
            text = (
                f"Code: 497. DB::Exception: {user}: Not enough privileges with role {role}. (ACCESS_DENIED)"
            )
            return 500, text.encode(), 497
        settings = {k: v for k, v in params.items() if k not in _TRANSPORT and not k.startswith("param_")}
        bound = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
        match = _FORMAT.search(query)
        fmt = match[1] if match else params.get("default_format", "TabSeparated")
        with self._engine_lock:
            return self._run(database, settings, bound, query, fmt)

    def _run(
        self, database: str | None, settings: dict[str, str], bound: dict[str, str], query: str, fmt: str
    ) -> tuple[int, bytes, int | None]:
        connection = chdb.connect(os.path.realpath(self.engine_path))
        try:
            if database:
                connection.query(f"USE `{database}`", "TabSeparated")
            for name, value in settings.items():
                connection.query(f"SET {name} = '{value}'", "TabSeparated")
            result = connection.query(query, fmt, params=bound or None)
            return 200, bytes(result.bytes()), None
        except Exception as exc:
            text = str(exc)
            found = _CODE.search(text)
            return 500, text.encode(), int(found[1]) if found else 1002
        finally:
            connection.close()
