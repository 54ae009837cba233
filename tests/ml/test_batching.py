"""BatchRunner: concurrent callers share batched calls and each gets its own result or the batch's error.

Grouping is made deterministic with gates (an event that holds ``fn`` until every item is queued) rather than with
sleeps, and time bounds are generous, so the tests hold on a loaded two-core machine.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pytest

from ml.batching import BatchRunner

WAIT = 10.0  # seconds: a bound for things that should take milliseconds, never reached unless something is broken


class RecordingDouble:
    """``fn`` for the runner: doubles every item and records each batch it was called with."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.gate = gate
        self.lock = threading.Lock()

    def __call__(self, items: list[int]) -> list[int]:
        if self.gate is not None:
            assert self.gate.wait(WAIT), "the test never opened the gate"
        with self.lock:
            self.batches.append(list(items))
        return [item * 2 for item in items]


def test_concurrent_submits_are_grouped_and_results_reach_their_callers() -> None:
    gate = threading.Event()
    fn = RecordingDouble(gate)
    runner = BatchRunner(fn, max_batch_size=16, max_wait_ms=5, name="test-grouping")
    threads_count, per_thread = 8, 10
    futures: dict[int, list[Future[int]]] = {}
    submitted = threading.Barrier(threads_count + 1)

    def caller(thread_index: int) -> None:
        futures[thread_index] = [runner.submit(thread_index * 1000 + i) for i in range(per_thread)]
        submitted.wait(WAIT)

    threads = [threading.Thread(target=caller, args=(t,)) for t in range(threads_count)]
    for thread in threads:
        thread.start()
    # fn is held at its first call until all 80 items are queued, so the rest must travel in full batches.
    submitted.wait(WAIT)
    gate.set()
    for thread in threads:
        thread.join(WAIT)

    for thread_index, thread_futures in futures.items():
        assert [f.result(WAIT) for f in thread_futures] == [(thread_index * 1000 + i) * 2 for i in range(per_thread)]
    items = threads_count * per_thread
    assert sorted(item for batch in fn.batches for item in batch) == sorted(
        t * 1000 + i for t in range(threads_count) for i in range(per_thread)
    )
    assert all(1 <= len(batch) <= 16 for batch in fn.batches)
    # At most one short first batch, then 16s: 1 + ceil(79 / 16) = 6 calls for 80 items.
    assert len(fn.batches) <= 6
    stats = runner.stats()
    assert (stats.batches, stats.items, stats.failed_batches) == (len(fn.batches), items, 0)
    assert stats.mean_batch_size == pytest.approx(items / len(fn.batches))
    assert stats.largest_batch == 16
    runner.close()


def test_run_and_map_return_results_in_order() -> None:
    with BatchRunner(RecordingDouble(), max_batch_size=4, max_wait_ms=1, name="test-map") as runner:
        assert runner.run(21, timeout=WAIT) == 42
        assert runner.map(range(10), timeout=WAIT) == [i * 2 for i in range(10)]


def test_an_exception_reaches_every_caller_of_the_batch_and_the_next_batch_works() -> None:
    def fails_on_poison(items: list[int]) -> list[int]:
        if -1 in items:
            raise RuntimeError("poisoned batch")
        return [item * 2 for item in items]

    # A long max_wait with a batch size of 3 makes each group of three submits exactly one batch.
    with BatchRunner(fails_on_poison, max_batch_size=3, max_wait_ms=60_000, name="test-errors") as runner:
        poisoned = [runner.submit(item) for item in (1, -1, 2)]
        for future in poisoned:
            with pytest.raises(RuntimeError, match="poisoned batch"):
                future.result(WAIT)
        assert runner.map([3, 4, 5], timeout=WAIT) == [6, 8, 10]
        stats = runner.stats()
        assert (stats.batches, stats.failed_batches, stats.items) == (2, 1, 6)


def test_a_result_count_mismatch_fails_every_caller_clearly() -> None:
    def drops_the_last(items: list[str]) -> list[str]:
        return items[:-1]

    with BatchRunner(drops_the_last, max_batch_size=2, max_wait_ms=60_000, name="test-mismatch") as runner:
        futures = [runner.submit(item) for item in ("a", "b")]
        for future in futures:
            with pytest.raises(ValueError, match="returned 1 results for a batch of 2 items"):
                future.result(WAIT)


def test_close_drains_pending_work_then_refuses_new_items() -> None:
    gate = threading.Event()
    fn = RecordingDouble(gate)
    runner = BatchRunner(fn, max_batch_size=4, max_wait_ms=60_000, name="test-close")
    futures = [runner.submit(item) for item in range(10)]
    closer = threading.Thread(target=runner.close)
    closer.start()
    gate.set()
    closer.join(WAIT)
    assert not closer.is_alive()
    # close() returned only after every queued item ran; the 60 s max_wait did not hold the short last batch.
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == [item * 2 for item in range(10)]
    with pytest.raises(RuntimeError, match="closed"):
        runner.submit(99)
    runner.close()  # closing twice is harmless


def test_a_full_batch_runs_without_waiting_for_max_wait() -> None:
    with BatchRunner(RecordingDouble(), max_batch_size=4, max_wait_ms=60_000, name="test-full") as runner:
        assert runner.map([1, 2, 3, 4], timeout=WAIT) == [2, 4, 6, 8]


def test_max_wait_bounds_the_latency_of_a_lone_item() -> None:
    # With a batch size far beyond one item, only max_wait (50 ms) releases the item; allow 100x that.
    with BatchRunner(RecordingDouble(), max_batch_size=1000, max_wait_ms=50, name="test-latency") as runner:
        started = time.monotonic()
        assert runner.run(7, timeout=WAIT) == 14
        assert time.monotonic() - started < 5.0


def test_a_cancelled_item_is_not_computed() -> None:
    gate = threading.Event()
    fn = RecordingDouble(gate)
    with BatchRunner(fn, max_batch_size=1, max_wait_ms=0, name="test-cancel") as runner:
        # Batches of one, first in first out: item 2 cannot start while fn holds item 1 at the gate.
        first = runner.submit(1)
        second = runner.submit(2)
        assert second.cancel()
        third = runner.submit(3)
        gate.set()
        assert (first.result(WAIT), third.result(WAIT)) == (2, 6)
    assert fn.batches == [[1], [3]]


def test_the_worker_starts_lazily_as_a_daemon() -> None:
    def workers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "test-lazy"]

    runner = BatchRunner(RecordingDouble(), name="test-lazy")
    assert workers() == []
    assert runner.run(1, timeout=WAIT) == 2
    (worker,) = workers()
    assert worker.daemon
    runner.close()
    assert not worker.is_alive()


@pytest.mark.parametrize(("size", "wait"), [(0, 5), (4, -1)])
def test_rejects_nonsense_settings(size: int, wait: float) -> None:
    with pytest.raises(ValueError):
        BatchRunner(RecordingDouble(), max_batch_size=size, max_wait_ms=wait)
