"""`make demo` on a fresh data directory: serves /readyz with 200, prints logins, and Ctrl-C stops everything."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.worker
def test_make_demo_serves_readyz_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    env["VLP_VAR_DIR"] = str(tmp_path / "var")
    log = tmp_path / "demo.log"
    demo = subprocess.Popen(
        ["make", "demo", f"PORT={port}"],
        cwd=BASE_DIR,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while "vlplatform is running at" not in log.read_text(errors="replace"):
            assert demo.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(1)
        output = log.read_text()
        assert "ml_admin      ml_admin / ml_admin-demo-pass" in output
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as response:
            assert response.status == 200
        redis_pid = int((tmp_path / "var" / "redis" / "redis.pid").read_text())
        postgres_pid = int((tmp_path / "var" / "pgdata" / "postmaster.pid").read_text().split()[0])
    finally:
        os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends to the whole foreground group
        demo.wait(timeout=90)

    deadline = time.monotonic() + 30
    while (_pid_alive(redis_pid) or _pid_alive(postgres_pid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _pid_alive(redis_pid), "embedded Redis still running after Ctrl-C"
    assert not _pid_alive(postgres_pid), "embedded PostgreSQL still running after Ctrl-C"
    leftovers = subprocess.run(["pgrep", "-f", f"127.0.0.1:{port}"], capture_output=True, text=True).stdout.split()
    assert not leftovers, f"processes still running: {leftovers}"
