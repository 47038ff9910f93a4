"""Stopping a run cleanly on SIGINT (Ctrl-C) or SIGTERM (a scheduler's preemption).

While :class:`StopOnSignal` is active, the first SIGINT or SIGTERM only records a request: the trainer
finishes the step in progress (its metrics and scheduled evaluation included), saves a checkpoint of that
step, says where, and exits with status 130 (:class:`Interrupted`). Running the same command again continues
from that step exactly. A second SIGINT or SIGTERM interrupts at once: it raises KeyboardInterrupt, which the CLI
reports as one ``interrupted:`` line with exit status 130 (a checkpoint being written then is discarded by orbax;
the previous one stays intact). A third ends the process immediately (status 130, one line), whatever it was
doing.

In a run of several processes each step all-gathers the flags, so every process stops after the same step.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType
from typing import Any

from titans_core import TitansUserError

SIGNALS = (signal.SIGINT, signal.SIGTERM)
SAME_REQUEST_S = 0.5  # a repeat of the first signal sooner than this is the same request (see module docstring)


class Interrupted(TitansUserError):
    """The run stopped on a signal after saving a checkpoint (exit status 130, as for Ctrl-C)."""

    exit_code = 130


def _exit_at_once(signum: int, frame: FrameType | None) -> None:
    os.write(2, f"interrupted: {signal.Signals(signum).name} again: exiting at once\n".encode())
    os._exit(Interrupted.exit_code)


class StopOnSignal:
    """A context manager turning SIGINT/SIGTERM into :meth:`requested` (main thread only; elsewhere inert)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._first_at = 0.0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received, self._first_at = signum, time.monotonic()  # the first: stop after this step
            return
        if signum == self.received and time.monotonic() - self._first_at < SAME_REQUEST_S:
            return  # the same request delivered twice (uv run's forwarding plus the process group)
        self._previous.clear()  # kept until the process ends: a third signal during the clean-up exits at once
        for other in SIGNALS:
            signal.signal(other, _exit_at_once)
        raise KeyboardInterrupt(signal.Signals(signum).name)  # the second: stop now

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    @property
    def name(self) -> str:
        """``SIGINT`` or ``SIGTERM`` (the signal received)."""
        return signal.Signals(self.received).name if self.received is not None else "a signal"

    def requested(self) -> bool:
        """Whether a stop was requested (in any process of a multi-process run)."""
        import jax

        if jax.process_count() == 1:
            return self.received is not None
        import numpy as np
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.int32(self.received or 0))
        if self.received is None and int(np.max(flags)):
            self.received = int(np.max(flags))
        return bool(np.max(flags))
