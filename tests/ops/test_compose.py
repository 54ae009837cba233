"""Structure of the deployment files (docker-compose.yml, Dockerfile, .dockerignore).

Docker does not run on this project's machines, so the files are checked as data: the compose file through
``yaml.safe_load`` (which resolves the ``x-app``/``x-env`` anchors and ``<<:`` merge keys), the Dockerfile as text.
None of these tests touches the database.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

BASE_DIR = Path(__file__).resolve().parents[2]
COMPOSE_PATH = BASE_DIR / "docker-compose.yml"
DOCKERFILE_PATH = BASE_DIR / "Dockerfile"
DOCKERIGNORE_PATH = BASE_DIR / ".dockerignore"
PYPROJECT_PATH = BASE_DIR / "pyproject.toml"

APP_SERVICES = ("web", "worker", "worker-gpu")
VARIABLE_REFERENCE = re.compile(r"^\$\{[A-Z_][A-Z0-9_]*(?:(?::?[?-])[^}]*)?\}$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    assert COMPOSE_PATH.exists(), f"{COMPOSE_PATH} is missing"
    data = yaml.safe_load(COMPOSE_PATH.read_text())
    assert isinstance(data, dict), "docker-compose.yml does not hold a mapping at the top level"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = compose.get("services")
    assert isinstance(services, dict), "docker-compose.yml has no 'services' mapping"
    return services


@pytest.fixture(scope="module")
def dockerfile() -> str:
    assert DOCKERFILE_PATH.exists(), f"{DOCKERFILE_PATH} is missing"
    return DOCKERFILE_PATH.read_text()


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, whether written as a mapping or as a list of KEY=VALUE."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def command_args(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(arg) for arg in command]


def celery_queues(service: dict[str, Any]) -> set[str]:
    args = command_args(service)
    for index, arg in enumerate(args):
        if arg in ("-Q", "--queues") and index + 1 < len(args):
            return set(args[index + 1].split(","))
        if arg.startswith("--queues="):
            return set(arg.split("=", 1)[1].split(","))
    return set()


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """target path -> named volume (or host path), for short and long volume syntax."""
    result: dict[str, str] = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            result[volume["target"]] = volume.get("source", "")
        else:
            source, _, rest = str(volume).partition(":")
            result[rest.split(":")[0]] = source
    return result


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """dependency -> condition ('service_started' for the list form)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def pyproject_pins() -> dict[str, str]:
    dependencies = tomllib.loads(PYPROJECT_PATH.read_text())["project"]["dependencies"]
    pins = {}
    for requirement in dependencies:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", requirement.strip())
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def test_all_services_exist(services: dict[str, dict[str, Any]]) -> None:
    missing = {"postgres", "redis", "web", "worker", "worker-gpu"} - set(services)
    assert not missing, f"docker-compose.yml lacks services: {sorted(missing)}"


def test_postgres_is_pgvector_with_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    postgres = services["postgres"]
    assert str(postgres.get("image", "")).startswith("pgvector/pgvector:pg16"), (
        f"postgres image is {postgres.get('image')!r}, expected pgvector/pgvector:pg16 (pgvector is required)"
    )
    env = environment(postgres)
    for key in ("POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD"):
        assert env.get(key), f"postgres service does not set {key}"
    assert "pg_isready" in str(postgres.get("healthcheck", {}).get("test")), (
        "postgres healthcheck does not run pg_isready"
    )
    assert mounts(postgres).get("/var/lib/postgresql/data") == "pgdata", (
        "postgres does not keep its data in the named volume pgdata at /var/lib/postgresql/data"
    )


def test_redis_is_redis7_with_persistence(services: dict[str, dict[str, Any]]) -> None:
    redis = services["redis"]
    assert redis.get("image") == "redis:7", f"redis image is {redis.get('image')!r}, expected 'redis:7'"
    args = command_args(redis)
    assert "--appendonly" in args and args[args.index("--appendonly") + 1] == "yes", (
        f"redis command {args} does not turn on --appendonly yes"
    )
    assert "redis-cli" in str(redis.get("healthcheck", {}).get("test")), "redis healthcheck does not run redis-cli ping"
    assert mounts(redis).get("/data") == "redisdata", "redis does not keep its data in the named volume redisdata"


def test_app_services_share_one_image(services: dict[str, dict[str, Any]]) -> None:
    web = services["web"]
    assert web.get("build"), "web does not build from the repository's Dockerfile"
    for name in APP_SERVICES:
        assert services[name].get("image") == web.get("image"), (
            f"{name} runs image {services[name].get('image')!r}, not web's {web.get('image')!r} (anchor not merged?)"
        )
        assert services[name].get("build") == web.get("build"), f"{name} does not build like web"


