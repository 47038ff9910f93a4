"""JAX's persistent compilation cache, on by default for the CLIs (``titans-train``, ``titans-eval``).

A second run of the same spec (or an evaluation at the training shapes) loads its compiled programs from disk
instead of compiling them again. Where the cache lives, first match wins:

- ``TITANS_COMPILE_CACHE=0`` (or ``off``/``false``/``no``): no persistent cache (opt out);
- ``JAX_COMPILATION_CACHE_DIR`` already set: JAX's own setting, used as it is;
- ``$XDG_CACHE_HOME/titans/jax``, else ``~/.cache/titans/jax``.

A directory that cannot be created leaves the cache off (the run itself is unaffected). Entries are keyed by
JAX on the program, the jaxlib version, the devices and the XLA flags, so a stale entry is never used; the
directory may be deleted at any time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

OPT_OUT = "TITANS_COMPILE_CACHE"
_OFF = {"0", "off", "false", "no"}


def cache_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """The directory the CLIs cache compiled programs in, or None (opted out, or JAX's own variable is set)."""
    env = os.environ if env is None else env
    if env.get(OPT_OUT, "").strip().lower() in _OFF or env.get("JAX_COMPILATION_CACHE_DIR"):
        return None
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "titans" / "jax"


def enable_persistent_cache(env: Mapping[str, str] | None = None) -> Path | None:
    """Point JAX's persistent compilation cache at :func:`cache_dir` (call before the first compilation).

    Returns the directory in use, or None when nothing was changed.
    """
    path = cache_dir(env)
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", str(path))
    # programs that compile in under a second are cheaper to compile again than to read back
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return path
