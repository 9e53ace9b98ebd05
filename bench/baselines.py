"""Baselines for bench/edge.py: what the edge would cost with no work of its own.

- `quart`: a bare Quart app whose POST /v1/track (and /v1/batch) reads the body, parses it with
  orjson and answers 204: the framework's floor, as the edge was first built on it.
- `asgi`: a bare ASGI callable doing the same (read the body, orjson, 204): the server's floor.

Served like `headwater serve edge` serves the edge: uvicorn on uvloop with httptools, access log
off, no server header, one process per worker bound to the port with SO_REUSEPORT when there are
several. Run one process per worker:

    python bench/baselines.py --app quart --port 8800 [--reuse-port]

It prints `ready pid <pid>` once it accepts connections, and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
import uvicorn
import uvloop
from quart import Quart, Response, request

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

INGEST_PATHS = ("/v1/track", "/v1/batch")


def quart_app() -> Quart:
    app = Quart(__name__, static_folder=None)

    async def ingest() -> Response:
        orjson.loads(await request.get_data())
        return Response(status=204)

    for path in INGEST_PATHS:
        app.add_url_rule(path, path, ingest, methods=["POST"])
    return app


async def asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return  # lifespan is off for this app
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    status = 404
    if scope["method"] == "POST" and scope["path"] in INGEST_PATHS:
        orjson.loads(b"".join(chunks))
        status = 204
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def bind(host: str, port: int, reuse_port: bool) -> socket.socket:
    """As headwater.ops.listeners.bind does for the edge."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


async def serve(app_name: str, sock: socket.socket) -> None:
    app: Any = quart_app() if app_name == "quart" else asgi_app
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        lifespan="on" if app_name == "quart" else "off",
        server_header=False,
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the server stopped during start-up")
        await asyncio.sleep(0.01)
    print(f"ready pid {os.getpid()}", flush=True)
    await task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--app", choices=["quart", "asgi"], required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--reuse-port", action="store_true", help="several processes share the port")
    args = parser.parse_args()
    sock = bind(args.host, args.port, args.reuse_port)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args.app, sock))


if __name__ == "__main__":
    main()
