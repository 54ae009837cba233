"""Moderation through the platform against the pipeline called directly, and the worker's memory.

The platform's side is what an integrator gets: each post ``POST``ed to ``/api/v1/moderation/items`` (gunicorn),
stored, queued (Redis), scored by a Celery worker (one process, as docker-compose and ``make demo`` run it), its
result, routes and evidence written to PostgreSQL; the time runs from the first request to the moment every job has
finished. The direct side is ``apps.moderation.inference.score_post`` on the same posts in this process, one after
the other: signals, fusion head and rendered evidence, with nothing stored. Both run on the embedded stack in
``var/bench`` (``VLP_VAR_DIR`` overrides it): PostgreSQL and Redis are started for the run, and a moderation
champion is trained there once, on the generated corpus of ``apps.moderation.demo_corpus`` (scoring costs the same
whatever the model learnt). Text-only posts and posts with images (generated posters that OCR reads, scikit-image's
photos) are timed apart.

After the timed rounds the worker has loaded the whole offline pack (every signal model and the fusion head); its
resident memory is the sum over its processes (the Celery main process and its pool child).
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import random
import socket
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import BenchResult, Figure, Settings, measure_interleaved

logger = logging.getLogger(__name__)

RATIO_TARGET = 0.8
MEMORY_TARGET_GIB = 3.0
VAR_DIR = Path(__file__).resolve().parent.parent / "var" / "bench"
POLL_S = 0.02
JOB_TIMEOUT_S = 600
HOST = "127.0.0.1"
CLIENTS = 8


@dataclass(frozen=True)
class BenchPost:
    text: str
    image: bytes | None = None


def text_posts(count: int, *, seed: int = 0) -> list[BenchPost]:
    """Short generated posts of every kind the demo corpus writes (chat, insults, hate, spam, false cures)."""
    from apps.moderation import demo_corpus

    rng = random.Random(seed)  # noqa: S311 - generated text, not security
    makers = [demo_corpus.ordinary, demo_corpus.offensive, demo_corpus.hateful, demo_corpus.spam]
    makers.append(demo_corpus.misinformation)
    return [BenchPost(makers[index % len(makers)](rng)) for index in range(count)]


def image_posts(count: int) -> list[BenchPost]:
    """The demo's posters with words (OCR reads them) and scikit-image photos, some with a caption, PNG-encoded."""
    from apps.moderation.demo import photo, poster
    from ml.explain.render import png_bytes

    makers = [
        lambda n: BenchPost("", png_bytes(poster(f"WIN A FREE CRUISE {n}"))),
        lambda n: BenchPost(f"our crew on launch day {n}", png_bytes(photo("rocket"))),
        lambda n: BenchPost("", png_bytes(photo("chelsea"))),
        lambda n: BenchPost(f"morning coffee {n}", png_bytes(photo("coffee"))),
        lambda n: BenchPost("", png_bytes(poster(f"BOOK CLUB ON THURSDAY {n}"))),
        lambda n: BenchPost("", png_bytes(photo("astronaut"))),
    ]
    return [makers[index % len(makers)](index) for index in range(count)]


def run_moderation(settings: Settings) -> BenchResult:
    _setup_django()
    champion = _champion()
    key = _api_key()
    sets = {
        "text-only": text_posts(12 if settings.quick else 64),
        "with images": image_posts(4 if settings.quick else 12),
    }
    details: dict[str, Any] = {"champion": champion.label, "posts": {name: len(posts) for name, posts in sets.items()}}
    figures: list[Figure] = []
    with _platform() as (url, worker_pid):
        for name, posts in sets.items():
            logger.info("moderation %s: %d posts, direct and through the API", name, len(posts))
            timings = measure_interleaved(
                {
                    "direct": functools.partial(_direct, posts, champion),
                    "direct_batched": functools.partial(_direct_batched, posts, champion),
                    "api": functools.partial(_through_api, url, key, posts),
                },
                warmup=settings.warmup,
                repeats=settings.long_repeats,
            )
            rates = {path: len(posts) / timing.median_s for path, timing in timings.items()}
            details[name] = {
                **{path: timing.to_dict() for path, timing in timings.items()},
                "items_per_s": rates,
            }
            for path, what in (("direct", "one post per call"), ("direct_batched", "all posts in one call")):
                ratio = rates["api"] / rates[path]
                figures.append(
                    Figure(
                        f"moderation API/{path.replace('_', ' ')} ({name})",
                        ratio,
                        "x",
                        target=f">= {RATIO_TARGET}x",
                        met=ratio >= RATIO_TARGET,
                        note=f"{rates['api']:.1f} vs {rates[path]:.1f} items/s, {len(posts)} posts, direct {what}",
                    )
                )
        memory = _worker_memory(worker_pid)
    details["worker_memory"] = memory
    details["models_used"] = _models_used()
    gib = memory["rss_bytes"] / 2**30
    figures.append(
        Figure(
            "moderation worker RSS, offline pack loaded",
            gib,
            "GiB",
            target=f"<= {MEMORY_TARGET_GIB:g} GiB",
            met=gib <= MEMORY_TARGET_GIB,
            note=f"{len(memory['processes'])} processes; models: {', '.join(sorted(details['models_used']))}",
        )
    )
    return BenchResult(figures=figures, details=details)


