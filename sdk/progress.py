"""The progress bar of long commands: training (PyTorch) and on-device personalization (torch-free), so it imports
no torch."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainProgress:
    """A rich progress bar with loss and step rate, shown on rank 0 only."""

    def __init__(self, description: str, total: int, start: int = 0, enabled: bool = True) -> None:
        self.enabled = enabled
        self.description = description
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[rate]:.2f} step/s"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not enabled,
        )
        # Without a terminal (CI, nohup, a log file) rich draws nothing live: print a plain line instead.
        self._plain = enabled and not self._progress.console.is_terminal
        self._total, self._next_plain = total, start
        self._task = self._progress.add_task(description, total=total, completed=start, loss=float("nan"), rate=0.0)
        self._t0, self._start = time.perf_counter(), start
        self._shown = False

    def __enter__(self) -> TrainProgress:
        # The bar appears at the first step, not here: a run refused before it starts (a bad checkpoint, an empty
        # image folder, ...) must leave one `error:` line on stderr, not a bar drawn above it.
        self._shown = False
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if not self._shown:
            return
        if exc_type is not None:
            # a failed run: the error line says what happened; the bar is cleared (terminal) or not printed (a log)
            self._progress.live.transient = True
        self._progress.__exit__(exc_type, *exc)

    def update(self, step: int, loss: float) -> None:
        if not self._shown:
            self._progress.__enter__()
            self._shown = True
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        rate = (step - self._start) / elapsed
        self._progress.update(self._task, completed=step, loss=loss, rate=rate)
        if self._plain and (step >= self._next_plain or step == self._total):
            eta = (self._total - step) / max(rate, 1e-9)
            print(f"{self.description} {step}/{self._total} loss {loss:.4f} {rate:.2f} step/s "
                  f"elapsed {elapsed:.0f}s eta {eta:.0f}s", file=sys.stderr, flush=True)
            self._next_plain = step + max(1, self._total // 20)