def test_web_runs_migrations_and_gunicorn_on_8000(services: dict[str, dict[str, Any]]) -> None:
    web = services["web"]
    command = " ".join(command_args(web))
    assert "manage.py migrate --noinput" in command, f"web command does not migrate first: {command!r}"
    assert "gunicorn vlplatform.wsgi:application" in command, f"web command does not start gunicorn: {command!r}"
    assert "0.0.0.0:8000" in command, f"gunicorn does not bind 0.0.0.0:8000: {command!r}"
    assert command.index("migrate") < command.index("gunicorn"), "web starts gunicorn before migrating"
    assert any(str(port).endswith("8000") for port in web.get("ports", [])), "web does not publish port 8000"


def test_web_healthcheck_uses_python_against_healthz(services: dict[str, dict[str, Any]]) -> None:
    test = services["web"].get("healthcheck", {}).get("test")
    assert test, "web has no healthcheck"
    text = " ".join(test) if isinstance(test, list) else str(test)
    assert "/healthz" in text, f"web healthcheck does not hit /healthz: {text!r}"
    assert "urllib" in text and "curl" not in text, f"web healthcheck must use python urllib (no curl): {text!r}"
    if isinstance(test, list) and "-c" in test:
        code = test[test.index("-c") + 1]
        compile(code, "<web healthcheck>", "exec")


def test_worker_consumes_inference(services: dict[str, dict[str, Any]]) -> None:
    args = command_args(services["worker"])
    assert args[:3] == ["celery", "-A", "vlplatform"], f"worker does not run the vlplatform Celery app: {args}"
    assert "inference" in celery_queues(services["worker"]), f"worker does not consume queue 'inference': {args}"


def test_gpu_worker_is_a_profile_reserving_an_nvidia_gpu(services: dict[str, dict[str, Any]]) -> None:
    gpu = services["worker-gpu"]
    assert "gpu" in (gpu.get("profiles") or []), "worker-gpu is not in profile 'gpu' (it would start on every host)"
    queues = celery_queues(gpu)
    assert queues == {"inference"}, f"worker-gpu consumes {sorted(queues)}, expected only 'inference'"
    args = command_args(gpu)
    pool = args[args.index("--pool") + 1] if "--pool" in args else next((a[7:] for a in args if a[:7] == "--pool="), "")
    assert pool == "solo", f"worker-gpu must run --pool solo (never fork after CUDA starts): {args}"
    devices = gpu.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices") or []
    assert any(d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or []) for d in devices), (
        f"worker-gpu does not reserve an nvidia device with capability gpu: {devices}"
    )
    assert environment(gpu).get("VLP_DEVICE") == "cuda", "worker-gpu does not set VLP_DEVICE=cuda"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_reach_postgres_and_redis(services: dict[str, dict[str, Any]], name: str) -> None:
    env = environment(services[name])
    database, broker = urlsplit(env.get("DATABASE_URL", "")), urlsplit(env.get("REDIS_URL", ""))
    assert database.scheme.startswith("postgres") and database.hostname == "postgres", (
        f"{name}: DATABASE_URL {env.get('DATABASE_URL')!r} does not point at host 'postgres'"
    )
    assert broker.scheme == "redis" and broker.hostname == "redis", (
        f"{name}: REDIS_URL {env.get('REDIS_URL')!r} does not point at host 'redis'"
    )
    for key in ("SECRET_KEY", "ALLOWED_HOSTS", "MEDIA_ROOT", "VLP_MODEL_CACHE", "HF_HOME"):
        assert env.get(key), f"{name} does not set {key} (common env not merged?)"
    assert env["HF_HOME"].startswith(env["VLP_MODEL_CACHE"]), f"{name}: HF_HOME lies outside the model cache volume"


