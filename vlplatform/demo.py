"""``make demo``: the platform on its embedded stack, with one demo user per role.

Migrates, creates the demo users, registers the packaged MiniLM as champion, trains a moderation model when there is
none and seeds a few dozen posts to review (``apps.moderation.demo``), then starts the web server
(gunicorn) and a Celery worker, waits until ``/readyz`` answers 200, and prints the URL and logins. Ctrl-C
stops every process it started; the embedded PostgreSQL and Redis stop with the last process using them.
Running it again reuses ``./var``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

import django

BASE_DIR = Path(__file__).resolve().parent.parent
DEMO_PASSWORD_SUFFIX = "-demo-pass"  # noqa: S105 - printed for the local demo on purpose


def _prepare() -> list[tuple[str, str, str]]:
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from apps.accounts.roles import Role
    from apps.accounts.services import user_ensure_with_roles
    from apps.moderation.demo import demo_moderation_setup
    from apps.registry.models import ModelVersion
    from apps.registry.services import model_version_promote, model_version_register, model_version_verify
    from ml.specs import load_spec

    call_command("migrate", interactive=False, verbosity=0)
    logins = []
    for role in Role:
        username, password = role.value, f"{role.value}{DEMO_PASSWORD_SUFFIX}"
        user_ensure_with_roles(username=username, password=password, roles=[role.value])
        logins.append((role.value, username, password))
    spec = load_spec("minilm-l6-v2")
    if not ModelVersion.objects.filter(name=spec.name).exists():
        version = model_version_register(spec=spec.to_dict(), actor=None, notes="packaged with the demo")
        version = model_version_verify(version=version, actor=None)
        model_version_promote(version=version, actor=None, reason="demo setup")
    sys.stdout.write("demo: moderation model and posts (the first run trains a model: about a minute)\n")
    sys.stdout.flush()
    moderator = User.objects.get(username=Role.MODERATOR.value)
    sys.stdout.write(f"demo: {demo_moderation_setup(integrator=moderator)}\n")
    return logins


def _wait_ready(url: str, processes: list[subprocess.Popen[bytes]], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise SystemExit(f"demo: {process.args!r} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:  # noqa: S310 - our own URL
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    raise SystemExit(f"demo: {url}/readyz did not answer 200 within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vlplatform.settings")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    django.setup()
    logins = _prepare()

    python = sys.executable
    processes = [
        subprocess.Popen(
            [
                python,
                "-m",
                "gunicorn",
                "vlplatform.wsgi:application",
                "--bind",
                f"{args.host}:{args.port}",
                "--workers",
                "2",
                "--threads",
                "4",
                "--access-logfile",
                "-",
            ],
            cwd=BASE_DIR,
            start_new_session=True,
        ),
        subprocess.Popen(
            [
                python,
                "-m",
                "celery",
                "-A",
                "vlplatform",
                "worker",
                "-Q",
                "inference,default",
                "--concurrency",
                "1",
                "--loglevel",
                "INFO",
                "--hostname",
                "demo@%h",
            ],
            cwd=BASE_DIR,
            start_new_session=True,
        ),
    ]

    def stop(signum: int, frame: FrameType | None) -> None:
        # Each child leads its own process group (so a terminal's Ctrl-C reaches only this process, which then
        # stops the children in order): SIGTERM the group, and SIGKILL it if it has not gone within 20 s.
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        raise SystemExit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    url = f"http://{args.host}:{args.port}"
    _wait_ready(url, processes)
    lines = [
        f"\nvlplatform is running at {url}/  (Ctrl-C stops it)\n",
        "demo logins (role: username / password):",
    ]
    lines += [f"  {role:<13} {username} / {password}" for role, username, password in logins]
    lines += [f"API docs: {url}/api/docs/   readiness: {url}/readyz\n"]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    while True:
        for process in processes:
            if process.poll() is not None:
                sys.stdout.write(f"demo: {process.args!r} exited with {process.returncode}; stopping\n")
                stop(signal.SIGTERM, None)
        time.sleep(1)


if __name__ == "__main__":
    main()
