"""Resource bounds checked from the spec before anything is allocated or written.

- **Memory of a training step** (:func:`step_memory`): parameters + optimizer state + gradients + activations
  (the logits ``micro-batch × seq_len × vocab_size`` and their gradient, a block input and one intermediate of
  width ``d_model`` per layer and token) + the global batch of token ids. It counts only what a step surely holds,
  so it is a lower bound: a spec above the memory of the machine (:func:`memory_limit`) cannot train and is
  refused with one line naming the field that drives it (:func:`check_step_memory`); ``--dry-run`` prints it.
- **Memory of an evaluation forward pass** (:func:`check_context_memory`): one sequence of C tokens holds its
  logits ``C × vocab_size`` (float32); a ``titans-eval --contexts`` above the limit is refused the same way.
- **Counters**: the step counter of the training state is a 32-bit integer, so ``trainer.steps``,
  ``schedule.warmup_steps`` and ``schedule.decay_steps`` are < 2³¹ (:func:`counter_problems`).
- **Files**: a spec or data path must be a regular file (:func:`check_regular_file`): ``/dev/zero`` or a FIFO
  would be read for ever.

The memory limit is the physical memory of this machine (``os.sysconf``), or the sum of the memory of the
accelerators of the mesh; the environment variable ``TITANS_MEMORY_LIMIT`` (bytes, or with a K/M/G/T suffix)
overrides it.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from titans_core import TitansUserError

from titans_train.errors import DataError
from titans_train.spec import TrainSpec

#: Environment variable overriding the memory limit (e.g. ``64G``).
MEMORY_ENV = "TITANS_MEMORY_LIMIT"
#: Largest step count: the training state's step counter (and the schedule's) is int32.
MAX_STEPS = 2**31 - 1
FLOAT32 = 4  # bytes of a float32 (logits, activations, gradients) and of an int32 token id
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
#: Typical values of the fields that scale a step's memory: the one furthest above its typical value is blamed.
_TYPICAL = {
    "trainer.batch_size": 16,
    "data.seq_len": 128,
    "model.vocab_size": 256,
    "model.d_model": 256,
    "model.num_layers": 4,
}


def human_bytes(n: float) -> str:
    """``1536`` → ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class MemoryLimit:
    """How many bytes may be used, and where that number comes from."""

    bytes: int
    source: str  # "physical memory", "memory of 8 gpu devices", "TITANS_MEMORY_LIMIT=64G"

    def describe(self) -> str:
        return f"{human_bytes(self.bytes)} ({self.source})"


def memory_limit(devices: Sequence[Any] = ()) -> MemoryLimit:
    """The memory a run may use: ``TITANS_MEMORY_LIMIT``, else the accelerators' memory, else physical memory."""
    override = os.environ.get(MEMORY_ENV, "").strip()
    if override:
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?", override, re.IGNORECASE)
        if match is None:
            raise TitansUserError(f"{MEMORY_ENV}={override!r}: expected a number of bytes, e.g. 64G or 17179869184")
        value = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
        return MemoryLimit(value, f"{MEMORY_ENV}={override}")
    accelerators = [d for d in devices if d.platform != "cpu"]
    local = [d for d in accelerators if d.process_index == jax.process_index()]
    if local:
        try:  # every device of the mesh is taken to have the memory of this process's smallest
            each = min(int((d.memory_stats() or {})["bytes_limit"]) for d in local)
            return MemoryLimit(each * len(accelerators), f"memory of {len(accelerators)} {local[0].platform} device(s)")
        except (KeyError, TypeError, ValueError, RuntimeError, NotImplementedError):
            pass
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return MemoryLimit(physical, "physical memory")