def test_no_literal_secrets(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for key, value in environment(service).items():
            if "SECRET" in key or "PASSWORD" in key:
                assert VARIABLE_REFERENCE.match(value), f"{name}: {key} holds a literal value, not a ${{...}} variable"
            if key == "DATABASE_URL":
                password = urlsplit(value).password or ""
                assert not password or VARIABLE_REFERENCE.match(password), (
                    f"{name}: DATABASE_URL embeds a literal password, not ${{POSTGRES_PASSWORD}}"
                )
    assert environment(services["postgres"]).get("POSTGRES_PASSWORD", "").startswith("${POSTGRES_PASSWORD"), (
        "postgres POSTGRES_PASSWORD does not come from ${POSTGRES_PASSWORD}"
    )
    assert environment(services["web"]).get("SECRET_KEY", "").startswith("${SECRET_KEY"), (
        "web SECRET_KEY does not come from ${SECRET_KEY}"
    )


def test_named_volumes_declared_and_mounted(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose.get("volumes") or {})
    missing = {"pgdata", "redisdata", "media", "models"} - declared
    assert not missing, f"named volumes not declared at the top level: {sorted(missing)}"
    for name in APP_SERVICES:
        env, mounted = environment(services[name]), mounts(services[name])
        assert mounted.get(env.get("MEDIA_ROOT", "")) == "media", (
            f"{name}: volume 'media' is not mounted at MEDIA_ROOT {env.get('MEDIA_ROOT')!r} (mounts: {mounted})"
        )
        assert mounted.get(env.get("VLP_MODEL_CACHE", "")) == "models", (
            f"{name}: volume 'models' is not mounted at VLP_MODEL_CACHE {env.get('VLP_MODEL_CACHE')!r}"
        )
    for name, service in services.items():
        for source in mounts(service).values():
            if source and not source.startswith((".", "/", "~", "$")):
                assert source in declared, f"{name} mounts volume {source!r} that is not declared at the top level"


def test_healthy_dependencies_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name in APP_SERVICES:
        deps = depends_on(services[name])
        for needed in ("postgres", "redis"):
            assert deps.get(needed) == "service_healthy", (
                f"{name} does not wait for {needed} with condition service_healthy (has {deps.get(needed)!r})"
            )
    for name, service in services.items():
        for target, condition in depends_on(service).items():
            assert target in services, f"{name} depends on unknown service {target!r}"
            if condition == "service_healthy":
                healthcheck = services[target].get("healthcheck") or {}
                assert healthcheck.get("test") and not healthcheck.get("disable"), (
                    f"{name} waits for {target} to be healthy but {target} has no healthcheck"
                )


def test_dockerfile_pins_torch_like_pyproject(dockerfile: str) -> None:
    torch = set(re.findall(r"\btorch==([^\s\"'\\]+)", dockerfile))
    torchvision = set(re.findall(r"\btorchvision==([^\s\"'\\]+)", dockerfile))
    assert torch == {"2.14.1"}, f"Dockerfile installs torch {sorted(torch)}, expected exactly torch==2.14.1"
    assert torchvision == {"0.29.1"}, (
        f"Dockerfile installs torchvision {sorted(torchvision)}, expected exactly torchvision==0.29.1"
    )
    pins = pyproject_pins()
    assert pins.get("torch") == "2.14.1", f"pyproject.toml pins torch {pins.get('torch')!r}, the Dockerfile 2.14.1"
    assert pins.get("torchvision") == "0.29.1", (
        f"pyproject.toml pins torchvision {pins.get('torchvision')!r}, the Dockerfile 0.29.1"
    )


def dockerfile_instructions(dockerfile: str) -> list[str]:
    """The Dockerfile's instructions, comments dropped and backslash continuations joined."""
    instructions: list[str] = []
    current = ""
    for raw in dockerfile.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        current = (current + " " + line.removesuffix("\\").strip()).strip()
        if not line.endswith("\\"):
            instructions.append(current)
            current = ""
    if current:
        instructions.append(current)
    return instructions


def test_dockerfile_builds_a_non_root_image_from_pyproject(dockerfile: str) -> None:
    instructions = dockerfile_instructions(dockerfile)
    assert instructions[0] == "FROM python:3.11-slim-bookworm", f"Dockerfile base is {instructions[0]!r}"
    install = next((i for i in instructions if "tomllib" in i), "")
    assert install.startswith("RUN") and '["dependencies"]' in install and "pip install" in install, (
        "Dockerfile does not pip install [project].dependencies read from pyproject.toml with tomllib"
    )
    assert any(i.startswith("COPY pyproject.toml") for i in instructions), "Dockerfile does not copy pyproject.toml"
    collect = next((i for i in instructions if i.startswith("RUN") and "collectstatic" in i), "")
    assert collect, "Dockerfile does not run collectstatic"
    before = collect.split("collectstatic", 1)[0]
    for variable in ("DATABASE_URL=", "REDIS_URL=", "SECRET_KEY=", "ALLOWED_HOSTS="):
        assert variable in before, (
            f"collectstatic runs without {variable}... inline: settings.py would start an embedded service or fail"
        )
    users = [i.split(None, 1)[1] for i in instructions if i.startswith("USER ")]
    assert users and users[-1] not in ("root", "0") and users[-1] == "vlp", (
        f"the image does not end as the non-root user vlp (USER lines: {users})"
    )
    assert "EXPOSE 8000" in instructions, "Dockerfile does not EXPOSE 8000"


def test_dockerignore_keeps_local_state_out() -> None:
    assert DOCKERIGNORE_PATH.exists(), f"{DOCKERIGNORE_PATH} is missing"
    entries = {line.strip().removeprefix("**/") for line in DOCKERIGNORE_PATH.read_text().splitlines()}
    missing = {".venv", "var", ".git", "__pycache__", "staticfiles", "*.pyc"} - entries
    assert not missing, f".dockerignore does not exclude {sorted(missing)}"
