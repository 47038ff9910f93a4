"""titans-swiglu-memory: an example third-party Titans plugin registering the memory model ``swiglu``.

The distribution declares, in its pyproject.toml::

    [project.entry-points.titans]
    swiglu_memory = "titans_swiglu_memory"

so Titans imports this module and calls its ``register_components`` hook.
"""

from titans_core import hookimpl

from titans_swiglu_memory.memory import SwiGLUMemory, SwiGLUMemoryConfig

__all__ = ["TITANS_PLUGIN_API", "SwiGLUMemory", "SwiGLUMemoryConfig", "register_components"]


TITANS_PLUGIN_API = "1.0"  # the titans-core plugin API this plugin is written against (titans_core.api)


@hookimpl
def register_components(register):
    """Register the memory model ``swiglu`` (options SwiGLUMemoryConfig, factory SwiGLUMemory)."""
    register("memory_model", "swiglu", SwiGLUMemoryConfig, SwiGLUMemory)
