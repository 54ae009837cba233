"""Progress bars for management commands: one tqdm bar that restarts for each stage of long work."""

from __future__ import annotations

import sys
from types import TracebackType

from tqdm import tqdm


class StageBar:
    """``bar(stage, done, total, **figures)``; shown on a terminal, silent otherwise (CI logs, tests)."""

    def __init__(self) -> None:
        self._bar = tqdm(file=sys.stderr, disable=None, dynamic_ncols=True)
        self._stage = ""

    def __call__(self, stage: str, done: int, total: int | None, figures: dict[str, float] | None = None) -> None:
        if stage != self._stage:
            self._stage = stage
            self._bar.reset(total=total)
            self._bar.set_description(stage, refresh=False)
        self._bar.update(done - self._bar.n)
        if figures:
            self._bar.set_postfix({key: f"{value:.3f}" for key, value in figures.items()}, refresh=False)

    def __enter__(self) -> StageBar:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._bar.close()