def _setup_django() -> None:
    """The embedded stack in ``var/bench``, shared with the web and worker processes this benchmark starts."""
    import django

    os.environ.setdefault("VLP_VAR_DIR", str(VAR_DIR))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vlplatform.settings")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["VLP_API_KEY_RATE_PER_MINUTE"] = "1000000"  # the benchmark measures scoring, not the rate limit
    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


def _champion() -> Any:
    from apps.moderation.demo_corpus import write_corpus
    from apps.moderation.services import FUSION_MODEL_NAME
    from apps.moderation.training import moderation_train
    from apps.registry.selectors import NoChampion, model_champion

    try:
        return model_champion(name=FUSION_MODEL_NAME)
    except NoChampion:
        logger.info("training a moderation champion on the generated corpus (once per var/bench)")
        with tempfile.TemporaryDirectory() as folder:
            moderation_train(data_dirs=[write_corpus(Path(folder), per_class=80)])
        return model_champion(name=FUSION_MODEL_NAME)


def _api_key() -> str:
    from apps.accounts.roles import Role
    from apps.accounts.services import api_key_create, user_ensure_with_roles

    user = user_ensure_with_roles(
        username="bench-integrator", password=base64.b64encode(os.urandom(18)).decode(), roles=[Role.MODERATOR.value]
    )
    _, raw = api_key_create(user=user, name="bench", scopes=["moderation:read", "moderation:write"])
    return raw


@contextmanager
def _platform() -> Iterator[tuple[str, int]]:
    """gunicorn and one Celery worker on a free port; yields (URL, the worker's pid)."""
    from vlplatform.processes import start, stop_processes, wait_ready, web_command, worker_command

    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    url = f"http://{HOST}:{port}"
    from django.conf import settings

    logs = Path(settings.VLP_VAR_DIR) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "web.log").open("wb") as web_log, (logs / "worker.log").open("wb") as worker_log:
        web = start(web_command(HOST, port), stdout=web_log.fileno())
        worker = start(worker_command("bench@%h", loglevel="WARNING"), stdout=worker_log.fileno())
        try:
            wait_ready(url, [web, worker])
            yield url, worker.pid
        finally:
            stop_processes([web, worker])


def _direct(posts: Sequence[BenchPost], champion: Any) -> None:
    from apps.moderation import inference

    for post in posts:
        inference.score_post(text=post.text, image=post.image, fusion=champion)


def _direct_batched(posts: Sequence[BenchPost], champion: Any) -> None:
    from apps.moderation import inference

    inference.score_posts([(post.text, post.image) for post in posts], fusion=champion)


def _through_api(url: str, key: str, posts: Sequence[BenchPost]) -> None:
    """POST every post from ``CLIENTS`` threads (integrators send concurrently; gunicorn serves 2 x 4 at once), then
    wait until every job has finished; a failed job ends the benchmark."""
    from apps.jobs.models import InferenceJob, JobStatus

    def submit(post: BenchPost) -> str:
        body: dict[str, Any] = {"text": post.text}
        if post.image is not None:
            body["image_base64"] = base64.b64encode(post.image).decode()
        request = urllib.request.Request(  # noqa: S310 - our own URL
            f"{url}/api/v1/moderation/items",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "X-API-Key": key},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - our own URL
            return str(json.loads(response.read())["job_id"])

    with ThreadPoolExecutor(CLIENTS) as pool:
        job_ids = list(pool.map(submit, posts))
    deadline = time.monotonic() + JOB_TIMEOUT_S
    pending = InferenceJob.objects.filter(pk__in=job_ids).exclude(status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED])
    while pending.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"moderation jobs did not finish within {JOB_TIMEOUT_S} s")
        time.sleep(POLL_S)
    failed = InferenceJob.objects.filter(pk__in=job_ids, status=JobStatus.FAILED).first()
    if failed is not None:
        raise RuntimeError(f"moderation job {failed.pk} failed: {failed.error}")


def _worker_memory(pid: int) -> dict[str, Any]:
    import psutil

    main = psutil.Process(pid)
    processes = [main, *main.children(recursive=True)]
    rows = []
    for process in processes:
        info = process.memory_full_info()
        rows.append({"pid": process.pid, "cmdline": " ".join(process.cmdline()[:6]), "rss": info.rss, "uss": info.uss})
    return {"rss_bytes": sum(row["rss"] for row in rows), "processes": rows}


def _models_used() -> list[str]:
    """The model versions the last scored result names (roles -> name@version)."""
    from apps.moderation.models import ModerationResult

    latest = ModerationResult.objects.exclude(model_versions={}).order_by("-created_at").first()
    return sorted(latest.model_versions.values()) if latest else []
