"""When a run has diverged, and which checkpoint to continue from (``titans-train`` exit status 3).

A step diverges when its loss or gradient norm is not finite, or when its largest parameter magnitude is not finite
or exceeds ``trainer.max_weight`` (weights blowing up while the loss stays finite). The run then stops before that
step is checkpointed, and the message names the last checkpoint whose weights were sound, to fork with
``--fork-from`` and other hyper-parameters.
"""

from __future__ import annotations

import math
from pathlib import Path

from titans_train.errors import DivergedError


def divergence(values: dict[str, float], max_weight: float | None) -> str | None:
    """Why a step's metrics mean the run diverged (None if they do not): a non-finite loss or gradient norm,
    or a parameter whose magnitude is not finite or exceeds ``trainer.max_weight``."""
    if not (math.isfinite(values["loss"]) and math.isfinite(values["grad_norm"])):
        return f"loss {values['loss']}, gradient norm {values['grad_norm']} (not finite)"
    weight = values["weight_max"]
    if not math.isfinite(weight) or (max_weight is not None and weight > max_weight):
        bound = "" if max_weight is None else f" (above trainer.max_weight = {max_weight:g})"
        return f"largest parameter magnitude {weight:.3g}{bound}"
    return None


def last_good_checkpoint(kept: list[int], losses: dict[int, float], bound: float) -> tuple[int | None, list[int]]:
    """(the last kept checkpoint to trust, the later ones that are not) when a run diverges.

    Checkpoint c holds the weights that step c + 1 started from, so ``losses[c + 1]`` is their loss. A checkpoint
    is trusted when that loss is finite and at most ``bound``, or unknown (step c + 1 ran in an earlier process, or
    has not run). A decision, measured: at lr 1e3 the weights can pass ``trainer.max_weight`` a step after they have
    already collapsed (loss 1.65e6 per token against ln 256 = 5.5), and a fork from that checkpoint diverges again
    whatever its lr."""
    distrusted: list[int] = []
    for c in sorted(kept, reverse=True):
        loss = losses.get(c + 1)
        if loss is None or (math.isfinite(loss) and loss <= bound):
            return c, distrusted
        distrusted.append(c)
    return None, distrusted


def diverged_error(
    step: int, loss: float, problem: str, kept: list[int], losses: dict[int, float], bound: float, directory: Path
) -> DivergedError:
    """The one line for a run that diverged at ``step``: why, the checkpoint to fork (``last_good_checkpoint``) and
    the ones skipped with their losses, and how to go on; ``directory``: the run's checkpoints."""
    good, bad = last_good_checkpoint(kept, losses, bound)
    if good is not None:
        last = f"the last good checkpoint is step {good}"
    else:
        last = "no checkpoint is good" if bad else "no checkpoint was written"
    if bad:
        gave = ", ".join(f"step {c}'s weights gave {losses[c + 1]:.3g}" for c in sorted(bad)[-3:])
        later = "not a later one: " if good is not None else ""
        last += f" ({later}{gave}, above 2·ln(vocab_size) = {bound:.3g})"
    fork = (
        f"; to continue from it with other hyper-parameters, fork it into a new run directory: "
        f"--fork-from {directory / str(good)} --set output.dir=NEW_DIR --set optimizer.lr=…"
        if good is not None
        else ""
    )
    return DivergedError(
        f"training diverged at step {step} (loss {loss:.3g}): {problem}; stopped, {last} (in {directory}). "
        f"Try a lower optimizer.lr, a longer schedule.warmup_steps or optimizer.clip_norm{fork}"
    )
