"""Component references: the field type of a spec's component sections (:func:`ComponentRef`) — validated against
the registry at validation time, with a JSON schema that is a ``oneOf`` over the registered components of the kind
(see :mod:`titans_core.spec`). Kept apart from the spec loader so the error formatting (:mod:`titans_core.spec_errors`),
which must recognise these fields, imports it without a cycle.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema

from titans_core.config import ComponentConfig
from titans_core.registry import get_registry
from titans_core.yaml_lines import show

__all__ = ["ComponentRef", "ComponentRefMarker"]


def _fail(kind: str, message: str, value: Any, loc: tuple[Any, ...] = ()) -> ValidationError:
    return ValidationError.from_exception_data(
        "ComponentRef", [InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=value)]
    )


class _Generating(threading.local):
    """(JSON-schema generator, component definition) pairs being generated on this thread."""

    def __init__(self) -> None:
        self.active: set[tuple[int, Any]] = set()


_GENERATING = _Generating()


class ComponentRefMarker:
    """``Annotated`` metadata making a field a component section of ``kind`` (see :func:`ComponentRef`)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return f"ComponentRef({self.kind!r})"

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(self.validate)

    def validate(self, value: Any) -> ComponentConfig:
        """``{name: ..., **options}`` (or a config object) → the validated, tagged config it selects."""
        registry = get_registry()
        kind = self.kind
        if isinstance(value, ComponentConfig):
            return self._from_config(value)
        if not isinstance(value, Mapping):
            raise PydanticCustomError(
                "component_type", f"expected a mapping {{name: <{kind}>, ...options}}, got {show(value)}"
            )
        if "name" not in value:
            known = ", ".join(registry.names(kind)) or "none registered"
            raise _fail("component_name_missing", f"required: the {kind} to use (known: {known})", value, ("name",))
        name = value["name"]
        if not isinstance(name, str) or name not in registry.names(kind):
            raise _fail("unknown_component", registry.unknown_message(kind, name), name, ("name",))
        return registry.config_class(kind, name).model_validate(dict(value))

    def _from_config(self, value: ComponentConfig) -> ComponentConfig:
        cls = type(value)
        if cls.component_kind == self.kind:
            return value
        if cls.component_kind is not None:
            raise PydanticCustomError(
                "component_kind_mismatch",
                f"expected a {self.kind} config, got the config of the {cls.component_kind} {value.name!r}",  # type: ignore[attr-defined]
            )
        users = [c.name for c in get_registry().components(self.kind) if c.config_cls is cls]
        if len(users) != 1:
            why = f"it configures {', '.join(users)}" if users else f"no {self.kind} uses it"
            raise PydanticCustomError(
                "component_ambiguous",
                f"cannot tell which {self.kind} a {cls.__name__} selects ({why}); "
                "give {name: ..., ...options} or use titans_core.spec.make_config",
            )
        return get_registry().config_class(self.kind, users[0]).model_validate({**dict(value), "name": users[0]})

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> dict[str, Any]:
        generator = getattr(handler, "generate_json_schema", None)  # defines shared $defs when available
        options: list[dict[str, Any]] = []
        mapping: dict[str, str] = {}
        for component in get_registry().components(self.kind):
            core = component.tagged_config_cls.__pydantic_core_schema__
            key = (id(generator), core.get("ref"))
            if generator is None:
                option = handler(core)
            elif key in _GENERATING.active:  # a component nested in itself: refer to the definition under way
                option = generator.get_cache_defs_ref_schema(core["ref"])[1]
            else:
                _GENERATING.active.add(key)
                try:
                    option = generator.generate_inner(core)
                finally:
                    _GENERATING.active.discard(key)
            try:
                target = handler.resolve_ref_schema(option)
                properties = target.get("properties", {})
                if "name" in properties:  # list `name` first and require it
                    target["properties"] = {"name": properties.pop("name"), **properties}
                    target["required"] = ["name", *[r for r in target.get("required", []) if r != "name"]]
            except LookupError:  # a definition still being generated (recursive component)
                pass
            options.append(option)
            if "$ref" in option:
                mapping[component.name] = option["$ref"]
        if not options:
            return {"not": {}, "description": f"no {self.kind} is registered"}
        discriminator: dict[str, Any] = {"propertyName": "name"}
        if len(mapping) == len(options):
            discriminator["mapping"] = mapping
        return {"oneOf": options, "discriminator": discriminator}


def ComponentRef(kind: str) -> Any:  # CamelCase: it reads as a type in annotations
    """Field type of a component section of ``kind``: ``memory: ComponentRef("memory_model")``.

    Equivalent to ``Annotated[ComponentConfig, ComponentRefMarker(kind)]`` (the spelling type checkers
    prefer).
    """
    return Annotated[ComponentConfig, ComponentRefMarker(kind)]
