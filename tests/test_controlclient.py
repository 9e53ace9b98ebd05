"""The CLI's control client never hands the admin token to another origin."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import click
import pytest

from headwater.ops.controlclient import ControlClient

TOKEN = "admin-token-" + "s" * 20


class _Recorder(BaseHTTPRequestHandler):
    seen: list[str | None] = []

    def do_GET(self) -> None:
        _Recorder.seen.append(self.headers.get("Authorization"))
        body = b'{"projects": [], "next_after": null}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


def _serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def elsewhere() -> Iterator[str]:
    _Recorder.seen = []
    yield from _serve(_Recorder)


@pytest.fixture
def redirecting(elsewhere: str) -> Iterator[str]:
    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(307)
            self.send_header("Location", elsewhere + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    yield from _serve(Redirect)


def test_a_redirect_is_an_error_and_the_token_stays_home(redirecting: str, elsewhere: str) -> None:
    client = ControlClient(redirecting, TOKEN)
    with pytest.raises(click.ClickException, match="redirect"):
        client.list_projects()
    assert _Recorder.seen == [], "the admin token was sent to the redirect's target"