def _nbytes(tree: Any) -> int:
    """Bytes of the arrays (or ShapeDtypeStructs) of ``tree``."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape, dtype = getattr(leaf, "shape", None), getattr(leaf, "dtype", None)
        if shape is not None and dtype is not None:
            total += math.prod(int(n) for n in shape) * np.dtype(dtype).itemsize
    return total


@dataclass(frozen=True)
class StepMemory:
    """A lower bound of the bytes one training step holds (see the module docstring)."""

    parameters: int
    optimizer: int
    gradients: int
    logits: int  # logits and their gradient: 2 × micro-batch × seq_len × vocab_size float32
    activations: int  # 2 × micro-batch × seq_len × d_model float32 per layer
    batch: int  # the global batch of int32 token ids

    @property
    def total(self) -> int:
        return self.parameters + self.optimizer + self.gradients + self.logits + self.activations + self.batch

    def describe(self) -> str:
        parts = [
            ("parameters", self.parameters),
            ("optimizer state", self.optimizer),
            ("gradients", self.gradients),
            ("logits", self.logits),
            ("activations", self.activations),
            ("batch", self.batch),
        ]
        return ", ".join(f"{name} {human_bytes(n)}" for name, n in parts)

    def blamed_field(self, spec: TrainSpec) -> str:
        """The spec field that drives the largest term (the one furthest above its typical value)."""
        model = ("model.vocab_size", "model.d_model", "model.num_layers")
        terms = [
            (self.parameters + self.optimizer + self.gradients, model),
            (self.logits, ("trainer.batch_size", "data.seq_len", "model.vocab_size")),
            (self.activations, ("trainer.batch_size", "data.seq_len", "model.d_model", "model.num_layers")),
            (self.batch, ("trainer.batch_size", "data.seq_len")),
        ]
        fields = max(terms, key=lambda term: term[0])[1]
        values = _field_values(spec)
        present = [f for f in fields if f in values]
        if not present:
            return "model"
        return max(present, key=lambda f: values[f] / _TYPICAL[f])


def _field_values(spec: TrainSpec) -> dict[str, int]:
    values = {
        "trainer.batch_size": spec.trainer.batch_size,
        "data.seq_len": spec.data.seq_len,
        "model.vocab_size": spec.vocab_size,
    }
    for name in ("d_model", "num_layers"):
        value = getattr(spec.model, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            values[f"model.{name}"] = value
    return values


def step_memory(spec: TrainSpec, params: Any, rest: Any, opt_state: Any) -> StepMemory:
    """The :class:`StepMemory` of ``spec``; ``params``, ``rest``, ``opt_state``: trees of ShapeDtypeStructs."""
    t = spec.trainer
    micro, seq = t.batch_size // t.grad_accum, spec.data.seq_len
    values = _field_values(spec)
    width, layers = values.get("model.d_model", 0), values.get("model.num_layers", 1)
    param_bytes = _nbytes(params)
    return StepMemory(
        parameters=param_bytes + _nbytes(rest),
        optimizer=_nbytes(opt_state),
        gradients=param_bytes,
        logits=2 * micro * seq * spec.vocab_size * FLOAT32,
        activations=2 * micro * seq * width * layers * FLOAT32,
        batch=t.batch_size * (seq + 1) * FLOAT32,  # windows of seq + 1 int32 tokens (labelled examples: 2 × seq)
    )


def check_step_memory(memory: StepMemory, spec: TrainSpec, limit: MemoryLimit) -> list[tuple[str, str]]:
    """A problem ``(field, message)`` when a step needs more than ``limit``; else none."""
    if memory.total <= limit.bytes:
        return []
    t = spec.trainer
    shape = f"micro-batch {t.batch_size // t.grad_accum:,} × seq_len {spec.data.seq_len:,}"
    message = (
        f"a training step needs at least {human_bytes(memory.total)} ({shape}, {memory.describe()}), "
        f"more than the {limit.describe()}; set {MEMORY_ENV} to change the limit"
    )
    return [(memory.blamed_field(spec), message)]


def check_context_memory(
    contexts: Sequence[int], spec: TrainSpec, param_bytes: int, flag: str, limit: MemoryLimit | None = None
) -> None:
    """TitansUserError when one sequence of the longest context cannot be evaluated within the memory limit."""
    longest = max(contexts)
    width = _field_values(spec).get("model.d_model", 0)
    need = param_bytes + longest * (spec.vocab_size + width + 1) * FLOAT32  # logits, one activation, the tokens
    limit = limit or memory_limit(jax.devices())
    if need > limit.bytes:
        raise TitansUserError(
            f"{flag} {longest:,}: one sequence of {longest:,} tokens needs at least {human_bytes(need)} "
            f"(its logits {longest:,} × vocab_size {spec.vocab_size:,} float32 and the parameters), more than "
            f"the {limit.describe()}; set {MEMORY_ENV} to change the limit"
        )


def counter_problems(spec: TrainSpec) -> list[tuple[str, str]]:
    """Step counts the int32 step counter cannot reach."""
    fields = {
        "trainer.steps": spec.trainer.steps,
        "schedule.warmup_steps": spec.schedule.warmup_steps,
        "schedule.decay_steps": spec.schedule.decay_steps,
    }
    return [
        (name, f"must be ≤ {MAX_STEPS:,} (the step counter is a 32-bit integer), got {value:,}")
        for name, value in fields.items()
        if value is not None and value > MAX_STEPS
    ]


def check_regular_file(path: Path, what: str = "data") -> None:
    """DataError when ``path`` exists but is not a regular file or a directory (a device such as /dev/zero,
    a FIFO, a socket): reading it would never end or never return."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # a missing or unreadable path is reported where it is read
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise DataError(f"{what}: {path}: not a regular file (a device, FIFO or socket)")
