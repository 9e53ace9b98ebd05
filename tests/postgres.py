"""A throwaway PostgreSQL 15 cluster from Debian's binaries, the import source of the Meltano tests.

`postgres_cluster` (one per test session and xdist worker) runs `initdb` and `postgres` as the
`postgres` user (the tests run as root, which PostgreSQL refuses), with its data directory and unix
socket in a temporary directory, on a free loopback port, and removes everything at teardown.
`postgres_database` gives each test a database of its own in it. Without the binaries the tests
are skipped on a developer's machine, but fail in CI (`.ci/run` installs Debian's postgresql).
tests/conftest.py registers the fixtures.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest

# Debian's postgresql-15; another installation through HEADWATER_POSTGRES_BIN.
POSTGRES_BIN = Path(os.environ.get("HEADWATER_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
OS_USER = "postgres"
STARTUP_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class PostgresCluster:
    host: str
    port: int
    user: str

    def dsn(self, database: str) -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={database}"

    def connect(self, database: str) -> Any:
        """A psycopg2 connection in autocommit mode."""
        connection = psycopg2.connect(self.dsn(database))
        connection.autocommit = True
        return connection


@dataclass(frozen=True, slots=True)
class PostgresDatabase:
    cluster: PostgresCluster
    name: str

    def connect(self) -> Any:
        return self.cluster.connect(self.name)

    def execute(self, sql: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        """Runs one statement; its rows, if it returns any."""
        connection = self.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return list(cursor.fetchall()) if cursor.description is not None else []
        finally:
            connection.close()

    def tap_config(self) -> dict[str, Any]:
        """tap-postgres' connection settings for this database (trust authentication on loopback)."""
        return {
            "host": self.cluster.host,
            "port": self.cluster.port,
            "user": self.cluster.user,
            "password": "",
            "database": self.name,
        }


def _missing_binaries() -> str | None:
    for name in ("initdb", "postgres"):
        if not (POSTGRES_BIN / name).exists():
            return f"{POSTGRES_BIN / name} is missing (apt-get install postgresql, or HEADWATER_POSTGRES_BIN)"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_postgres() -> dict[str, Any]:
    """subprocess arguments that run a command as the postgres user when we are root (PostgreSQL
    refuses to run as root). Not through runuser: signals must reach postgres itself."""
    if os.geteuid() == 0:
        return {
            "user": OS_USER,
            "group": OS_USER,
            "extra_groups": [],
            "env": {**os.environ, "HOME": str(Path(tempfile.gettempdir()))},
        }
    return {}


def _wait_ready(process: subprocess.Popen[bytes], cluster: PostgresCluster, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"postgres exited with {process.returncode}: {log.read_text()[-3000:]}")
        try:
            cluster.connect("postgres").close()
            return
        except psycopg2.OperationalError as error:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"postgres not ready after {STARTUP_SECONDS} s: {log.read_text()[-3000:]}"
                ) from error
            time.sleep(0.1)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    missing = _missing_binaries()
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}: .ci/run installs Debian's postgresql")
        pytest.skip(missing)
    root = Path(tempfile.mkdtemp(prefix="hw-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(root, OS_USER, OS_USER)
    data, sockets, log = root / "data", root / "sockets", root / "postgres.log"
    initdb = subprocess.run(
        [
            str(POSTGRES_BIN / "initdb"),
            "--pgdata",
            str(data),
            "--username",
            OS_USER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-locale",
            "--no-sync",  # a throwaway cluster: nothing to keep after a crash
        ],
        capture_output=True,
        cwd=root,
        text=True,
        timeout=120,
        **_as_postgres(),
    )
    assert initdb.returncode == 0, initdb.stdout + initdb.stderr
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(sockets, OS_USER, OS_USER)
    process: subprocess.Popen[bytes] | None = None
    try:
        for _attempt in range(3):  # another process may take the free port before postgres binds it
            cluster = PostgresCluster(host="127.0.0.1", port=_free_port(), user=OS_USER)
            with log.open("ab") as log_file:
                process = subprocess.Popen(
                    [
                        str(POSTGRES_BIN / "postgres"),
                        "-D",
                        str(data),
                        "-p",
                        str(cluster.port),
                        "-k",
                        str(sockets),
                        "-c",
                        "listen_addresses=127.0.0.1",
                        "-c",
                        "fsync=off",
                        "-c",
                        "synchronous_commit=off",
                        "-c",
                        "full_page_writes=off",
                        "-c",
                        "TimeZone=UTC",
                    ],
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    cwd=root,
                    **_as_postgres(),
                )
            try:
                _wait_ready(process, cluster, log)
                break
            except RuntimeError:
                if process.poll() is None:
                    raise
                process = None
        else:
            raise RuntimeError(f"postgres did not start: {log.read_text()[-3000:]}")
        yield cluster
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_database(postgres_cluster: PostgresCluster) -> Iterator[PostgresDatabase]:
    """An empty database of the session's cluster, dropped after the test."""
    name = f"source_{uuid.uuid4().hex[:12]}"
    admin = postgres_cluster.connect("postgres")
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield PostgresDatabase(postgres_cluster, name)
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        admin.close()
