"""The plugin hooks of Titans — read this file to write a plugin.

A plugin is any installed distribution with an entry point in the ``titans`` group::

    [project.entry-points.titans]
    my_plugin = "my_package.plugin"      # a module holding @hookimpl functions

and, in that module::

    from titans_core import hookimpl

    @hookimpl
    def register_components(register):
        register("memory_model", "my_mlp", MyMLPConfig, MyMLP)

Built-in components (titans-memory, titans-attention, titans-train) register through exactly this hook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT_NAME = "titans"
ENTRY_POINT_GROUP = "titans"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_components(register: Callable[[str, str, type, Callable[..., Any]], None]) -> None:
    """Register components by calling ``register(kind, name, config_cls, factory)``.

    - ``kind``: what the component is; the core kinds are listed in ``titans_core.protocols.KINDS``
      (``memory_model``, ``update_rule``, ``objective``, ``attention``, ``variant``,
      ``data_source``), and a plugin may
      introduce new kinds.
    - ``name``: the name a spec uses to select it (``{name: mlp, depth: 2}``); unique per kind across all
      plugins.
    - ``config_cls``: a ``titans_core.ComponentConfig`` subclass (pydantic) holding the component's
      options; it is the component's schema in spec files.
    - ``factory``: ``factory(config, **kwargs)`` builds the component; what kwargs a kind passes is documented
      by the kind's protocol in ``titans_core.protocols``. What it builds is checked against that protocol
      (``titans_core.contracts``) when the registry builds it.
    """
