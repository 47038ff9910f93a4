"""Multi-process start-up: ``jax.distributed.initialize`` from the spec's ``distributed`` section or the
environment.

Each field not set in the spec falls back to an environment variable: ``TITANS_COORDINATOR_ADDRESS``
(host:port of
process 0), ``TITANS_NUM_PROCESSES``, ``TITANS_PROCESS_ID``. With no coordinator and ``auto: false`` the run
is a
single process. ``auto: true`` calls ``jax.distributed.initialize()`` without arguments so JAX detects the
cluster
(SLURM, TPU pods, …). Must run before anything touches a JAX device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import jax

from titans_train.spec import DistributedSpec

ENV_COORDINATOR = "TITANS_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "TITANS_NUM_PROCESSES"
ENV_PROCESS_ID = "TITANS_PROCESS_ID"

Problem = tuple[str, str]


@dataclass(frozen=True)
class DistributedSetup:
    """What to pass to ``jax.distributed.initialize`` (``None`` fields: single process)."""

    coordinator_address: str | None
    num_processes: int | None
    process_id: int | None
    auto: bool
    timeout_s: int

    @property
    def enabled(self) -> bool:
        return self.auto or self.coordinator_address is not None


def _env_int(name: str, problems: list[Problem], path: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        problems.append((path, f"environment variable {name}={raw!r} is not an integer"))
        return None


def resolve(spec: DistributedSpec) -> tuple[DistributedSetup, list[Problem]]:
    """The set-up from the spec, completed from the environment; problems if it is inconsistent."""
    problems: list[Problem] = []
    address = spec.coordinator_address or os.environ.get(ENV_COORDINATOR) or None
    count = (
        spec.num_processes
        if spec.num_processes is not None
        else _env_int(ENV_NUM_PROCESSES, problems, "distributed.num_processes")
    )
    pid = (
        spec.process_id if spec.process_id is not None else _env_int(ENV_PROCESS_ID, problems, "distributed.process_id")
    )
    setup = DistributedSetup(address, count, pid, spec.auto, spec.timeout_s)
    if address is not None and not spec.auto:
        if count is None:
            problems.append(("distributed.num_processes", f"required with a coordinator (or set {ENV_NUM_PROCESSES})"))
        if pid is None:
            problems.append(("distributed.process_id", f"required with a coordinator (or set {ENV_PROCESS_ID})"))
        if count is not None and pid is not None and not 0 <= pid < count:
            problems.append(("distributed.process_id", f"must be in 0 … {count - 1}, got {pid}"))
    return setup, problems


_initialized = False


def initialize(setup: DistributedSetup) -> None:
    """Call ``jax.distributed.initialize`` once per process (no-op for a single process)."""
    global _initialized
    if not setup.enabled or _initialized:
        return
    if setup.auto:
        jax.distributed.initialize(initialization_timeout=setup.timeout_s)
    else:
        jax.distributed.initialize(
            coordinator_address=setup.coordinator_address,
            num_processes=setup.num_processes,
            process_id=setup.process_id,
            initialization_timeout=setup.timeout_s,
        )
    _initialized = True
