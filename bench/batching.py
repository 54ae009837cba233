"""``BatchRunner`` against a direct batched call: the same items, the same batch size, items/s compared.

The runner's side is what the platform does under load: ``clients`` threads (web workers, Celery threads) each ask for
one embedding at a time and wait for it before asking for the next, and one long-lived runner (the platform keeps one
per model) gathers their items into batches of up to ``max_batch_size``. The direct side is one ``encode_*`` call
over all items in batches of the same size on the caller's thread, the best any caller could do with all items in
hand; the same call on a fresh thread is timed too, since the runner computes on a thread of its own.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, TypeVar, cast

import numpy as np

import ml
from bench import BenchResult, Figure, Settings, measure_interleaved
from bench.encoders import synthetic_captions, synthetic_images
from ml.batching import BatchRunner
from ml.encoders.clip import OpenClipEncoder

logger = logging.getLogger(__name__)

RATIO_TARGET = 0.8
MAX_BATCH_SIZE = 16
MAX_WAIT_MS = 5.0
CLIENTS = 16
TEXT_MODEL = "minilm-l6-v2"

Item = TypeVar("Item")
Result = TypeVar("Result")


def make_runner(
    encode: Callable[[list[Item]], np.ndarray],
    *,
    max_batch_size: int = MAX_BATCH_SIZE,
    max_wait_ms: float = MAX_WAIT_MS,
) -> BatchRunner[Item, np.ndarray]:
    """A runner over ``encode`` (an ``encode_texts`` or ``encode_images``), as the platform keeps one per model."""
    # An [N, D] array is what BatchRunner needs, N rows in order; its type hint asks for a Sequence.
    rows = cast(Callable[[list[Item]], Sequence[np.ndarray]], encode)
    return BatchRunner(rows, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, name="bench-runner")


def encode_through_runner(
    runner: BatchRunner[Item, np.ndarray], items: Sequence[Item], *, clients: int = CLIENTS
) -> np.ndarray:
    """Embed ``items`` with ``clients`` threads each submitting one item at a time; rows in ``items``' order."""
    results: list[np.ndarray | None] = [None] * len(items)
    errors: list[BaseException] = []

    def client(offset: int) -> None:
        try:
            for index in range(offset, len(items), clients):
                results[index] = runner.run(items[index])
        except BaseException as error:  # handed to the main thread, which raises it
            errors.append(error)

    threads = [threading.Thread(target=client, args=(offset,), name=f"client-{offset}") for offset in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return np.stack([row for row in results if row is not None])


def call_in_thread(call: Callable[[], Result]) -> Result:
    """``call()`` run on a fresh thread; its result, or its exception raised here."""
    outcome: list[Result] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(call())
        except BaseException as error:  # handed to the calling thread, which raises it
            errors.append(error)

    thread = threading.Thread(target=target, name="direct-call")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return outcome[0]


def run_batching(settings: Settings, *, image_encoder: OpenClipEncoder) -> BenchResult:
    """Runner vs direct items/s for texts (the packaged MiniLM) and images (the ViT-B-32)."""
    result = BenchResult()
    text_encoder = ml.load(TEXT_MODEL)
    cases: dict[str, tuple[Callable[..., np.ndarray], Sequence[Any]]] = {
        f"texts ({TEXT_MODEL})": (text_encoder.encode_texts, synthetic_captions(32 if settings.quick else 256)),
        f"images ({image_encoder.spec.name})": (
            image_encoder.encode_images,
            synthetic_images(16 if settings.quick else 64),
        ),
    }
    for label, (encode, items) in cases.items():
        with make_runner(encode) as runner:
            # The first direct call and the first pass through the runner are the warm-up. The runner lives across
            # the timed passes, as in the platform, so its worker thread is not started anew each time.
            direct_output = encode(items, batch_size=MAX_BATCH_SIZE)
            runner_output = encode_through_runner(runner, items)
            direct_call = functools.partial(encode, items, batch_size=MAX_BATCH_SIZE)
            timings = measure_interleaved(
                {
                    "direct": direct_call,
                    "direct_worker_thread": functools.partial(call_in_thread, direct_call),
                    "runner": functools.partial(encode_through_runner, runner, items),
                },
                warmup=0,
                repeats=settings.long_repeats,
            )
        stats = runner.stats()
        direct, through = timings["direct"], timings["runner"]
        ratio = direct.median_s / through.median_s
        result.details[label] = {
            "items": len(items),
            "clients": CLIENTS,
            "max_batch_size": MAX_BATCH_SIZE,
            "max_wait_ms": MAX_WAIT_MS,
            **{name: {**run.to_dict(), "items_per_s": len(items) / run.median_s} for name, run in timings.items()},
            # Over every pass through the runner, warm-up included.
            "runner_stats": {**asdict(stats), "mean_batch_size": stats.mean_batch_size},
            "max_abs_difference": float(np.abs(direct_output - runner_output).max()),
            "ratio": ratio,
            "ratio_to_direct_on_worker_thread": timings["direct_worker_thread"].median_s / through.median_s,
        }
        logger.info("%s: runner/direct %.2f (mean batch %.1f)", label, ratio, stats.mean_batch_size)
        result.figures.append(
            Figure(
                f"BatchRunner/direct {label}",
                ratio,
                "x",
                target=f">= {RATIO_TARGET}x",
                met=ratio >= RATIO_TARGET,
                note=f"{len(items) / through.median_s:.1f} vs {len(items) / direct.median_s:.1f} items/s "
                f"(direct on a worker thread {len(items) / timings['direct_worker_thread'].median_s:.1f}), "
                f"mean batch {stats.mean_batch_size:.1f}",
            )
        )
    return result
