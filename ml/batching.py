"""Micro-batching: many threads submit single items, one worker thread runs them through ``fn`` in batches.

A batched forward pass costs little more than a single one, so concurrent requests (web workers encoding one query
each) are gathered: the worker takes the first pending item, waits up to ``max_wait_ms`` for more until
``max_batch_size``, calls ``fn`` once, and resolves each caller's future with its own result.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True)
class BatchStats:
    """Counters since the runner was created; ``failed_batches`` are those where ``fn`` raised or miscounted."""

    batches: int
    items: int
    failed_batches: int
    largest_batch: int

    @property
    def mean_batch_size(self) -> float:
        return self.items / self.batches if self.batches else 0.0


class BatchRunner(Generic[Item, Result]):
    """Run ``fn(list_of_items) -> list_of_results`` (same length, same order) over items submitted one at a time.

    Thread-safe. The daemon worker thread starts on the first submit. If ``fn`` raises, every future of that batch
    gets the exception and the runner keeps serving. ``close()`` (or leaving a ``with`` block) runs everything
    already submitted, then stops the worker; submitting afterwards raises ``RuntimeError``.
    """

    def __init__(
        self,
        fn: Callable[[list[Item]], Sequence[Result]],
        *,
        max_batch_size: int = 16,
        max_wait_ms: float = 5,
        name: str = "batch-runner",
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must not be negative, got {max_wait_ms}")
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.name = name
        self._pending: deque[tuple[Item, Future[Result]]] = deque()
        self._condition = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False
        self._batches = 0
        self._items = 0
        self._failed_batches = 0
        self._largest_batch = 0

    def submit(self, item: Item) -> Future[Result]:
        """Queue ``item``; the returned future resolves to its result or to the batch's exception."""
        future: Future[Result] = Future()
        with self._condition:
            if self._closed:
                raise RuntimeError(f"{self.name} is closed")
            if self._worker is None:
                self._worker = threading.Thread(target=self._serve, name=self.name, daemon=True)
                self._worker.start()
            self._pending.append((item, future))
            self._condition.notify()
        return future

    def run(self, item: Item, timeout: float | None = None) -> Result:
        """Submit ``item`` and block until its result (``TimeoutError`` after ``timeout`` seconds)."""
        return self.submit(item).result(timeout)

    def map(self, items: Iterable[Item], timeout: float | None = None) -> list[Result]:
        """Submit every item, then gather the results in order; ``timeout`` bounds the whole wait."""
        futures = [self.submit(item) for item in items]
        deadline = None if timeout is None else time.monotonic() + timeout
        return [f.result(None if deadline is None else max(0.0, deadline - time.monotonic())) for f in futures]

    def stats(self) -> BatchStats:
        """A snapshot of the batch counters, for benchmarks and health pages."""
        with self._condition:
            return BatchStats(
                batches=self._batches,
                items=self._items,
                failed_batches=self._failed_batches,
                largest_batch=self._largest_batch,
            )

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting items, run those already submitted, and wait (up to ``timeout``) for the worker to end."""
        with self._condition:
            self._closed = True
            self._condition.notify()
            worker = self._worker
        # fn may itself call close(); the worker cannot wait for its own end.
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)

    def __enter__(self) -> BatchRunner[Item, Result]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _serve(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run_batch(batch)

    def _next_batch(self) -> list[tuple[Item, Future[Result]]] | None:
        """Wait for a first item, then gather until full or ``max_wait`` passes; ``None`` once closed and drained."""
        with self._condition:
            while not self._pending:
                if self._closed:
                    return None
                self._condition.wait()
            deadline = time.monotonic() + self.max_wait_s
            # A closing runner drains at once instead of waiting for company that cannot come.
            while len(self._pending) < self.max_batch_size and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
            size = min(len(self._pending), self.max_batch_size)
            return [self._pending.popleft() for _ in range(size)]

    def _run_batch(self, batch: list[tuple[Item, Future[Result]]]) -> None:
        # A caller may have cancelled while waiting; its item is dropped rather than computed for nobody.
        live = [(item, future) for item, future in batch if future.set_running_or_notify_cancel()]
        if not live:
            return
        items = [item for item, _ in live]
        error: BaseException | None = None
        results: list[Result] = []
        try:
            results = list(self.fn(items))
            if len(results) != len(items):
                error = ValueError(
                    f"{self.name}: fn returned {len(results)} results for a batch of {len(items)} items; "
                    "it must return exactly one result per item, in order"
                )
        # Like ThreadPoolExecutor, hand any exception to the callers instead of killing the worker.
        except BaseException as raised:
            error = raised
        with self._condition:
            self._batches += 1
            self._items += len(items)
            self._largest_batch = max(self._largest_batch, len(items))
            if error is not None:
                self._failed_batches += 1
        if error is not None:
            logger.debug("%s: batch of %d failed: %r", self.name, len(items), error)
            for _, future in live:
                future.set_exception(error)
            return
        for (_, future), result in zip(live, results, strict=True):
            future.set_result(result)
