"""The platform's long-running processes (gunicorn, a Celery worker) started as children, for ``make demo`` and the
moderation benchmark: each child leads its own process group, so a terminal's Ctrl-C reaches only the parent,
which stops them in order."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def web_command(host: str, port: int, *, workers: int = 2, threads: int = 4) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "vlplatform.wsgi:application",
        "--bind",
        f"{host}:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--access-logfile",
        "-",
    ]


def worker_command(
    hostname: str, *, concurrency: int = 1, loglevel: str = "INFO", extra: Sequence[str] = ()
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "vlplatform",
        "worker",
        "-Q",
        "inference,default",
        "--concurrency",
        str(concurrency),
        "--loglevel",
        loglevel,
        "--hostname",
        hostname,
        *extra,
    ]


def start(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdout: int | None = None,
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        list(command),
        cwd=BASE_DIR,
        env=dict(env) if env is not None else None,
        stdout=stdout,
        stderr=subprocess.STDOUT if stdout is not None else None,
        start_new_session=True,
    )


def stop_processes(processes: Sequence[subprocess.Popen[bytes]], *, grace_s: float = 20) -> None:
    """SIGTERM each process group, and SIGKILL a group that has not gone within ``grace_s``."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_ready(url: str, processes: Sequence[subprocess.Popen[bytes]], *, timeout: float = 180) -> None:
    """Until ``url``/readyz answers 200; a child that exits first ends the wait with its exit status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise SystemExit(f"{process.args!r} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:  # noqa: S310 - our own URL
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    raise SystemExit(f"{url}/readyz did not answer 200 within {timeout:.0f} s")
