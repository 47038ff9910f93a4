"""titans-core: protocols, the plugin registry and the spec schema shared by every Titans package."""

from titans_core.api import PLUGIN_API
from titans_core.config import ComponentConfig, SpecModel
from titans_core.contracts import ContractError, check_contract
from titans_core.errors import (
    ComponentBuildError,
    DuplicateComponentError,
    InvalidRegistrationError,
    PluginLoadError,
    PluginLoadWarning,
    SpecError,
    SpecProblem,
    TitansUserError,
    UnknownComponentError,
)
from titans_core.hookspecs import hookimpl, hookspec
from titans_core.protocols import (
    KINDS,
    AttentionBlock,
    Gates,
    MemoryModel,
    Objective,
    RuleState,
    UpdateRule,
    Variant,
    init_rule_state,
)
from titans_core.registry import Component, LoadError, Registry, get_registry, reset_registry
from titans_core.spec import (
    ComponentRef,
    apply_overrides,
    component_field,
    dump_spec,
    load_spec_file,
    make_config,
    parse_spec,
    spec_json_schema,
)

__all__ = [
    "hookimpl",
    "hookspec",
    "KINDS",
    "AttentionBlock",
    "Gates",
    "MemoryModel",
    "Objective",
    "RuleState",
    "UpdateRule",
    "Variant",
    "init_rule_state",
    "PLUGIN_API",
    # contracts
    "ContractError",
    "check_contract",
    # registry
    "Component",
    "LoadError",
    "Registry",
    "get_registry",
    "reset_registry",
    # configs and specs
    "ComponentConfig",
    "ComponentRef",
    "SpecModel",
    "apply_overrides",
    "component_field",
    "dump_spec",
    "load_spec_file",
    "make_config",
    "parse_spec",
    "spec_json_schema",
    # errors
    "ComponentBuildError",
    "DuplicateComponentError",
    "InvalidRegistrationError",
    "PluginLoadError",
    "PluginLoadWarning",
    "SpecError",
    "SpecProblem",
    "TitansUserError",
    "UnknownComponentError",
]
__version__ = "0.1.0"
