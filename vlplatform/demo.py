"""``make demo``: the platform on its embedded stack, with one demo user per role.

Migrates, creates the demo users, registers the packaged MiniLM as champion, trains a moderation model when there is
none and seeds a few dozen posts to review (``apps.moderation.demo``), then starts the web server
(gunicorn) and a Celery worker, waits until ``/readyz`` answers 200, and prints the URL and logins. Ctrl-C
stops every process it started; the embedded PostgreSQL and Redis stop with the last process using them.
Running it again reuses ``./var``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from types import FrameType

import django

from vlplatform.processes import start, stop_processes, wait_ready, web_command, worker_command

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vlplatform.settings")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    django.setup()
    logins = _prepare()

    processes = [
        start(web_command(args.host, args.port)),
        start(worker_command("demo@%h")),
    ]

    def stop(signum: int, frame: FrameType | None) -> None:
        stop_processes(processes)
        raise SystemExit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    url = f"http://{args.host}:{args.port}"
    try:
        wait_ready(url, processes)
    except SystemExit as error:
        stop_processes(processes)
        raise SystemExit(f"demo: {error}") from None
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
