"""Shared fixtures: users per role, API clients, a private Redis broker and real Celery worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from apps.accounts.roles import Role
from apps.accounts.services import user_ensure_with_roles
from apps.registry.models import ModelVersion
from apps.registry.services import model_version_promote, model_version_register
from ml.specs import load_spec
from vlplatform import embedded
from vlplatform.celery import app as celery_app
from vlplatform.processes import worker_command

os.environ.setdefault("HF_HUB_OFFLINE", "1")
BASE_DIR = Path(__file__).resolve().parent.parent
PASSWORD = "a-long-test-password"


@pytest.fixture(scope="session", autouse=True)
def test_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis of the test session's own, so tests never share a queue with a running demo."""
    server = embedded.EmbeddedRedis(tmp_path_factory.mktemp("broker"))
    url = server.acquire()
    celery_app.conf.broker_url = embedded.celery_broker_url(url)
    settings.REDIS_URL = url
    yield url
    server.release()


@pytest.fixture(scope="session", autouse=True)
def media_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Uploaded and rendered files of the test session go to a folder of its own (workers are given it too)."""
    from django.test import override_settings

    root = tmp_path_factory.mktemp("media")
    with override_settings(MEDIA_ROOT=str(root)):
        yield root


@pytest.fixture
def make_user(db: None) -> Callable[..., object]:
    def make(*roles: str, username: str | None = None):  # type: ignore[no-untyped-def]
        name = username or ("_".join(roles) or "norole")
        return user_ensure_with_roles(username=name, password=PASSWORD, roles=list(roles))

    return make


@pytest.fixture
def client_for(make_user: Callable[..., object]) -> Callable[..., APIClient]:
    """An API client logged in (session) as a new user with the given roles."""

    def make(*roles: str) -> APIClient:
        client = APIClient()
        client.force_login(make_user(*roles))  # type: ignore[arg-type]
        return client

    return make


@pytest.fixture
def minilm_champion(db: None) -> ModelVersion:
    spec = load_spec("minilm-l6-v2")
    version = ModelVersion.objects.filter(name=spec.name, version=spec.version).first()
    if version is None:
        version = model_version_register(spec=spec.to_dict(), actor=None)
    if version.status != "champion":
        version = model_version_promote(version=version, actor=None)
    return version


def worker_database_url() -> str:
    db = connection.settings_dict
    host = quote(db["HOST"], safe="") if db["HOST"].startswith("/") else db["HOST"]
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgresql://{db['USER']}:{quote(db['PASSWORD'] or '')}@{host}{port}/{db['NAME']}"


class WorkerProcess:
    """A real ``celery worker`` process (prefork, one child) in its own process group."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.process = subprocess.Popen(
            worker_command(f"test{time.monotonic_ns()}@%h", extra=["--without-gossip", "--without-mingle"]),
            cwd=BASE_DIR,
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log.read_text()[-3000:]}")
            if "ready." in self.log.read_text():
                return
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool child), as a machine failure would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def start_worker(transactional_db: None, test_broker: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker processes on the test database and broker; all are stopped after the test.

    Time limits are short so that a message whose worker died is delivered again within seconds.
    """
    workers: list[WorkerProcess] = []
    env = {
        **os.environ,
        "DATABASE_URL": worker_database_url(),
        "REDIS_URL": test_broker,
        "SECRET_KEY": "test-only-secret-key-for-worker-processes",
        "ALLOWED_HOSTS": "localhost",
        "CELERY_TASK_TIME_LIMIT": "30",
        "CELERY_VISIBILITY_TIMEOUT": "35",
        "VLP_JOB_LEASE_SECONDS": "30",
        "HF_HUB_OFFLINE": "1",
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
    }

    def start() -> WorkerProcess:
        worker = WorkerProcess(env, tmp_path / f"worker{len(workers)}.log")
        workers.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.stop()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


ROLES = [role.value for role in Role]
