"""Orbax checkpoints of a run: ``RUN_DIR/checkpoints/<step>/{state,data,digest}``.

``state`` is the whole training state (params, optimizer state, other model variables, step, RNG; see
:mod:`titans_train.steps`), saved sharded and restored directly into the current mesh's shardings (so a run
may be resumed on another mesh layout). ``data`` is the grain iterator state (JSON). ``digest`` (JSON) holds
checksums of every array of ``state`` and of ``data`` (:mod:`titans_train.digest`), computed at save time and
verified at restore: a checkpoint whose bytes changed afterwards, or whose ``digest`` is missing, is treated like
an unreadable one (verification is never skipped silently).

Saving is asynchronous by default (``checkpoint.asynchronous``); orbax writes each checkpoint into a temporary
directory and renames it when complete, so a process killed mid-save leaves no half checkpoint behind
(temporary directories are cleaned up on the next start). A checkpoint that exists but cannot be restored —
truncated or corrupt files, or a state whose step disagrees with its directory — is moved to
``RUN_DIR/corrupt-checkpoints/`` with a warning, and the next older one is used. When none is usable the run is
refused, now and on every later start (:func:`quarantined`), until it is restarted explicitly (``--restart``).
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from titans_core.cli import print_user_error

from titans_train.digest import data_digest, mismatches, state_digest
from titans_train.errors import CheckpointError
from titans_train.write_errors import REASONS, free_bytes, human, install_quiet_filter, write_failure

CHECKPOINT_DIR = "checkpoints"
CORRUPT_DIR = "corrupt-checkpoints"
ITEMS = ("state", "data", "digest")
#: How to start over a run none of whose checkpoints is usable (the only way: never silently from step 0).
RESTART_HINT = "run the same command with --restart to start it over from step 0 (metrics.jsonl is kept aside)"


def quarantined(run_dir: Path) -> list[Path]:
    """The checkpoints of ``run_dir`` moved aside as unreadable."""
    corrupt = Path(run_dir) / CORRUPT_DIR
    return sorted(corrupt.iterdir()) if corrupt.is_dir() else []


def warn(message: str) -> None:
    """Print ``warning: message`` on stderr (process 0 only)."""
    if jax.process_index() == 0:
        print_user_error(Warning(message), prefix="warning", file=sys.stderr)


class Checkpoints:
    """The checkpoints of one run directory."""

    def __init__(self, run_dir: Path, *, keep: int = 3, asynchronous: bool = True, read_only: bool = False):
        self.run_dir = Path(run_dir).absolute()
        self.directory = self.run_dir / CHECKPOINT_DIR
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=asynchronous,
            cleanup_tmp_directories=not read_only,
            create=not read_only,
            read_only=read_only,
        )
        install_quiet_filter()  # orbax's tracebacks of a failed write: reported as one line instead
        self._pending: list[tuple[int, int]] = []  # (step, bytes) of saves not known to be complete
        self._failed = False
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

    def steps(self) -> list[int]:
        """Steps with a complete checkpoint, oldest first."""
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, data_state: dict[str, Any]) -> None:
        """Save (in the background when asynchronous) the state after ``step`` steps.

        A failed write (disk full, read-only) of this or an earlier pending save raises CheckpointError."""
        digest = {"arrays": state_digest(state), "data": data_digest(data_state)}
        nbytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
        with self._reporting_write_failures():
            self.manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    data=ocp.args.JsonSave(data_state),
                    digest=ocp.args.JsonSave(digest),
                ),
                force=True,
            )
            self._pending.append((step, nbytes))

    def wait(self) -> None:
        """Block until pending saves are complete (CheckpointError if one could not be written)."""
        with self._reporting_write_failures():
            self.manager.wait_until_finished()
        self._pending.clear()

    def close(self) -> None:
        if self._failed:  # already reported; orbax would raise the same failure again
            try:
                self.manager.close()
            except Exception:  # noqa: BLE001
                pass
            return
        with self._reporting_write_failures():
            self.manager.close()

    def _remove_tmp_directories(self, attempts: int = 50) -> None:
        """Delete the unfinished checkpoint directories. The other items of the failed save may still be written by
        orbax's background threads for a moment (they recreate files in the directory), so retry until none is
        left (at most ``attempts`` × 0.1 s)."""
        for _ in range(attempts):
            leftovers = list(self.directory.glob("*.orbax-checkpoint-tmp*"))
            if not leftovers:
                return
            for tmp in leftovers:
                shutil.rmtree(tmp, ignore_errors=True)
            time.sleep(0.1)

    @contextmanager
    def _reporting_write_failures(self) -> Iterator[None]:
        """A failed checkpoint write becomes one CheckpointError naming the directory and the bytes needed."""
        try:
            yield
        except Exception as exc:
            code = write_failure(exc)
            if code is None:
                raise
            self._failed = True
            complete = set(self.manager.all_steps())
            failed = [(s, n) for s, n in self._pending if s not in complete]
            step, nbytes = failed[0] if failed else (None, None)
            if jax.process_index() == 0:  # free the space the failed write took (orbax would on the next start)
                self._remove_tmp_directories()
            kept = sorted(complete)
            last = f"the last good checkpoint, step {kept[-1]}, is intact" if kept else "no checkpoint was kept"
            what = f"checkpoint {step}" if step is not None else "a checkpoint"
            need = f"; it needs about {human(nbytes)}, {human(free_bytes(self.directory))} free" if nbytes else ""
            raise CheckpointError(
                f"cannot write {what} in {self.directory}: {REASONS[code]}{need}; {last} "
                "(free some space and run the same command again to continue from it)"
            ) from None

    def _restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        items = {"state": ocp.args.StandardRestore(abstract_state), "data": ocp.args.JsonRestore()}
        if not (self.directory / str(step) / "digest").is_dir():  # never restore unverified
            raise ValueError("its digest is missing, so its arrays cannot be verified")
        items["digest"] = ocp.args.JsonRestore()
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        state, data = restored["state"], restored["data"]
        saved_step = int(np.asarray(jax.device_get(state["step"])))
        if saved_step != step:
            raise ValueError(f"the state inside says step {saved_step}")
        if not isinstance(data, dict):
            raise ValueError("the data-iterator state is missing")
        saved = restored["digest"] if isinstance(restored["digest"], dict) else {}
        changed = mismatches(saved.get("arrays") or {}, state_digest(state))
        if changed:
            shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
            raise ValueError(f"digest mismatch: the data of {shown} changed after it was saved")
        if saved.get("data") != data_digest(data):
            raise ValueError("digest mismatch: the data-iterator state changed after it was saved")
        return state, data

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """(state, data state) of checkpoint ``step``, verified; CheckpointError naming it if it is unusable."""
        try:
            return self._restore(step, abstract_state)
        except Exception as exc:  # noqa: BLE001 - any failure means this checkpoint is unusable
            cause = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            raise CheckpointError(f"checkpoint {self.directory / str(step)} is unusable ({cause})") from None

    def _quarantine(self, step: int) -> None:
        if jax.process_index() == 0:
            source = self.directory / str(step)
            target = self.run_dir / CORRUPT_DIR / f"{step}-{int(time.time())}"
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.exists():
                shutil.move(str(source), str(target))
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"titans-quarantine-{step}")
        self.manager.reload()

    def restore_latest(self, abstract_state: Any, *, quarantine: bool = True) -> tuple[int, Any, dict[str, Any]] | None:
        """(step, state, data state) of the newest checkpoint that restores; None if there is none.

        Unreadable checkpoints are skipped with a warning (and moved aside when ``quarantine``);
        CheckpointError if
        there are checkpoints but none restores.
        """
        steps = self.steps()
        for step in reversed(steps):
            try:
                state, data = self._restore(step, abstract_state)
            except Exception as exc:  # noqa: BLE001 - any failure means this checkpoint is unusable
                cause = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                older = [s for s in steps if s < step]
                then = f"using step {older[-1]} instead" if older else "no older checkpoint"
                moved = f"moved to {self.run_dir / CORRUPT_DIR}; " if quarantine else ""
                warn(f"checkpoint {self.directory / str(step)} is unreadable ({cause}); {moved}{then}")
                if quarantine:
                    self._quarantine(step)
                continue
            return step, state, data
        if steps:
            moved = f", moved to {self.run_dir / CORRUPT_DIR}); {RESTART_HINT}" if quarantine else ")"
            raise CheckpointError(f"no usable checkpoint in {self.directory} (all {len(steps)} are unreadable{moved}")
        return None
