"""The progress display of a training run (process 0 only).

On a terminal: a rich progress bar with the step, loss, bits per byte (``loss / ln 2``; bits per token when
the
data is not byte-level), tokens per second and the time remaining. Elsewhere (a pipe, a log file, CI): one
plain line
every ``trainer.log_every`` steps and at the end. Messages (evaluations, checkpoints) are printed above the
bar.
"""

from __future__ import annotations

import math
import time
from collections import deque

import jax
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

LN2 = math.log(2.0)


def bits(loss: float) -> float:
    """Bits per token (per byte for byte-level data) of a cross-entropy in nats."""
    return loss / LN2


class TrainProgress:
    """Shows training progress; ``update`` after every step, ``message`` for anything else."""

    def __init__(
        self,
        *,
        total: int,
        start: int,
        unit: str,
        tokens_per_step: int,
        log_every: int,
        console: Console | None = None,
    ):
        self.enabled = jax.process_index() == 0
        self.console = console or Console(highlight=False)
        self.total, self.unit, self.log_every = total, unit, log_every
        self.tokens_per_step = tokens_per_step
        self._times: deque[float] = deque(maxlen=20)
        self._last = time.perf_counter()
        self._bar: Progress | None = None
        if self.enabled and self.console.is_terminal:
            self._bar = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[bits]} " + unit),
                TextColumn("{task.fields[tps]} tok/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._task = self._bar.add_task("train", total=total, completed=start, loss="-", bits="-", tps="-")
            self._bar.start()

    def tokens_per_second(self) -> float:
        """Throughput over the recent steps (the first, compiling step excluded)."""
        if not self._times:
            return 0.0
        return self.tokens_per_step * len(self._times) / sum(self._times)

    def update(self, step: int, loss: float, first: bool) -> float:
        """Record that ``step`` finished with ``loss``; returns the current tokens/s."""
        now = time.perf_counter()
        if not first:
            self._times.append(now - self._last)
        self._last = now
        tps = self.tokens_per_second()
        if not self.enabled:
            return tps
        if self._bar is not None:
            self._bar.update(
                self._task, completed=step, loss=f"{loss:.4f}", bits=f"{bits(loss):.3f}", tps=f"{tps:,.0f}"
            )
        elif step % self.log_every == 0 or step == self.total:
            remaining = (self.total - step) * self.tokens_per_step / tps if tps else float("nan")
            eta = f"{remaining:.0f}s" if math.isfinite(remaining) else "?"
            self.console.print(
                f"step {step}/{self.total}  loss {loss:.4f}  {bits(loss):.3f} {self.unit}  {tps:,.0f} tok/s  ETA {eta}",
                soft_wrap=True,
            )
        return tps

    def reset_clock(self) -> None:
        """Exclude the time spent outside training steps (evaluation, checkpointing) from the throughput."""
        self._last = time.perf_counter()

    def message(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, soft_wrap=True, highlight=False, markup=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
