"""The lock of a run directory: one training process at a time per ``output.dir``.

``RUN_DIR/.lock`` holds the PID (and host) of the process training in that directory, and that process holds
an exclusive ``flock`` on it for as long as it runs. The kernel drops the ``flock`` when the process dies
however it dies (even by SIGKILL), so a lock file left behind by a dead process is *stale*: the next run takes
it over (with a warning naming the dead PID). A second live process is refused with a
:class:`~titans_train.errors.RunDirError` that names the holder's PID.

Taking the lock is the first write into ``output.dir`` (it creates the directory when needed), so an
unwritable output directory (read-only file system, no permission) is also reported here, as one line naming
the path.

Taking over is race-free: after ``flock`` succeeds the lock file is checked to still be the file at ``.lock``
(same inode); a holder that released it removed it first, so a waiter that locked the removed file retries.
This module imports neither JAX nor orbax (a lock helper process starts fast).
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from titans_train.errors import RunDirError

LOCK_FILE = ".lock"


def _unwritable(path: Path, exc: OSError) -> RunDirError:
    reason = exc.strerror or str(exc)
    where = exc.filename or path
    return RunDirError(f"output.dir {path}: cannot write there ({where}: {reason}); choose another output.dir")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """An exclusive lock on a run directory (a context manager; see the module docstring)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.fd: int | None = None
        self.created = False
        self.unsupported: str | None = None  # why flock failed on a file system without it
        #: (pid, host) read from a stale lock file that was taken over, else None
        self.taken_over: tuple[int, str] | None = None

    def _holder(self, fd: int) -> tuple[int, str]:
        try:
            text = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
            return int(text[0]), (text[1] if len(text) > 1 else "?")
        except (OSError, ValueError, IndexError):
            return 0, "?"

    def acquire(self) -> RunLock:
        """Take the lock (creating ``run_dir``); RunDirError if another process holds it or the directory is
        not writable."""
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise RunDirError(f"output.dir {self.run_dir} exists and is not a directory")
        try:
            self.created = not self.run_dir.exists()
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _unwritable(self.run_dir, exc) from None
        for _ in range(100):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise _unwritable(self.run_dir, exc) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                pid, host = self._holder(fd)
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):  # a file system without flock
                    self.fd, self.unsupported = fd, f"{exc.strerror or exc}"
                    return self
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    remote = host not in ("?", socket.gethostname())
                    who = (f"process {pid}" if pid else "another process") + (f" on {host}" if remote else "")
                    raise RunDirError(
                        f"output.dir {self.run_dir} is in use by {who} (lock {self.path}); wait for it to "
                        "finish or stop it, or choose another output.dir"
                    ) from None
                raise _unwritable(self.run_dir, exc) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed the file while we waited for it: lock the new one
                os.close(fd)
                continue
            pid, host = self._holder(fd)
            if pid and pid != os.getpid():
                self.taken_over = (pid, host)
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
            except OSError as exc:
                os.close(fd)
                raise _unwritable(self.run_dir, exc) from None
            self.fd = fd
            return self
        raise RunDirError(f"output.dir {self.run_dir}: could not take the lock {self.path}")

    def stale_note(self) -> str | None:
        """The warning to print when a stale lock was taken over, or locking is unsupported; else None."""
        if self.unsupported:
            return f"cannot lock {self.path} ({self.unsupported}): nothing stops a second run here"
        if self.taken_over is None:
            return None
        pid, host = self.taken_over
        dead = host != socket.gethostname() or not _pid_alive(pid)
        state = "no longer running" if dead else "alive but not holding it"
        return f"took over the stale lock {self.path} of process {pid} ({state})"

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent); a directory the lock created and nothing else
        used is removed too."""
        if self.fd is None:
            return
        try:
            self.path.unlink()
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None
        if self.created:
            try:
                self.run_dir.rmdir()  # only succeeds when empty: nothing was written
            except OSError:
                pass

    def __enter__(self) -> RunLock:
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def hold_run_dir(run_dir: Path) -> Iterator[RunLock | None]:
    """Hold the lock of ``run_dir`` for the duration of the block (process 0 takes it; in a multi-process
    run every process learns whether it succeeded, and all fail with the same RunDirError if not)."""
    import jax
    from jax.experimental import multihost_utils

    lock = RunLock(run_dir) if jax.process_index() == 0 else None
    error: RunDirError | None = None
    if lock is not None:
        try:
            lock.acquire()
        except RunDirError as exc:
            error = exc
    if jax.process_count() > 1:
        import numpy as np

        ok = multihost_utils.broadcast_one_to_all(np.int32(error is None))
        if not int(ok) and error is None:
            error = RunDirError(f"output.dir {run_dir}: process 0 could not take the run directory's lock")
    if error is not None:
        raise error
    if lock is not None and lock.stale_note():
        from titans_train.checkpoint import warn

        warn(lock.stale_note() or "")
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()
