"""``XLA_FLAGS`` for the subprocesses the tests start (the suite's flags are set in the root ``conftest.py``)."""

from __future__ import annotations

import os


def subprocess_xla_flags(devices: int) -> str:
    """The suite's ``XLA_FLAGS`` (compile flags) with ``devices`` simulated CPU devices instead of the suite's 8."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    kept = [f for f in flags if not f.startswith("--xla_force_host_platform_device_count")]
    return " ".join([f"--xla_force_host_platform_device_count={devices}", *kept])
