"""The plugin API version: which protocols, hooks and registry calls a plugin may rely on.

titans-core provides :data:`PLUGIN_API` = ``"MAJOR.MINOR"``. A plugin declares the version it was written
against in the module its entry point names::

    TITANS_PLUGIN_API = "1.1"

and the registry loads it only when it fits: the same MAJOR (a new major removes or changes something plugins
use) and a MINOR no greater than this titans-core's (a new minor only adds, e.g. an optional hook). A plugin
that does not fit is not imported further — its hook does not run — and is listed by ``titans-plugins list``
with the reason, like any plugin that failed to load. A plugin without the declaration loads (it predates it).

History: 1.0 — the protocols of ``titans_core.protocols``, ``register(kind, name, config_cls, factory, *,
description="")``, the optional rule declarations ``gates``, ``alpha_per_channel``, ``check_model`` and
``init_extra``, and the model's ``read_and_linearize``. 1.1 — the model's optional ``grad_norms`` (the surprise
clamp's per-token norms).
"""

from __future__ import annotations

import re
from typing import Any

PLUGIN_API = "1.1"
ATTRIBUTE = "TITANS_PLUGIN_API"  # the module-level name a plugin declares its version under
_VERSION = re.compile(r"^(\d+)\.(\d+)$")


def parse_api(value: Any) -> tuple[int, int] | None:
    """``"1.0"`` → (1, 0); None for anything that is not "MAJOR.MINOR"."""
    match = _VERSION.match(value) if isinstance(value, str) else None
    return (int(match[1]), int(match[2])) if match else None


def api_problem(plugin: Any) -> str | None:
    """Why ``plugin`` (a loaded plugin module or object) cannot load with this titans-core; None when it can."""
    declared = getattr(plugin, ATTRIBUTE, None)
    if declared is None:
        return None
    wanted = parse_api(declared)
    if wanted is None:
        return f'{ATTRIBUTE} must be a string "MAJOR.MINOR" (e.g. "{PLUGIN_API}"), got {declared!r}'
    have = parse_api(PLUGIN_API)
    assert have is not None
    if wanted[0] == have[0] and wanted[1] <= have[1]:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        core = f"titans-core {version('titans-core')}"
    except PackageNotFoundError:  # pragma: no cover - titans-core always runs installed
        core = "titans-core"
    if wanted > have:
        fix = "upgrade titans-core to a release that provides it, or install an older release of the plugin"
    else:
        fix = f"install a release of the plugin written for plugin API {have[0]}.x"
    return f"needs Titans plugin API {declared}, but {core} provides {PLUGIN_API}: {fix}"
