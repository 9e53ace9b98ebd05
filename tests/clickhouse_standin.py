"""A tiny HTTP server that answers clickhouse-connect as a ClickHouse server would: enough of the
client's start-up queries to connect, then INSERTs answered with queued error answers in
ClickHouse's real format (`X-ClickHouse-Exception-Code` header, `Code: N. DB::Exception: ...
(NAME)` body), and 200 once the queue is empty.

No ClickHouse server installs here (docs FIELD-NOTES), and chdb cannot be made to answer most of
these codes on demand; the issue allows this stand-in for server-side error answers only.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


@dataclass(frozen=True)
class ErrorAnswer:
    code: int
    name: str
    message: str
    status: int = 500

    def body(self) -> bytes:
        return (
            f"Code: {self.code}. DB::Exception: {self.message}. ({self.name}) "
            "(version 24.8.4.13 (official build))\n"
        ).encode()


NOT_ENOUGH_SPACE = ErrorAnswer(
    243, "NOT_ENOUGH_SPACE", "Cannot reserve 1.00 MiB, not enough space", status=507
)
TOO_MANY_PARTS = ErrorAnswer(
    252, "TOO_MANY_PARTS", "Too many parts (3001 with average size of 1.00 KiB) in table 'hw_x.events'"
)
MEMORY_LIMIT_EXCEEDED = ErrorAnswer(
    241, "MEMORY_LIMIT_EXCEEDED", "Memory limit (total) exceeded: would use 3.50 GiB"
)
TABLE_IS_READ_ONLY = ErrorAnswer(242, "TABLE_IS_READ_ONLY", "Table is in readonly mode")
UNKNOWN_DATABASE = ErrorAnswer(81, "UNKNOWN_DATABASE", "Database hw_x does not exist", status=404)
TIMEOUT_EXCEEDED = ErrorAnswer(159, "TIMEOUT_EXCEEDED", "Timeout exceeded: elapsed 30.1 seconds")
QUERY_WAS_CANCELLED = ErrorAnswer(394, "QUERY_WAS_CANCELLED", "Query was cancelled")
ABORTED = ErrorAnswer(236, "ABORTED", "Server shutting down")
TYPE_MISMATCH = ErrorAnswer(53, "TYPE_MISMATCH", "Type mismatch in Native block", status=400)


class ClickHouseStandIn:
    def __init__(self) -> None:
        self.errors: deque[ErrorAnswer] = deque()
        self.inserts: list[bytes] = []  # bodies of the INSERTs answered 200
        self.refused = 0
        self._lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._answer(b"")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else self._chunked()
                query = parse_qs(urlparse(self.path).query).get("query", [""])[0]
                text = query or body.decode(errors="replace")
                if "version()" in text:
                    self._answer(b"24.8.4.13\tUTC\n")
                elif text.lstrip().upper().startswith("INSERT"):  # the statement, then the data
                    with standin._lock:
                        error = standin.errors.popleft() if standin.errors else None
                        if error is None:
                            standin.inserts.append(body)
                        else:
                            standin.refused += 1
                    if error is None:
                        self._answer(b"")
                    else:
                        self._answer(
                            error.body(), error.status, {"X-ClickHouse-Exception-Code": str(error.code)}
                        )
                else:  # system.settings and the protocol probe: an empty answer does
                    self._answer(b"")

            def _chunked(self) -> bytes:
                data = b""
                while True:
                    size = int(self.rfile.readline().strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()

            def _answer(self, body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "text/plain; charset=UTF-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://default:@{host!s}:{port}"

    def __enter__(self) -> ClickHouseStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
