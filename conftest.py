"""Suite-wide setup for tests/, packages/ and plugins/ (loaded before any test module imports jax).

- 8 simulated CPU devices (``--xla_force_host_platform_device_count=8``), so that mesh and sharding code runs.
- Tests compile many tiny programs and run each for microseconds, so compile time is most of the suite's time:
  ``--xla_backend_optimization_level=0`` skips LLVM's optimisations (measured: 340 → 205 s on three test files;
  the code runs slower, which tiny test shapes do not notice), and ``--xla_cpu_use_fusion_emitters=false`` keeps
  XLA's older CPU code generator for fused ops, which compiles these programs in about half the time (measured:
  a two-layer MAG forward pass 2.0 → 1.1 s; the MAG tests of test_variants.py 109 → 61 s of CPU). Results can
  differ in the last bits, since the compiler rounds some fused ops differently (e.g. 4e-16 in float64); every
  tolerance is unchanged. Both are XLA flags of the jaxlib pinned in uv.lock: XLA refuses to start on a flag it
  does not know, so a jaxlib upgrade that drops one fails every test at import, and the flag goes from here.
- One persistent JAX compilation cache per run: many tests compile the same program (the toy model's training
  step in every titans-train test, the same tiny variant in several files, each CLI subprocess). The directory is
  made here, in the process that starts the run and before pytest-xdist starts its workers; workers and CLI
  subprocesses inherit it through the environment, and it is removed when the run ends. A cache directory
  already set in the environment is used as it is and kept.

- Bytecode is written and reused: with ``PYTHONDONTWRITEBYTECODE`` set (some CI images set it), every worker and
  every CLI subprocess compiled jax, flax and the packages from source at import (measured: 9–10 s per process
  against 3.5 s with cached bytecode). It is unset here, before the workers and subprocesses start.

- In-process checkpoints are written one replica per array: on the 8 simulated devices every replicated array is
  one replica per device, and orbax's default on CPU (replica-parallel saving) slices each of them 8 ways, one
  small eager program per slice (measured: a 6-step toy run's two checkpoints cost 5.9–6.8 s of CPU, 3.7–4.6 s
  without the slicing). A single process gains nothing from it; real devices rarely show it (orbax turns it off
  on GPU, and a one-device CPU run has no replicas). CLI subprocesses keep orbax's default, so the suite runs
  both ways.

Subprocesses that set their own ``XLA_FLAGS`` keep these flags with ``tests/xla_env.py``.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile

os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    _flags += " --xla_force_host_platform_device_count=8"
if "xla_backend_optimization_level" not in _flags:
    _flags += " --xla_backend_optimization_level=0"
if "xla_cpu_use_fusion_emitters" not in _flags:
    _flags += " --xla_cpu_use_fusion_emitters=false"
os.environ["XLA_FLAGS"] = _flags.strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

_CREATED: str | None = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _CREATED = tempfile.mkdtemp(prefix="titans-tests-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CREATED
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # cache every program, even fast ones
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def pytest_configure(config) -> None:
    """Single-replica checkpoint writes in the processes that run tests (see the module docstring); the xdist
    controller runs no test and skips the orbax import."""
    if os.environ.get("PYTEST_XDIST_WORKER") or not getattr(config.option, "numprocesses", None):
        import jax
        import orbax.checkpoint as ocp

        default = ocp.type_handlers.get_type_handler(jax.Array)  # keeps its array-metadata store (orbax's default)
        store = getattr(default, "_array_metadata_store", None)
        handler = ocp.type_handlers.ArrayHandler(use_replica_parallel=False, array_metadata_store=store)
        absl = logging.getLogger("absl")  # orbax logs a warning for every override
        level = absl.level
        absl.setLevel(logging.ERROR)
        try:
            ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)
        finally:
            absl.setLevel(level)


def pytest_unconfigure(config) -> None:
    """Remove the cache this process made (in the xdist controller: after every worker has finished)."""
    if _CREATED and not os.environ.get("PYTEST_XDIST_WORKER"):
        shutil.rmtree(_CREATED, ignore_errors=True)
