"""Built-in components of titans-memory, registered through the ``titans`` entry point like any plugin."""

from collections.abc import Callable

from titans_core import hookimpl

from titans_memory.memory_models import MLPMemory, MLPMemoryConfig
from titans_memory.objectives import OBJECTIVES
from titans_memory.rules.base import UpdateRuleConfig
from titans_memory.rules.fused import FusedConfig, FusedRule
from titans_memory.rules.momentum_scan import MomentumScanRule
from titans_memory.rules.sequential import SequentialRule

TITANS_PLUGIN_API = "1.0"  # the titans-core plugin API this plugin is written against (titans_core.api)


@hookimpl
def register_components(register: Callable[..., None]) -> None:
    register("memory_model", "mlp", MLPMemoryConfig, MLPMemory)
    register("update_rule", "sequential", UpdateRuleConfig, SequentialRule)
    register("update_rule", "momentum_scan", UpdateRuleConfig, MomentumScanRule)
    register("update_rule", "fused", FusedConfig, FusedRule)
    for name, (config_cls, factory) in OBJECTIVES.items():
        register("objective", name, config_cls, factory)
