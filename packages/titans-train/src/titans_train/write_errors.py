"""Recognising failed writes (disk full, read-only file system, no permission) wherever they surface.

Orbax writes checkpoints in background threads, through tensorstore, so a full disk reaches the trainer as an
``OSError`` or as a ``ValueError("RESOURCE_EXHAUSTED: … No space left on device [os_error_code='28']")``,
possibly as the cause of another exception, and orbax logs each failed thread's traceback on the way.
:func:`write_failure` finds the reason in an exception chain; :class:`QuietWriteFailures` drops orbax's log
records of such failures, since the trainer reports them as one ``error:`` line.
"""

from __future__ import annotations

import errno
import logging
import shutil
import sys
from pathlib import Path
from types import TracebackType

#: errno → reason, and the texts tensorstore and the C library use for them.
REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
}
_TEXTS = {
    "No space left on device": errno.ENOSPC,
    "os_error_code='28'": errno.ENOSPC,
    "Disk quota exceeded": errno.EDQUOT,
    "Read-only file system": errno.EROFS,
    "os_error_code='30'": errno.EROFS,
}


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen and len(seen) < 50:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return seen


def write_failure(exc: BaseException) -> int | None:
    """The errno (a key of :data:`REASONS`) of the failed write behind ``exc``, or None."""
    for item in _chain(exc):
        if isinstance(item, OSError) and item.errno in REASONS:
            return item.errno
        text = str(item)
        for needle, code in _TEXTS.items():
            if needle in text:
                return code
    return None


def free_bytes(path: Path) -> int | None:
    """Free bytes on the file system holding ``path`` (or its nearest existing parent)."""
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def human(n: int | None) -> str:
    """``123.4 MB``-style sizes (decimal units)."""
    if n is None:
        return "unknown"
    size = float(n)
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{n:,} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n:,} bytes"  # pragma: no cover


#: Orbax's log lines about problems the trainer reports itself: an unreadable step's metadata is the one warning
#: naming the checkpoint when its restore fails (``Checkpoints.restore_latest``).
_REPORTED_ELSEWHERE = ("Failed to read Metadata file",)


class QuietWriteFailures(logging.Filter):
    """Drops log records (orbax's background-thread tracebacks) about a write failure of :data:`REASONS`, and
    orbax's lines in :data:`_REPORTED_ELSEWHERE`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and write_failure(record.exc_info[1]):
            return False
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not ours to judge
            return True
        return not any(needle in message for needle in (*_TEXTS, *_REPORTED_ELSEWHERE))


QUIET = QuietWriteFailures()


def _closed_loop_noise(exc: BaseException | None) -> bool:
    return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"


def _quiet_excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """sys.excepthook that drops "Event loop is closed": tensorstore completing the writes of a checkpoint
    save that orbax abandoned after a failed write prints one per pending write, with a traceback."""
    if not _closed_loop_noise(exc):
        _previous_excepthook(kind, exc, tb)


_previous_excepthook = sys.excepthook


def _quiet_unraisablehook(unraisable) -> None:
    """sys.unraisablehook that drops the same "Event loop is closed": when the abandoned writes' callbacks run
    after their event loop is gone, Python reports it as "Exception ignored in: …" with a traceback."""
    if not _closed_loop_noise(unraisable.exc_value):
        _previous_unraisablehook(unraisable)


_previous_unraisablehook = sys.unraisablehook


def install_quiet_filter() -> None:
    """Add :data:`QUIET` to the loggers orbax uses, and drop the closed-event-loop tracebacks, raised or
    unraisable (idempotent)."""
    global _previous_excepthook, _previous_unraisablehook
    for name in ("absl", "orbax", ""):
        logger = logging.getLogger(name)
        if QUIET not in logger.filters:
            logger.addFilter(QUIET)
    if sys.excepthook is not _quiet_excepthook:
        _previous_excepthook = sys.excepthook
        sys.excepthook = _quiet_excepthook
    if sys.unraisablehook is not _quiet_unraisablehook:
        _previous_unraisablehook = sys.unraisablehook
        sys.unraisablehook = _quiet_unraisablehook
