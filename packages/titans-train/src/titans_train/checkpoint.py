"""Orbax checkpoints of a run: ``RUN_DIR/checkpoints/<step>/{state,data}``.

``state`` is the whole training state (params, optimizer state, other model variables, step, RNG; see
:mod:`titans_train.steps`), saved sharded and restored directly into the current mesh's shardings (so a run
may be
resumed on another mesh layout). ``data`` is the grain iterator state (JSON).

Saving is asynchronous by default (``checkpoint.asynchronous``); orbax writes each checkpoint into a temporary
directory and renames it when complete, so a process killed mid-save leaves no half checkpoint behind
(temporary
directories are cleaned up on the next start). A checkpoint that exists but cannot be restored — truncated or
corrupt files, or a state whose step disagrees with its directory — is moved to
``RUN_DIR/corrupt-checkpoints/``
with a warning, and the next older one is used.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from titans_core.cli import print_user_error

from titans_train.errors import CheckpointError

CHECKPOINT_DIR = "checkpoints"
CORRUPT_DIR = "corrupt-checkpoints"


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
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data"))

    def steps(self) -> list[int]:
        """Steps with a complete checkpoint, oldest first."""
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, data_state: dict[str, Any]) -> None:
        """Save (in the background when asynchronous) the state after ``step`` steps."""
        self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)),
            force=True,
        )

    def wait(self) -> None:
        """Block until pending saves are complete."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()

    def _restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
            ),
        )
        state, data = restored["state"], restored["data"]
        saved_step = int(np.asarray(jax.device_get(state["step"])))
        if saved_step != step:
            raise ValueError(f"the state inside says step {saved_step}")
        if not isinstance(data, dict):
            raise ValueError("the data-iterator state is missing")
        return state, data

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

    def restore_latest(
        self, abstract_state: Any, *, quarantine: bool = True
    ) -> tuple[int, Any, dict[str, Any]] | None:
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
            raise CheckpointError(
                f"no usable checkpoint in {self.directory} (all {len(steps)} are unreadable)"
            )
        return None
