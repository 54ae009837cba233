"""`make demo` on a fresh data directory: serves /readyz with 200, prints logins, and Ctrl-C stops everything."""

from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import socket
import subprocess
import time
import urllib.parse
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


def _logged_in(base: str, username: str, password: str) -> urllib.request.OpenerDirector:
    """An opener holding a session of ``username``, logged in through the login form (with its CSRF token)."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    with opener.open(f"{base}/accounts/login/", timeout=30) as response:
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.read().decode())
    assert token is not None
    form = urllib.parse.urlencode({"username": username, "password": password, "csrfmiddlewaretoken": token.group(1)})
    request = urllib.request.Request(f"{base}/accounts/login/", data=form.encode(), headers={"Referer": base})  # noqa: S310 - our own URL
    with opener.open(request, timeout=30) as response:
        assert urllib.parse.urlsplit(response.url).path == "/moderation/", response.url
    return opener


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
        deadline = time.monotonic() + 420  # the first run trains the demo moderation model
        while "vlplatform is running at" not in log.read_text(errors="replace"):
            assert demo.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(1)
        output = log.read_text()
        assert "ml_admin      ml_admin / ml_admin-demo-pass" in output
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as response:
            assert response.status == 200
        assert "demo posts submitted for scoring" in output and "trained moderation-fusion@" in output
        moderator = _logged_in(f"http://127.0.0.1:{port}", "moderator", "moderator-demo-pass")
        deadline = time.monotonic() + 300
        while True:  # the worker scores the seeded posts; those the policies are unsure of wait for a moderator
            with moderator.open(f"http://127.0.0.1:{port}/moderation/", timeout=30) as response:
                queue = response.read().decode()
            waiting = re.search(r'data-testid="queue-default-open">(\d+)<', queue)
            assert waiting is not None, queue[-2000:]
            if int(waiting.group(1)) > 0:
                break
            assert time.monotonic() < deadline, "no demo post reached the review queue"
            time.sleep(3)
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
