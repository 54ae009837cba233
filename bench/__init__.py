"""Benchmarks that report ratios measured in one run (``python -m bench``; see bench/README.md).

Every benchmark returns ``Figure``s: a measured value, the target it is compared with (printed, never asserted) and
whether the target is met, plus a dict of the raw measurements that go to ``results.json``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Settings:
    """How hard to measure: ``quick`` (smoke tests) takes fewer repeats and fewer items; ``tiny`` swaps the full-size
    ViT-B-32 for the tiny random open_clip (its figures say nothing about speed, only that the code runs)."""

    quick: bool = False
    tiny: bool = False

    @property
    def warmup(self) -> int:
        return 1

    @property
    def repeats(self) -> int:
        return 2 if self.quick else 5

    @property
    def long_repeats(self) -> int:
        """Repeats of the calls that take many seconds each (bf16 paths, BatchRunner over many items)."""
        return 2 if self.quick else 3


@dataclass(frozen=True)
class Figure:
    """One reported number; ``target`` and ``met`` are None for figures that are context, not goals."""

    name: str
    value: float
    unit: str
    target: str | None = None
    met: bool | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "target": self.target,
            "met": self.met,
            "note": self.note,
        }


@dataclass
class BenchResult:
    """What one benchmark hands back: its figures for the table and its raw measurements for the JSON."""

    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of the timed repeats (after warm-up); ``median_s`` is the one the figures use."""

    seconds: tuple[float, ...]

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    def to_dict(self) -> dict[str, Any]:
        return {"median_s": self.median_s, "min_s": min(self.seconds), "max_s": max(self.seconds), "runs": self.seconds}


def measure(call: Callable[[], object], *, warmup: int, repeats: int) -> Timing:
    """Time ``call`` ``repeats`` times with ``time.perf_counter`` after ``warmup`` untimed calls."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return Timing(tuple(seconds))


def measure_interleaved(calls: Mapping[str, Callable[[], object]], *, warmup: int, repeats: int) -> dict[str, Timing]:
    """Time several calls in rounds (each call once per round), so that a change in the machine's load while they run
    hits all of them alike and their ratios stay fair; ``warmup`` untimed rounds first."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        for call in calls.values():
            call()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            seconds[name].append(time.perf_counter() - start)
    return {name: Timing(tuple(runs)) for name, runs in seconds.items()}
