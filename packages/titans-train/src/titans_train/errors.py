"""User-facing errors of titans-train (``TitansUserError``: one clear message, no traceback)."""

from __future__ import annotations

from titans_core import TitansUserError


class DataError(TitansUserError):
    """Unusable training data: a missing path, an empty or binary file, a corpus shorter than one window, …"""


class RunDirError(TitansUserError):
    """The output directory cannot be used: it holds another run (a different spec) or foreign files."""


class CheckpointError(TitansUserError):
    """No usable checkpoint where one is needed (resume, generation)."""


class DivergedError(TitansUserError):
    """The training loss became non-finite; the run stops and the last good checkpoint is kept."""

    exit_code = 3
