"""The training run: plan → run directory → (restore) → steps with metrics, evaluations and checkpoints →
sample.

Order of events (see :func:`train`): everything that can fail because of the spec or the data fails in
:func:`titans_train.plan.make_plan` and :func:`titans_train.rundir.inspect_run_dir`, before the run directory
is created; the run directory is locked for the whole run (:mod:`titans_train.lock`). Then each step: next
batch (this process's rows) → memory diagnostics every ``trainer.diagnostics_every`` steps
(:mod:`titans_train.memory_stats`) → jitted step → loss check → ``metrics.jsonl`` → evaluation every
``trainer.eval_every`` steps → checkpoint every ``checkpoint.every`` steps (after the evaluation, so a
complete checkpoint implies that all metrics of its step are written); at the end a final evaluation and
checkpoint, and a sample generation. SIGINT/SIGTERM stop the run after the step in progress, with a checkpoint
of it (:mod:`titans_train.interrupt`).

A non-finite loss or gradient norm, or a parameter whose magnitude is not finite or exceeds
``trainer.max_weight`` (weights blown up while the loss stays finite), stops the run with
:class:`~titans_train.errors.DivergedError` naming the step and how to fork the last good checkpoint into a new
run directory (``--fork-from``) with other hyper-parameters; that state is never saved, pending checkpoint
writes are completed, so the last good checkpoint stays intact. A resumed run must see the data it started with
(run.json's token counts and SHA-256; :func:`_check_same_data`).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from rich.console import Console

from titans_train import sampling as gen
from titans_train.checkpoint import RESTART_HINT, Checkpoints, quarantined, warn
from titans_train.data import TaskSplits, TrainBatches, eval_batches
from titans_train.data.corpus import unigram_bits
from titans_train.data.streams import StreamBatches
from titans_train.divergence import diverged_error, divergence
from titans_train.errors import CheckpointError, RunDirError
from titans_train.interrupt import Interrupted, StopOnSignal
from titans_train.lock import hold_run_dir
from titans_train.memory_stats import has_memory, make_train_diagnostics, to_floats
from titans_train.mesh import global_batch
from titans_train.plan import Plan, make_plan
from titans_train.progress import TrainProgress, bits
from titans_train.rundir import RunDir, inspect_run_dir, read_facts
from titans_train.spec import TrainSpec
from titans_train.spec_check import SpecLocator
from titans_train.steps import Steps, make_steps


@dataclass
class TrainResult:
    """What a finished run reports (also in metrics.jsonl)."""

    run_dir: Path
    start_step: int
    final_step: int
    losses: list[float]
    eval_loss: float | None
    sample: str | None


def _evaluate(plan: Plan, steps: Steps, state: Any, batches: list[np.ndarray]) -> dict[str, float]:
    """Mean loss and accuracy (argmax = target on the scored positions) over the validation batches."""
    results = [
        jax.device_get(steps.evaluate(state, global_batch(b, plan.batch_sharding, plan.batch_shape))) for b in batches
    ]
    return {key: float(np.mean([r[key] for r in results])) for key in ("loss", "accuracy")}


#: Facts of run.json that describe the data: a resumed run must see the same (the data-iterator state indexes it).
DATA_FACTS = ("train_tokens", "val_tokens", "train_examples", "val_examples", "data_sha256")


def _fingerprint(*arrays: np.ndarray | None) -> str:
    """SHA-256 of the token arrays (shape, dtype and bytes)."""
    digest = hashlib.sha256()
    for array in arrays:
        if array is not None:
            digest.update(f"{array.shape}{array.dtype}".encode())
            digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def _check_same_data(run_dir: Path, facts: dict[str, Any]) -> None:
    """RunDirError if the data of a resumed run differ from those it started with (run.json's data facts); a
    run.json from before a fact existed is not compared on that fact."""
    saved = read_facts(run_dir)
    changed = [k for k in DATA_FACTS if k in saved and k in facts and saved[k] != facts[k]]
    if changed:
        shown = "; ".join(
            f"{k}: {saved[k]} → {facts[k]}" if k != "data_sha256" else "its SHA-256 differs" for k in changed
        )
        raise RunDirError(
            f"output.dir {run_dir}: the training data changed since this run started ({shown}); restore the data, "
            "or train on the new data in another output.dir (--fork-from a checkpoint to keep the weights)"
        )


class Trainer:
    """One run of a validated spec (use :func:`train`)."""

    def __init__(
        self,
        plan: Plan,
        *,
        resume: bool,
        restart: bool = False,
        fork: Path | None = None,
        console: Console | None = None,
    ):
        spec = plan.spec
        assert plan.splits is not None
        self.plan, self.spec, self.splits = plan, spec, plan.splits
        self.unit = "bpb" if self.splits.byte_level else "bpt"
        self.unigram: float | None = None  # held-out bits per token of a unigram model: the baseline to beat
        if not isinstance(self.splits, TaskSplits) and self.splits.val is not None and self.splits.val.size:
            self.unigram = unigram_bits(self.splits.train, self.splits.val, spec.vocab_size)
        self.run_dir = RunDir(Path(spec.output.dir))
        facts = {
            "byte_level": self.splits.byte_level,
            "vocab_size": spec.vocab_size,
            "param_count": plan.param_count,
            "data": self.splits.description,
        }
        if isinstance(self.splits, TaskSplits):  # plan.labelled
            facts.update(train_examples=len(self.splits.train), val_examples=len(self.splits.val))
        else:
            facts.update(
                train_tokens=int(self.splits.train.size),
                val_tokens=int(self.splits.val.size) if self.splits.val is not None else 0,
                data_sha256=_fingerprint(self.splits.train, self.splits.val),
            )
        if resume:
            _check_same_data(self.run_dir.path, facts)
        self.console = console or Console(highlight=False)
        forked = self._fork(fork) if fork is not None else None  # before anything is written
        if not resume:
            self.run_dir.start(spec, facts)
        self.checkpoints = Checkpoints(
            self.run_dir.path, keep=spec.checkpoint.keep, asynchronous=spec.checkpoint.asynchronous
        )
        try:
            restored = forked or self._restore(resume=resume, restart=restart)
        except BaseException:
            self.checkpoints.close()  # orbax's background threads would print tracebacks at exit
            raise
        if resume:
            self.run_dir.update_spec(spec)
        self.batches: TrainBatches | StreamBatches
        if plan.carry is not None and not plan.labelled:  # carry_memory: every row reads its own stream of windows
            assert isinstance(self.splits.train, np.ndarray)
            self.batches = StreamBatches(self.splits.train, spec.data.seq_len, plan.layout)
        else:
            self.batches = TrainBatches(
                self.splits.train,
                spec.data.seq_len,
                plan.layout,
                seed=spec.trainer.seed,
                shuffle=spec.data.shuffle,
            )
        self.eval_data = (
            eval_batches(self.splits.val, spec.data.seq_len, plan.layout, spec.trainer.eval_batches)
            if self.splits.val is not None
            else []
        )
        self.steps = make_steps(
            plan.graphdef,
            plan.tx,
            plan.schedule,
            compute_dtype=plan.compute_dtype,
            state_shardings=plan.state_shardings,
            batch_sharding=plan.batch_sharding,
            replicated=plan.replicated,
            carry=plan.carry,
        )
        if restored is not None:
            self.step, self.state, data_state = restored
            self.batches.set_state(data_state)
        else:
            self.step, self.state = 0, plan.init_state()
        if fork is not None and forked is not None:
            self.run_dir.copy_metrics(fork.parent.parent, forked[0])
        if resume and restored is None and restart:
            self.run_dir.set_metrics_aside()
        elif resume:
            self.run_dir.truncate_metrics(self.step)
        self.diagnostics_every = spec.trainer.diagnostics_interval()
        if self.diagnostics_every is not None and not has_memory(
            nnx.merge(plan.graphdef, self.state["params"], self.state["rest"])
        ):
            self.diagnostics_every = None  # no neural memory (e.g. SWA): nothing to diagnose
        self.diagnostics = (
            make_train_diagnostics(
                plan.graphdef,
                plan.compute_dtype,
                state_shardings=plan.state_shardings,
                batch_sharding=plan.batch_sharding,
                replicated=plan.replicated,
            )
            if self.diagnostics_every is not None
            else None
        )

    def _fork(self, checkpoint: Path) -> tuple[int, Any, dict[str, Any]]:
        """The state of ``checkpoint`` (RUN/checkpoints/STEP of another run) to continue from in this new run."""
        source = Checkpoints(checkpoint.parent.parent, read_only=True)
        try:
            state, data = source.restore(int(checkpoint.name), self.plan.abstract_state())
        finally:
            source.close()
        self.console.print(f"forked from {checkpoint}", highlight=False)
        return int(checkpoint.name), state, data

    def _restore(self, *, resume: bool, restart: bool) -> tuple[int, Any, dict[str, Any]] | None:
        """The newest usable checkpoint of a resumed run. A run whose checkpoints are all unusable (now, or moved
        aside by an earlier start) is refused unless ``restart``: it never starts over from step 0 silently."""
        if not resume:
            return None
        try:
            restored = self.checkpoints.restore_latest(self.plan.abstract_state())
        except CheckpointError:
            if not restart:
                raise
            restored = None
        aside = quarantined(self.run_dir.path)
        if restored is None and aside and not restart:
            raise CheckpointError(
                f"no usable checkpoint in {self.checkpoints.directory}: {len(aside)} unreadable one(s) were moved "
                f"to {aside[0].parent}; {RESTART_HINT}"
            )
        if restored is not None and restart:  # --restart only ever replaces a run that cannot continue
            raise CheckpointError(
                f"--restart: {self.checkpoints.directory} holds a usable checkpoint (step {restored[0]}); without "
                "--restart the run continues from it (to start over, choose another output.dir)"
            )
        if restored is None and restart:
            warn(f"--restart: {self.run_dir.path} starts over from step 0")
        return restored

    def _log_eval(self, progress: TrainProgress) -> float | None:
        if not self.eval_data:
            return None
        metrics = _evaluate(self.plan, self.steps, self.state, self.eval_data)
        loss, acc = metrics["loss"], metrics["accuracy"]
        self.run_dir.log(
            {
                "kind": "eval",
                "step": self.step,
                "loss": loss,
                self.unit: bits(loss),
                "accuracy": acc,
                "time": time.time(),
            }
            | ({} if self.unigram is None else {f"unigram_{self.unit}": self.unigram})
        )
        baseline = "" if self.unigram is None else f" (unigram {self.unigram:.3f})"
        progress.message(
            f"eval step {self.step}: loss {loss:.4f}, {bits(loss):.3f} {self.unit}{baseline}, accuracy {acc:.3f}"
        )
        return loss

    def run(self) -> TrainResult:
        spec, plan = self.spec, self.plan
        total, start = spec.trainer.steps, self.step
        progress = TrainProgress(
            total=total,
            start=start,
            unit=self.unit,
            log_every=spec.trainer.log_every,
            tokens_per_step=spec.trainer.batch_size * spec.data.seq_len,
            console=self.console,
        )
        if start:
            progress.message(f"resumed {self.run_dir.path} at step {start}")
        losses: list[float] = []
        step_losses: dict[int, float] = {}  # loss of the weights of each checkpoint this process saw (divergence)
        loss_bound = 2 * math.log(spec.vocab_size)  # a model twice as bad as a uniform guess: collapsed weights
        eval_loss = None
        stop = StopOnSignal().__enter__()  # SIGINT/SIGTERM: stop after this step (titans_train.interrupt)
        try:
            while self.step < total:
                batch = global_batch(next(self.batches), plan.batch_sharding, plan.batch_shape)
                memory = None  # diagnostics of the parameters this step starts from, on its batch
                every = self.diagnostics_every
                if self.diagnostics is not None and every is not None and (self.step + 1) % every == 0:
                    memory = to_floats(self.diagnostics(self.state, batch))
                    progress.reset_clock()  # not part of the step's throughput
                self.state, metrics = self.steps.train(self.state, batch)
                values = {k: float(v) for k, v in jax.device_get(metrics).items()}
                self.step += 1
                if self.step == start + 1 or (self.step - 1) % spec.checkpoint.every == 0:  # its weights: a checkpoint
                    step_losses[self.step] = values["loss"]
                problem = divergence(values, spec.trainer.max_weight)
                if problem:
                    self.checkpoints.wait()
                    kept = self.checkpoints.steps()
                    raise diverged_error(
                        self.step, values["loss"], problem, kept, step_losses, loss_bound, self.checkpoints.directory
                    )
                losses.append(values["loss"])
                tps = progress.update(self.step, values["loss"], first=self.step == start + 1)
                record = {
                    "kind": "train",
                    "step": self.step,
                    "loss": values["loss"],
                    self.unit: bits(values["loss"]),
                    "lr": values["lr"],
                    "grad_norm": values["grad_norm"],
                    "tokens_per_s": tps or None,  # null for a start's first step: its time includes compiling
                    "time": time.time(),
                }
                if memory:
                    record["memory"] = memory
                self.run_dir.log(record)
                every = spec.trainer.eval_every
                if (every is not None and self.step % every == 0) or self.step == total:
                    eval_loss = self._log_eval(progress)
                # after the evaluation: a complete checkpoint of a step implies all of its metrics are written
                if self.step % spec.checkpoint.every == 0 or self.step == total:
                    self.checkpoints.save(self.step, self.state, self.batches.get_state())
                progress.reset_clock()
                if self.step < total and stop.requested():
                    self._stop(stop)
            self.checkpoints.wait()
        finally:
            stop.__exit__()
            progress.close()
            self.checkpoints.close()
        return TrainResult(self.run_dir.path, start, self.step, losses, eval_loss, self._sample(progress))

    def _stop(self, stop: StopOnSignal) -> None:
        """Save the state of this step (unless just saved), then raise Interrupted saying where."""
        if self.step % self.spec.checkpoint.every:
            self.checkpoints.save(self.step, self.state, self.batches.get_state())
        self.checkpoints.wait()
        raise Interrupted(
            f"{stop.name}: stopped after step {self.step}; checkpoint saved in "
            f"{self.checkpoints.directory / str(self.step)}; run the same command to continue"
        )

    def _sample(self, progress: TrainProgress) -> str | None:
        s = self.spec.sample
        if s.max_new_tokens == 0 or not self.splits.byte_level or not s.prompt:
            return None
        model = nnx.merge(self.plan.graphdef, self.state["params"], self.state["rest"])
        prompt = gen.encode_prompt(s.prompt, None, byte_level=True, vocab_size=self.spec.vocab_size)
        ids = gen.generate_ids(
            model,
            prompt,
            max_new_tokens=s.max_new_tokens,
            temperature=s.temperature,
            top_k=None if s.top_k is None else min(s.top_k, self.spec.vocab_size),
            top_p=s.top_p,
            seed=self.spec.trainer.seed,
        )
        text = s.prompt + gen.decode(ids, byte_level=True)
        progress.message(f"sample (step {self.step}):\n{text}")
        return text


def fork_source(path: str) -> Path:
    """The checkpoint directory ``--fork-from PATH`` names (RUN_DIR/checkpoints/STEP); CheckpointError if not one."""
    checkpoint = Path(path).absolute()
    if not (checkpoint.name.isdigit() and checkpoint.parent.name == "checkpoints" and checkpoint.is_dir()):
        raise CheckpointError(f"--fork-from {path}: not a checkpoint directory (expected RUN_DIR/checkpoints/STEP)")
    return checkpoint


def train(
    spec: TrainSpec,
    locator: SpecLocator,
    *,
    restart: bool = False,
    fork_from: str | None = None,
    console: Console | None = None,
) -> TrainResult:
    """Train ``spec`` (validated; ``locator`` places later problems in the spec file). ``restart``: start the run
    directory over from step 0 if none of its checkpoints is usable (otherwise refused). ``fork_from``: start this
    new run from a checkpoint of another run (RUN_DIR/checkpoints/STEP), e.g. with another optimizer.lr."""
    fork = fork_source(fork_from) if fork_from is not None else None
    plan = make_plan(spec, locator)
    with hold_run_dir(Path(spec.output.dir)):  # one process per run directory (titans_train.lock)
        resume = inspect_run_dir(Path(spec.output.dir), spec)
        if fork is not None and resume:
            raise RunDirError(f"--fork-from: output.dir {spec.output.dir} already holds a run; choose a new output.dir")
        if jax.process_count() > 1:  # every process decides before process 0 writes anything
            multihost_utils.sync_global_devices("titans-train: run directory inspected")
        return Trainer(plan, resume=resume, restart=restart, fork=fork, console=console).run()
